"""The virtual clock: time jumps, FIFO same-time wake-ups, trio deadlines honoured."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from pagehint.runtime import NS_PER_S, VirtualClock, current_clock, deterministic_scheduling
from pagehint.runtime.clock import TRIO_WAIT_MESSAGE

from conftest import run_in_virtual_time


def test_sleep_jumps_virtual_time_without_wall_time() -> None:
    async def main() -> int:
        clock = current_clock()
        await clock.sleep_until_ns(3600 * NS_PER_S)
        return clock.now_ns()

    assert run_in_virtual_time(main) == 3600 * NS_PER_S


def test_same_time_wakeups_run_in_the_order_they_were_set() -> None:
    order: list[int] = []

    async def sleeper(index: int) -> None:
        await current_clock().sleep_until_ns(1_000)
        order.append(index)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for index in range(50):
                nursery.start_soon(sleeper, index)
                await trio.lowlevel.checkpoint()  # each parks before the next starts

    run_in_virtual_time(main)
    assert order == list(range(50))


def test_earlier_timers_fire_first() -> None:
    woke: list[tuple[int, int]] = []

    async def sleeper(when: int) -> None:
        clock = current_clock()
        await clock.sleep_until_ns(when)
        woke.append((when, clock.now_ns()))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for when in (500, 100, 300, 200, 400):
                nursery.start_soon(sleeper, when)

    run_in_virtual_time(main)
    assert woke == [(100, 100), (200, 200), (300, 300), (400, 400), (500, 500)]


def test_trio_deadlines_are_honoured_in_virtual_time() -> None:
    async def main() -> tuple[bool, int]:
        clock = current_clock()
        with trio.move_on_after(2.5) as scope:
            await clock.sleep_until_ns(10 * NS_PER_S)
        return scope.cancelled_caught, clock.now_ns()

    cancelled, now = run_in_virtual_time(main)
    assert cancelled
    assert now == 2_500_000_000


def test_trio_sleep_works_under_the_virtual_clock() -> None:
    async def main() -> int:
        await trio.sleep(0.25)
        return current_clock().now_ns()

    assert run_in_virtual_time(main) == 250_000_000


def test_cancelled_sleep_leaves_no_live_timer() -> None:
    clock = VirtualClock()

    async def main() -> None:
        with trio.move_on_after(1):
            await clock.sleep_until_ns(5 * NS_PER_S)
        assert clock.pending_timers == 0

    run_in_virtual_time(main, clock)
    assert clock.now_ns() == NS_PER_S


def test_call_at_runs_callback_at_its_time() -> None:
    clock = VirtualClock()
    fired: list[int] = []

    async def main() -> None:
        clock.call_at(700, lambda tag: fired.append(clock.now_ns()), None)
        cancelled = clock.call_at(300, lambda tag: fired.append(-1), None)
        cancelled.cancel()
        await clock.sleep_until_ns(1_000)

    run_in_virtual_time(main, clock)
    assert fired == [700]


def test_current_clock_refuses_a_foreign_clock() -> None:
    async def main() -> None:
        current_clock()

    try:
        trio.run(main, clock=trio.testing.MockClock())
    except RuntimeError as error:
        assert "pagehint needs its own clock" in str(error)
    else:
        raise AssertionError("expected a RuntimeError")


# -- Sleeper: a hot loop's sleeps without per-sleep allocations ---------------------------------
def test_trio_still_yields_the_wait_message_a_sleeper_reuses() -> None:
    # If this fails, a trio release moved the private message Sleeper reuses: sleepers fall
    # back to wait_task_rescheduled (correct, slower). Update clock.py or narrow trio's pin.
    assert TRIO_WAIT_MESSAGE is not None, f"trio {trio.__version__}"
    assert vars(trio._core._run)["WaitTaskRescheduled"] is TRIO_WAIT_MESSAGE  # the loop checks it


def _wake_order(plans: list[list[int]], *, sleepers: frozenset[int]) -> list[tuple[int, int]]:
    """(task, time) of every wake-up when task ``i`` sleeps through the gaps ``plans[i]``;
    the tasks in ``sleepers`` use a sleeper, the others ``sleep_until_ns``."""
    woke: list[tuple[int, int]] = []

    async def task(index: int, gaps: list[int]) -> None:
        clock = current_clock()
        sleep: Callable[[int], Awaitable[None]] = (
            clock.sleeper() if index in sleepers else clock.sleep_until_ns
        )
        for gap in gaps:
            await sleep(clock.now_ns() + gap)
            woke.append((index, clock.now_ns()))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for index, gaps in enumerate(plans):
                nursery.start_soon(task, index, gaps)

    with deterministic_scheduling(seed=0):  # the tasks' first steps come in a seeded order
        run_in_virtual_time(main)
    return woke


@settings(max_examples=60, deadline=None)
@given(
    plans=st.lists(st.lists(st.integers(0, 50), max_size=12), min_size=1, max_size=6),
    data=st.data(),
)
def test_a_sleeper_wakes_exactly_as_sleep_until_ns_does(
    plans: list[list[int]], data: st.DataObject
) -> None:
    # Gaps of 0 and shared times: same-time wake-ups must keep their FIFO order too.
    sleepers = data.draw(st.frozensets(st.integers(0, len(plans) - 1)))
    assert _wake_order(plans, sleepers=sleepers) == _wake_order(plans, sleepers=frozenset())


def test_a_cancelled_sleeper_sleep_leaves_no_live_timer_and_sleeps_again() -> None:
    clock = VirtualClock()

    async def main() -> int:
        sleep = clock.sleeper()
        with trio.move_on_after(1) as scope:
            await sleep(5 * NS_PER_S)
        assert scope.cancelled_caught
        assert clock.pending_timers == 0
        await sleep(3 * NS_PER_S)  # the same sleeper, after its abort
        return clock.now_ns()

    assert run_in_virtual_time(main, clock) == 3 * NS_PER_S
