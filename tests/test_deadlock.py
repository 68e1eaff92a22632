"""Deadlocks in virtual time raise ``DeadlockError`` naming the waits; anything that can still
wake a task (a timer, a deadline, a thread, real I/O, ``wait_all_tasks_blocked``) is none."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import orjson
import outcome
import pytest
import trio
import trio.testing

from pagehint.actors.scenario import MODEL
from pagehint.runtime import (
    Actor,
    ActorSystem,
    AskTimeout,
    DeadlockError,
    handles,
    run_simulation,
)
from pagehint.runtime.harness.cli import main as cli

from conftest import CONFIGS

_T = TypeVar("_T")

WALL_LIMIT_S = 20


def within_wall_limit(run: Callable[[], _T]) -> _T:
    """``run()`` in a thread of its own, failing the test if it is still running after
    ``WALL_LIMIT_S`` seconds of wall time: an undetected deadlock hangs at 0% CPU, and a trio
    timeout would never fire in virtual time. The hung run stays behind in its daemon thread
    instead of hanging the suite (trio runs of different threads are independent)."""
    result: list[outcome.Outcome[_T]] = []
    thread = threading.Thread(target=lambda: result.append(outcome.capture(run)), daemon=True)
    thread.start()
    thread.join(WALL_LIMIT_S)
    if not result:
        pytest.fail(f"still running after {WALL_LIMIT_S} s of wall time: it hangs")
    return result[0].unwrap()


@attrs.frozen
class Ping:
    pass


@attrs.frozen
class Pong:
    pass


class Pinger(Actor):
    @handles(Ping)
    async def ping(self, message: Ping) -> Any:
        return await self.system.lookup("ponger").ask(Pong())


class Ponger(Actor):
    @handles(Pong)
    async def pong(self, message: Pong) -> Any:
        return await self.system.lookup("pinger").ask(Ping())


class Forgetful(Actor):
    """Takes the reply to answer later, and never does."""

    @handles(Ping)
    def ping(self, message: Ping) -> None:
        self.defer_reply()


class Stuck(Actor):
    default_mailbox_size = 1

    @handles(Ping)
    async def ping(self, message: Ping) -> None:
        await trio.sleep_forever()


def deadlock_of(main: Callable[[ActorSystem], Awaitable[object]]) -> DeadlockError:
    with pytest.raises(DeadlockError) as caught:
        within_wall_limit(lambda: run_simulation(main))
    return caught.value


def test_actors_asking_each_other_raise_instead_of_hanging() -> None:
    async def main(system: ActorSystem) -> object:
        pinger = system.spawn(Pinger("pinger"))
        system.spawn(Ponger("ponger"))
        await system.sleep_ns(1_000)
        return await pinger.ask(Ping())

    error = deadlock_of(main)
    assert error.t_ns == 1_000
    assert error.waits == [
        "actor 'pinger', handling Ping(), waits for 'ponger' to answer Pong() (asked at t=1000 ns)",
        "actor 'ponger', handling Pong(), waits for 'pinger' to answer Ping() (asked at t=1000 ns)",
        "the main task waits for 'pinger' to answer Ping() (asked at t=1000 ns)",
    ]
    assert str(error).startswith("deadlock at t=1000 ns: every task waits")


def test_a_task_waiting_on_a_channel_nobody_sends_to_is_named_with_its_line() -> None:
    async def main(system: ActorSystem) -> object:
        system.spawn(Forgetful("idler"))
        _, receive = trio.open_memory_channel[int](0)
        return await receive.receive()

    waiting, idle = deadlock_of(main).waits
    assert waiting.startswith("the main task waits at test_deadlock.py:")
    assert waiting.endswith("<locals>.main: return await receive.receive()")
    assert idle == "idle with an empty mailbox: actor 'idler'"


def test_a_reply_deferred_and_never_sent_and_a_full_mailbox_are_named() -> None:
    async def main(system: ActorSystem) -> None:
        stuck = system.spawn(Stuck("stuck"))
        forgetful = system.spawn(Forgetful("forgetful"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forgetful.ask, Ping(), name="asker")
            for _ in range(3):  # one handled, one queued, one waiting for room
                await stuck.tell(Ping())

    waits = deadlock_of(main).waits
    assert waits[0].startswith("actor 'stuck', handling Ping(), waits at test_deadlock.py:")
    assert waits[1:] == [
        "task 'asker' waits for 'forgetful' to answer Ping() (asked at t=0 ns; 'forgetful' "
        "deferred the reply and has not sent it)",
        "the main task waits for room in the full mailbox of 'stuck' to tell it Ping()",
        "idle with an empty mailbox: actor 'forgetful'",
    ]


async def _wait_for_a_thread(system: ActorSystem) -> object:
    return await trio.to_thread.run_sync(time.sleep, 0.05)


async def _wait_for_real_io(system: ActorSystem) -> object:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        threading.Timer(0.05, theirs.send, [b"x"]).start()
        await trio.lowlevel.wait_readable(ours)
        return ours.recv(1)


async def _wait_for_all_tasks_blocked(system: ActorSystem) -> object:
    event = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(event.wait)
        await trio.testing.wait_all_tasks_blocked(0.01)
        event.set()
    return "woken"


async def _ask_with_a_timeout(system: ActorSystem) -> object:
    try:
        return await system.spawn(Forgetful("forgetful")).ask(Ping(), timeout_ns=5_000)
    except AskTimeout:
        return system.now_ns


async def _wait_for_a_trio_deadline(system: ActorSystem) -> object:
    with trio.move_on_after(2):
        await trio.sleep_forever()
    return system.now_ns


@pytest.mark.parametrize(
    ("main", "result"),
    [
        (_wait_for_a_thread, None),
        (_wait_for_real_io, b"x"),
        (_wait_for_all_tasks_blocked, "woken"),
        (_ask_with_a_timeout, 5_000),
        (_wait_for_a_trio_deadline, 2_000_000_000),
    ],
)
def test_a_run_that_something_will_wake_is_no_deadlock(
    main: Callable[[ActorSystem], Awaitable[object]], result: object
) -> None:
    assert within_wall_limit(lambda: run_simulation(main)) == result


def test_a_deadlocked_run_fails_on_the_command_line_with_the_waits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def deadlocking_run(system: ActorSystem, config: object) -> dict[str, Any]:
        system.spawn(Pinger("pinger"))
        system.spawn(Ponger("ponger"))
        await system.lookup("pinger").ask(Ping())
        return {}

    monkeypatch.setattr(MODEL, "run", deadlocking_run)
    out = tmp_path / "run"
    assert (
        within_wall_limit(lambda: cli(["run", str(CONFIGS / "idle.toml"), "--out", str(out)])) == 1
    )
    error = orjson.loads((out / "error.json").read_bytes())
    assert error["status"] == "failed"
    assert error["error"].startswith("deadlock at t=0 ns")
    assert "actor 'pinger', handling Ping(), waits for 'ponger' to answer Pong()" in error["error"]
    assert not (out / "summary.json").exists()
    assert "deadlock at t=0 ns" in capsys.readouterr().out
