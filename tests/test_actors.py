"""Actors: dispatch, ask/tell, the NAPI drain, backpressure, supervision, dead letters."""

from __future__ import annotations

import attrs
import pytest
import trio

from pagehint.runtime import (
    Actor,
    ActorCrashed,
    ActorStopped,
    ActorSystem,
    AskSelf,
    AskTimeout,
    DuplicateActor,
    MemoryLog,
    UnhandledMessage,
    UnknownActor,
    handles,
    run_simulation,
)


@attrs.frozen
class Add:
    amount: int


@attrs.frozen
class Get:
    pass


@attrs.frozen
class Boom:
    reason: str


@attrs.frozen
class Slow:
    delay_ns: int


class Accumulator(Actor):
    def __init__(self, name: str, **kwargs: int) -> None:
        super().__init__(name, **kwargs)
        self.total = 0
        self.batches: list[int] = []

    @handles(Add)
    def add(self, message: Add) -> None:
        self.total += message.amount

    @handles(Get)
    def get(self, message: Get) -> int:
        return self.total

    @handles(Boom)
    def boom(self, message: Boom) -> None:
        raise ValueError(message.reason)

    @handles(Slow)
    async def slow(self, message: Slow) -> int:
        await self.sleep_ns(message.delay_ns)
        return self.now_ns


async def test_tell_then_ask_sees_every_message(actor_system: ActorSystem) -> None:
    acc = actor_system.spawn(Accumulator("acc"))
    for amount in range(1, 101):
        await acc.tell(Add(amount))
    assert await acc.ask(Get()) == 5050


async def test_async_handler_spends_virtual_time(actor_system: ActorSystem) -> None:
    acc = actor_system.spawn(Accumulator("acc"))
    answered_at = await acc.ask(Slow(2_000_000_000))
    assert answered_at == 2_000_000_000 == actor_system.now_ns


async def test_mailbox_drains_up_to_budget_per_wakeup(actor_system: ActorSystem) -> None:
    acc = actor_system.spawn(Accumulator("acc", budget=8, mailbox_size=100))
    for _ in range(40):  # queued without yielding: the actor has not run yet
        acc.try_tell(Add(1))
    assert acc.stats.peak_depth == 40
    assert await acc.ask(Get()) == 40
    # 41 messages in polls of at most 8: 6 wake-ups, 5 of which used the whole budget.
    assert acc.stats.handled == 41
    assert acc.stats.wakeups == 6
    assert acc.stats.budget_exhausted == 5


async def test_full_mailbox_makes_the_sender_wait_and_drops_nothing(
    actor_system: ActorSystem,
) -> None:
    acc = actor_system.spawn(Accumulator("acc", mailbox_size=2))
    await acc.tell(Slow(1_000))  # keeps the actor busy for 1 us of virtual time
    for _ in range(10):
        await acc.tell(Add(1))
    assert await acc.ask(Get()) == 10
    assert acc.stats.blocked_sends > 0
    assert acc.stats.blocked_ns > 0
    # At the peak: one handed straight to the waiting actor, two in the mailbox, one held by
    # this blocked sender. Depth counts every message sent and not yet taken by the actor.
    assert acc.stats.peak_depth == 4


async def test_ask_timeout_in_virtual_time(actor_system: ActorSystem) -> None:
    acc = actor_system.spawn(Accumulator("acc"))
    with pytest.raises(AskTimeout, match="within 1000 ns"):
        await acc.ask(Slow(5_000), timeout_ns=1_000)
    assert actor_system.now_ns == 1_000
    # The actor is still healthy; its late answer to the timed-out ask is dropped.
    assert await acc.ask(Get(), timeout_ns=10_000) == 0


async def test_unhandled_message_type_fails_at_the_sender(actor_system: ActorSystem) -> None:
    acc = actor_system.spawn(Accumulator("acc"))
    with pytest.raises(UnhandledMessage, match=r"'acc' has no handler for str .*handles: Add"):
        await acc.tell("hello")
    assert acc.alive


async def test_dead_letter_is_logged_and_ask_of_a_stopped_actor_fails_at_once(
    actor_system: ActorSystem, pagehint_log: MemoryLog
) -> None:
    acc = actor_system.spawn(Accumulator("acc"))
    await acc.ask(Get())
    acc.stop()
    await actor_system.sleep_ns(1)
    assert not acc.alive
    await acc.tell(Add(1))
    with pytest.raises(ActorStopped, match="'acc' is stopped"):
        await acc.ask(Get())
    (dead,) = pagehint_log.records("dead_letter")
    assert dead["actor"] == "acc"
    assert dead["message_type"] == "Add"
    assert acc.stats.dead_letters == 1


def test_messages_queued_at_stop_become_dead_letters_and_their_asks_fail() -> None:
    log = MemoryLog()

    async def main(system: ActorSystem) -> None:
        acc = system.spawn(Accumulator("acc"))
        await acc.tell(Slow(1_000))
        await acc.tell(Add(1))
        outcome: list[BaseException] = []

        async def asker() -> None:
            try:
                await acc.ask(Get())
            except ActorStopped as error:
                outcome.append(error)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(asker)
            await system.sleep_ns(10)  # the actor is mid-Slow; Add and Get are queued
            acc.stop()
        assert len(outcome) == 1

    run_simulation(main, log=log)
    assert [r["message_type"] for r in log.records("dead_letter")] == ["Add", "Get"]


def test_ask_self_is_an_error_not_a_deadlock() -> None:
    @attrs.frozen
    class Recurse:
        pass

    class Narcissus(Actor):
        @handles(Recurse)
        async def recurse(self, message: Recurse) -> None:
            await self.ask(message)

    async def main(system: ActorSystem) -> None:
        await system.spawn(Narcissus("n")).ask(Recurse())

    with pytest.raises(ActorCrashed) as caught:
        run_simulation(main)
    assert isinstance(caught.value.cause, AskSelf)


def test_crash_ends_the_run_with_one_error_naming_actor_message_and_time() -> None:
    async def main(system: ActorSystem) -> None:
        acc = system.spawn(Accumulator("acc"))
        system.spawn(Accumulator("bystander"))
        await system.sleep_ns(1_500)
        await acc.tell(Boom("disk on fire"))
        await system.sleep_ns(10**12)  # never reached: the crash cancels the run

    with pytest.raises(ActorCrashed) as caught:
        run_simulation(main)
    crash = caught.value
    assert crash.actor == "acc"
    assert crash.message == Boom("disk on fire")
    assert crash.t_ns == 1_500
    assert isinstance(crash.__cause__, ValueError)
    assert "actor 'acc' crashed at t=1500 ns while handling Boom(reason='disk on fire')" in str(
        crash
    )


def test_a_crash_on_a_huge_message_shows_a_bounded_part_of_it_and_of_its_cause() -> None:
    huge = Boom("x" * 100_000)  # the handler raises ValueError(reason): a huge cause too

    async def main(system: ActorSystem) -> None:
        await system.spawn(Accumulator("acc")).tell(huge)
        await system.sleep_ns(10**9)

    with pytest.raises(ActorCrashed) as caught:
        run_simulation(main)
    text = str(caught.value)
    assert len(text) < 700
    assert "while handling Boom(reason='xxx" in text and "... (100,015 characters)" in text
    assert ": ValueError: xxx" in text and "... (100,012 characters)" in text
    assert caught.value.message is huge  # the whole message is still there for a debugger


def test_crash_in_an_active_actor_run_is_named_too() -> None:
    class Worker(Actor):
        async def run(self) -> None:
            await self.sleep_ns(42)
            raise RuntimeError("workload bug")

    async def main(system: ActorSystem) -> None:
        system.spawn(Worker("vcpu0"))
        await system.sleep_ns(10**9)

    with pytest.raises(ActorCrashed, match=r"'vcpu0' crashed at t=42 ns .*in run\(\)"):
        run_simulation(main)


def test_cancelling_the_whole_run_stops_everything() -> None:
    async def main(system: ActorSystem) -> int:
        acc = system.spawn(Accumulator("acc"))
        with trio.move_on_after(3):
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(acc.ask, Slow(10**12))
        return system.now_ns

    assert run_simulation(main) == 3_000_000_000


async def test_names_are_unique_and_lookup_names_the_known(actor_system: ActorSystem) -> None:
    actor_system.spawn(Accumulator("zone"))
    with pytest.raises(DuplicateActor):
        actor_system.spawn(Accumulator("zone"))
    assert actor_system.lookup("zone").name == "zone"
    with pytest.raises(UnknownActor, match="actors: zone"):
        actor_system.lookup("host")


async def test_each_actor_has_its_own_seeded_random_stream(actor_system: ActorSystem) -> None:
    a = actor_system.spawn(Accumulator("a"))
    b = actor_system.spawn(Accumulator("b"))
    assert a.random.random() != b.random.random()


def test_real_time_on_request() -> None:
    async def main(system: ActorSystem) -> tuple[int, int]:
        acc = system.spawn(Accumulator("acc"))
        answered_at = await acc.ask(Slow(2_000_000))  # 2 ms of wall time
        with pytest.raises(AskTimeout):
            await acc.ask(Slow(50_000_000), timeout_ns=1_000_000)
        return answered_at, system.now_ns

    answered_at, end = run_simulation(main, clock="real")
    assert 2_000_000 <= answered_at < 1_000_000_000
    assert end >= answered_at + 1_000_000
