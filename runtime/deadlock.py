"""Deadlocks in virtual time end the run with ``DeadlockError`` instead of hanging it.

Under the virtual clock, a run whose tasks all wait, with no timer, trio deadline, thread or
real I/O pending, can never move again: trio would sleep in its I/O wait for ever, at 0% CPU.
Two actors whose handlers ask each other without a timeout do that, as does a test awaiting
``trio.sleep_forever()`` or a channel nobody sends to. The clock sees that moment (it is asked
for the next deadline only when no task can run, so watching costs a moving run nothing);
``watch_for_deadlock`` then notes what every task waits on, cancels the run and raises the
error, which names each waiting actor and task and, for each unanswered ask, who asked whom
what and since when. ``run_simulation`` and the pytest plugin run everything under it.

Exempt: real-time runs (I/O may arrive any time), and tasks waiting on a ``trio.to_thread``
worker or real I/O. A task that only a thread foreign to trio can wake (``trio.from_thread``
with a token, from a thread trio did not start) looks stuck: use ``trio.to_thread``.
"""

from __future__ import annotations

import linecache
import os
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

import trio
from trio.lowlevel import RunVar, Task

from .actor import Actor, Reply
from .clock import VirtualClock
from .errors import DeadlockError, shown

if TYPE_CHECKING:
    from .system import ActorSystem

_T = TypeVar("_T")

# A report lists at most this many tasks; a stuck guest of many vCPUs would otherwise make the
# error (and error.json) as long as its actor list.
_MAX_WAITS = 32

# Frames of these packages are how a task waits, not where: the report shows the innermost
# frame outside them (the line of the model or the test that awaits).
_PLUMBING = ("trio", "outcome", "contextlib", __name__.rpartition(".")[0])

_systems: RunVar[list[ActorSystem]] = RunVar("pagehint_actor_systems")

_IDLE = "idle"  # what _wait says of an actor waiting for mail: they share one line


def report_actors_of(system: ActorSystem) -> None:
    """Let a deadlock report of this run name ``system``'s actors."""
    try:
        _systems.get().append(system)
    except LookupError:
        _systems.set([system])


async def watch_for_deadlock(body: Callable[[], Awaitable[_T]]) -> _T:
    """``await body()``, raising ``DeadlockError`` if the run gets stuck (virtual time only)."""
    __tracebackhide__ = True  # pytest shows the test's failure, not this frame
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, VirtualClock):
        return await body()
    main = trio.lowlevel.current_task()
    found: list[DeadlockError] = []
    with trio.CancelScope() as scope:

        def on_stuck() -> None:
            found.append(DeadlockError(clock.now_ns(), _waits(main)))
            scope.cancel()

        clock.call_when_stuck(on_stuck)
        try:
            return await body()
        finally:
            clock.call_when_stuck(None)
    # Only the cancellation on_stuck made ends the scope without a result or an error.
    raise found[0]


def _waits(main: Task) -> list[str]:
    """One line per waiting task under ``main`` (idle actors share one), in a stable order."""
    try:
        systems = _systems.get()
    except LookupError:
        systems = []
    actors = [actor for system in systems for actor in system.actors]
    by_task = {actor._task: actor for actor in actors if actor._task is not None}
    by_name = {actor.name: actor for actor in actors}
    lines: list[str] = []
    idle: list[str] = []
    for task in _tasks(main):
        who = _who(task, main, by_task)
        wait = _wait(task, who, by_name)
        if wait is _IDLE:
            idle.append(who)
        elif wait is not None:
            lines.append(wait)
    lines.sort()
    if len(lines) > _MAX_WAITS:
        lines[_MAX_WAITS:] = [f"... and {len(lines) - _MAX_WAITS} more"]
    if idle:
        lines.append("idle with an empty mailbox: " + ", ".join(sorted(idle)))
    return lines


def _tasks(task: Task) -> Iterator[Task]:
    yield task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from _tasks(child)


def _who(task: Task, main: Task, by_task: dict[Task, Actor]) -> str:
    """The actor a task works for (it is, or descends from, the actor's task), else the task."""
    ancestor: Task | None = task
    while ancestor is not None and ancestor is not main:
        actor = by_task.get(ancestor)
        if actor is not None:
            return f"actor {actor.name!r}" + ("" if ancestor is task else f" (task {task.name!r})")
        nursery = ancestor.parent_nursery
        ancestor = nursery.parent_task if nursery is not None else None
    return "the main task" if task is main else f"task {task.name!r}"


def _wait(task: Task, who: str, by_name: dict[str, Actor]) -> str | None:
    """What ``task`` waits on, as a line of the report; ``_IDLE`` for an actor awaiting mail;
    None for a task that waits only for its child tasks, or is the test runner's own."""
    frames = [frame for frame, _ in task.iter_await_frames()]
    for index in range(len(frames) - 1, -1, -1):
        frame = frames[index]
        code = frame.f_code
        if code is _ASK:
            reply: Reply = frame.f_locals["self"]
            target = reply._target
            line = (
                f"{who}{_handling(frames[:index])} waits for {target!r} to answer "
                f"{shown(reply._message)} (asked at t={reply._since_ns} ns"
            )
            actor = by_name.get(target)
            if actor is not None and reply in actor._deferred:
                line += f"; {target!r} deferred the reply and has not sent it"
            return line + ")"
        if code is _TELL:
            target = frame.f_locals["self"].name
            message = frame.f_locals["item"][0]
            return (
                f"{who}{_handling(frames[:index])} waits for room in the full mailbox of "
                f"{target!r} to tell it {shown(message)}"
            )
        if code is _SERVE:
            return _IDLE
        module = frame.f_globals.get("__name__", "")
        if code.co_name == "__aexit__" and _within(module, "trio"):
            return None  # a nursery's owner waits for its children, listed on their own
        if not _within(module, *_PLUMBING):
            return None if _within(module, "pytest_trio") else _at(who, frames, index)
    return _at(who, frames, 0) if frames else None  # a task started on trio's own function


def _at(who: str, frames: list[FrameType], index: int) -> str:
    """The line of a task waiting in ``frames[index]`` (and further in)."""
    frame = frames[index]
    code = frame.f_code
    source = linecache.getline(code.co_filename, frame.f_lineno).strip()
    return (
        f"{who}{_handling(frames[:index])} waits at {os.path.basename(code.co_filename)}:"
        f"{frame.f_lineno} in {code.co_qualname}: {source}"
    )


def _handling(outer: list[FrameType]) -> str:
    """The words naming the message M whose handler runs in these frames, if one does."""
    for frame in reversed(outer):
        if frame.f_code is _SERVE:
            return f", handling {shown(frame.f_locals['message'])},"
    return ""


def _within(module: str, *packages: str) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


_ASK = Reply.wait.__code__
_TELL = Actor._enqueue_waiting.__code__
_SERVE = Actor.serve.__code__
