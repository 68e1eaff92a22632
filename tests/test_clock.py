"""The virtual clock: time jumps, FIFO same-time wake-ups, trio deadlines honoured."""

from __future__ import annotations

import trio
import trio.testing

from pagehint.runtime import NS_PER_S, VirtualClock, current_clock

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
