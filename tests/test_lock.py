"""The timed FIFO lock: served in arrival order, handed over at the stated release, never early."""

from __future__ import annotations

import math

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from pagehint.runtime import TimedLock, TimedLockStatistics, current_clock

from conftest import run_in_virtual_time


def acquisitions_in_virtual_time(requests: list[tuple[int, int]]) -> list[int]:
    """Each (arrival, hold) request takes the lock at its arrival, in list order among equal
    arrivals, holds it and leaves; returns the acquisition times."""
    acquired = [-1] * len(requests)

    async def requester(
        index: int,
        arrival: int,
        hold: int,
        lock: TimedLock,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        clock = current_clock()
        task_status.started()  # the arrival timer below is set before the next task starts
        await clock.sleep_until_ns(arrival)
        await lock.acquire()
        acquired[index] = clock.now_ns()
        lock.hold_until(clock.now_ns() + hold)
        await clock.sleep_until_ns(clock.now_ns() + hold)  # spends the hold, then leaves

    async def main() -> None:
        lock = TimedLock(current_clock())
        async with trio.open_nursery() as nursery:
            for index, (arrival, hold) in enumerate(requests):
                await nursery.start(requester, index, arrival, hold, lock)

    run_in_virtual_time(main)
    return acquired


def fifo_single_server(requests: list[tuple[int, int]]) -> list[int]:
    """The reference: a FIFO queue with one server (Lindley's recursion) over arrival order."""
    order = sorted(range(len(requests)), key=lambda index: requests[index][0])
    starts = [0] * len(requests)
    free_at = 0
    for index in order:
        arrival, hold = requests[index]
        starts[index] = max(arrival, free_at)
        free_at = starts[index] + hold
    return starts


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2_000), st.integers(0, 300)),
        min_size=1,
        max_size=25,
    )
)
def test_requests_are_served_in_arrival_order_like_a_fifo_queue(
    requests: list[tuple[int, int]],
) -> None:
    # Small ranges make ties common: arrivals at the same instant, and at a release instant.
    assert acquisitions_in_virtual_time(requests) == fifo_single_server(requests)


def test_an_uncontended_acquire_is_not_a_trip_through_the_scheduler() -> None:
    async def main() -> None:
        lock = TimedLock(current_clock())
        with trio.testing.assert_no_checkpoints():
            await lock.acquire()
        lock.hold_until(500)
        assert lock.held()
        await current_clock().sleep_until_ns(500)
        assert not lock.held()
        with trio.testing.assert_no_checkpoints():
            await lock.acquire()

    run_in_virtual_time(main)


def test_a_later_arrival_never_overtakes_a_waiter_at_the_release_instant() -> None:
    events: list[tuple[str, int]] = []

    async def take(
        name: str,
        arrival: int,
        lock: TimedLock,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        clock = current_clock()
        task_status.started()
        await clock.sleep_until_ns(arrival)
        await lock.acquire()
        events.append((name, clock.now_ns()))
        lock.hold_until(clock.now_ns() + 100)

    async def main() -> None:
        lock = TimedLock(current_clock())
        async with trio.open_nursery() as nursery:
            await nursery.start(take, "holder", 0, lock)
            await nursery.start(take, "waiter", 50, lock)
            await nursery.start(take, "late", 100, lock)  # arrives as the holder releases

    run_in_virtual_time(main)
    assert events == [("holder", 0), ("waiter", 100), ("late", 200)]


def test_a_cancelled_waiter_leaves_the_queue_and_the_next_one_is_served() -> None:
    served: list[tuple[str, int]] = []

    async def take(
        name: str,
        lock: TimedLock,
        give_up_after_ns: int | None = None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        clock = current_clock()
        deadline = trio.current_time() + give_up_after_ns / 1e9 if give_up_after_ns else math.inf
        with trio.move_on_at(deadline):
            task_status.started()
            await lock.acquire()
            served.append((name, clock.now_ns()))
            lock.hold_until(clock.now_ns() + 1_000)

    async def main() -> TimedLock:
        lock = TimedLock(current_clock())
        async with trio.open_nursery() as nursery:
            await nursery.start(take, "holder", lock)
            await nursery.start(take, "impatient", lock, 500)
            await nursery.start(take, "patient", lock)
            assert lock.waiting == 2
        return lock

    lock = run_in_virtual_time(main)
    assert served == [("holder", 0), ("patient", 1_000)]
    assert lock.waiting == 0


def test_statistics_show_the_holder_s_release_and_the_queue_as_trio_s_do() -> None:
    async def main() -> list[TimedLockStatistics]:
        clock = current_clock()
        lock = TimedLock(clock)
        seen = [lock.statistics()]
        await lock.acquire()
        seen.append(lock.statistics())  # held, release not yet stated

        async def queue() -> None:
            await lock.acquire()
            lock.hold_until(clock.now_ns() + 500)

        async with trio.open_nursery() as nursery:
            lock.hold_until(1_000)
            nursery.start_soon(queue)
            await clock.sleep_until_ns(10)
            seen.append(lock.statistics())
        seen.append(lock.statistics())  # the second holder's hold: until 1,500
        await clock.sleep_until_ns(1_500)
        seen.append(lock.statistics())
        return seen

    assert run_in_virtual_time(main) == [
        TimedLockStatistics(locked=False, tasks_waiting=0, release_ns=None),
        TimedLockStatistics(locked=True, tasks_waiting=0, release_ns=None),
        TimedLockStatistics(locked=True, tasks_waiting=1, release_ns=1_000),
        TimedLockStatistics(locked=True, tasks_waiting=0, release_ns=1_500),
        TimedLockStatistics(locked=False, tasks_waiting=0, release_ns=None),
    ]


def test_when_every_waiter_gave_up_the_lock_is_free_after_the_release() -> None:
    async def main() -> None:
        clock = current_clock()
        lock = TimedLock(clock)
        await lock.acquire()
        lock.hold_until(1_000)
        with trio.move_on_after(100e-9):
            await lock.acquire()
        assert lock.waiting == 0
        await clock.sleep_until_ns(1_000)
        assert not lock.held()
        with trio.testing.assert_no_checkpoints():
            await lock.acquire()

    run_in_virtual_time(main)
