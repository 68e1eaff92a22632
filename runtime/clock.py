"""Clocks: virtual time (the default) and real time, both usable as trio's run clock.

Virtual time jumps straight to the next timer whenever no task can run, so a run of
simulated seconds costs only the work done in it. ``trio.testing.MockClock`` does the same
but every ``trio.sleep`` builds a cancel scope and wakes through a ``Cancelled`` exception;
this clock keeps its own ``(time, sequence)`` heap of parked tasks instead and wakes them
with a plain ``reschedule``. Same-time timers fire one at a time in the order they were set,
so runs are reproducible regardless of trio's run-queue shuffling.

When nothing at all is scheduled the virtual clock also tells whether the run is stuck: no
task can run, and no timer, trio deadline, thread or real I/O can ever wake one (see
``VirtualClock.call_when_stuck``; ``pagehint.runtime.deadlock`` turns that into an error).

Time is kept as integer nanoseconds (``now_ns``); trio sees float seconds.
"""

from __future__ import annotations

import heapq
import math
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import attrs
import trio
import trio.testing
from outcome import Value
from trio.lowlevel import (
    Abort,
    RaiseCancelT,
    Task,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

# The message trio's ``wait_task_rescheduled`` yields: private, so optional (see ``Sleeper``).
TRIO_WAIT_MESSAGE: type | None = getattr(trio._core._traps, "WaitTaskRescheduled", None)

NS_PER_S = 1_000_000_000

# trio keeps the tasks in ``trio.testing.wait_all_tasks_blocked`` private; the pinned trio range
# has them, and tests/test_deadlock.py fails loudly if a release moves them.
_trio_run_module = trio._core._run

# A heap entry is a mutable list ``[when_ns, seq, callback, arg]``; a cancelled entry has
# ``callback`` set to None and is discarded when it reaches the top (lazy deletion is O(1)
# to cancel, and cancellations are frequent: every answered ask with a timeout cancels one).
_Entry = list[Any]


def _seconds_to_ns(deadline: float) -> int:
    """Smallest integer ns whose float seconds is not before ``deadline``.

    trio expires a deadline when ``deadline <= current_time()``; rounding the wrong way
    would leave a deadline forever 1 ns in the future.
    """
    ns = math.ceil(deadline * NS_PER_S)
    while ns / NS_PER_S < deadline:
        ns += 1
    return ns


class TimerHandle:
    """Lets the owner of a timer cancel it before it fires."""

    __slots__ = ("_entry",)

    def __init__(self, entry: _Entry) -> None:
        self._entry = entry

    def cancel(self) -> None:
        _cancel(self._entry)


class SimClock(trio.abc.Clock):
    """What actors need from a clock, in either time mode."""

    __slots__ = ()

    virtual: bool

    def now_ns(self) -> int:
        raise NotImplementedError

    async def sleep_until_ns(self, when_ns: int) -> None:
        raise NotImplementedError

    def call_at(self, when_ns: int, callback: Callable[[Any], object], arg: Any) -> TimerHandle:
        """Run ``callback(arg)`` from the scheduler once time reaches ``when_ns``.

        The callback must not block: it may only reschedule tasks or record state.
        """
        raise NotImplementedError

    def sleeper(self) -> Callable[[int], Awaitable[None]]:
        """A ``sleep_until_ns`` for the calling task alone, made in it, for a task that sleeps
        in a hot loop (a vCPU sleeps once per fault): the same sleeps, as cheap as this clock
        can make them."""
        return self.sleep_until_ns


class VirtualClock(SimClock):
    """Simulated time that advances only when every task is blocked."""

    __slots__ = ("_heap", "_now_ns", "_on_stuck", "_seq", "wakeups")
    virtual = True

    def __init__(self, start_ns: int = 0) -> None:
        self._now_ns = start_ns
        self._heap: list[_Entry] = []
        self._seq = 0
        self._on_stuck: Callable[[], object] | None = None
        self.wakeups = 0

    # -- trio.abc.Clock -------------------------------------------------------------------
    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now_ns / NS_PER_S

    def deadline_to_sleep_time(self, deadline: float) -> float:
        # trio calls this only when no task is runnable: the moment to advance time. Fire
        # exactly one timer per call so that same-time wake-ups run in FIFO order.
        heap = self._heap
        while heap and heap[0][2] is None:
            heapq.heappop(heap)
        if heap and (deadline == math.inf or heap[0][0] <= _seconds_to_ns(deadline)):
            when_ns, _, callback, arg = heapq.heappop(heap)
            self._now_ns = when_ns
            self.wakeups += 1
            callback(arg)
            return 0.0
        if deadline != math.inf:
            # A trio deadline (cancel scope, move_on_after, trio.sleep) comes first.
            self._now_ns = max(self._now_ns, _seconds_to_ns(deadline))
            return 0.0
        # Nothing scheduled at all: wait for real I/O or a thread, unless nothing can come.
        on_stuck = self._on_stuck
        if on_stuck is not None and not _woken_from_outside():
            self._on_stuck = None
            on_stuck()
            return 0.0
        return math.inf

    def call_when_stuck(self, callback: Callable[[], object] | None) -> None:
        """Call ``callback()`` once, from the scheduler, if the run gets stuck (None: don't).

        Stuck: no task can run, no timer or trio deadline is pending, and nothing outside the
        tasks (a ``trio.to_thread`` worker, real I/O, a ``wait_all_tasks_blocked``) may wake
        one. The check runs only when nothing is scheduled, so it costs a moving run nothing.
        The callback must not block; it may cancel scopes or reschedule tasks.
        """
        self._on_stuck = callback

    # -- SimClock -------------------------------------------------------------------------
    def now_ns(self) -> int:
        return self._now_ns

    def call_at(self, when_ns: int, callback: Callable[[Any], object], arg: Any) -> TimerHandle:
        self._seq += 1
        entry: _Entry = [max(when_ns, self._now_ns), self._seq, callback, arg]
        heapq.heappush(self._heap, entry)
        return TimerHandle(entry)

    def sleep_until_ns(self, when_ns: int) -> Coroutine[Any, Any, Any]:
        """Park the calling task until ``when_ns``; await the result at once. Not a coroutine
        itself but the trio wait it parks in, set up when called: one coroutine level fewer
        on the path every sleep of every actor takes."""
        entry = self._wake_at(when_ns, current_task())

        def abort(_: RaiseCancelT) -> Abort:
            _cancel(entry)
            return Abort.SUCCEEDED

        return wait_task_rescheduled(abort)

    def sleeper(self) -> Callable[[int], Awaitable[None]]:
        return Sleeper(self).until

    def _wake_at(self, when_ns: int, task: Task) -> _Entry:
        """The timer that wakes ``task`` at ``when_ns`` (now, if that has passed)."""
        self._seq += 1
        now = self._now_ns
        entry: _Entry = [when_ns if when_ns > now else now, self._seq, reschedule, task]
        heapq.heappush(self._heap, entry)
        return entry

    @property
    def pending_timers(self) -> int:
        return sum(1 for entry in self._heap if entry[2] is not None)


class Sleeper:
    """``VirtualClock.sleep_until_ns`` for a task that sleeps over and over.

    Each ``sleep_until_ns`` builds trio's wait message, an abort callback and a coroutine; at
    a vCPU's once-per-fault sleeps that is a tenth of the clock's cost. A sleeper keeps one
    message with one abort callback and parks in a bare generator: the same timers in the
    same order, without the allocations. The message is trio's own (private) type, the one
    ``trio.lowlevel.wait_task_rescheduled`` yields; were a trio release to move it, the
    sleeper would fall back to that public call (and tests/test_clock.py fails loudly).
    """

    __slots__ = ("_clock", "_entry", "_message", "_task")

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self._task = current_task()  # the one task that sleeps through it
        self._entry: _Entry = []
        message_type = TRIO_WAIT_MESSAGE
        self._message = None if message_type is None else message_type(self._abort)

    def until(self, when_ns: int) -> Awaitable[None]:
        """Park the sleeper's task (the caller) until ``when_ns``; await the result at once."""
        self._entry = self._clock._wake_at(when_ns, self._task)
        if self._message is None:  # pragma: no cover - only with a trio that moved the type
            return wait_task_rescheduled(self._abort)
        return _park(self._message)

    def _abort(self, _: RaiseCancelT) -> Abort:
        _cancel(self._entry)
        return Abort.SUCCEEDED


@types.coroutine
def _park(message: object) -> Generator[Any, Any, None]:
    """Yield trio's wait ``message`` to the scheduler and raise what wakes the task if it is an
    error (the ``Cancelled`` of an abort), as ``wait_task_rescheduled`` does. A plain wake-up
    carries ``Value(None)``: nothing to unwrap."""
    woken = yield message
    if type(woken) is not Value:
        woken.unwrap()


def _cancel(entry: _Entry) -> None:
    """A timer that will not fire: dropped when it reaches the heap's top."""
    entry[2] = None
    entry[3] = None


def _woken_from_outside() -> bool:
    """Whether something other than a timer may still wake a task of this idle run."""
    statistics = trio.lowlevel.current_statistics()
    io_waits = attrs.asdict(statistics.io_statistics)
    del io_waits["backend"]  # every other field counts tasks (or monitors) waiting on I/O
    return (
        sum(io_waits.values()) > 1  # trio's own wake-up socket always has one
        or statistics.run_sync_soon_queue_size > 0
        or trio.testing.active_thread_count() > 0
        or bool(_trio_run_module.GLOBAL_RUN_CONTEXT.runner.waiting_for_idle)
    )


class RealClock(SimClock):
    """Wall-clock time, for running the model against real I/O; timers via trio itself."""

    __slots__ = ("_offset_ns",)
    virtual = False

    def __init__(self) -> None:
        self._offset_ns = time.perf_counter_ns()

    def start_clock(self) -> None:
        self._offset_ns = time.perf_counter_ns()

    def current_time(self) -> float:
        return self.now_ns() / NS_PER_S

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return deadline - self.current_time()

    def now_ns(self) -> int:
        return time.perf_counter_ns() - self._offset_ns

    async def sleep_until_ns(self, when_ns: int) -> None:
        await trio.sleep_until(when_ns / NS_PER_S)

    def call_at(self, when_ns: int, callback: Callable[[Any], object], arg: Any) -> TimerHandle:
        entry: _Entry = [when_ns, 0, callback, arg]

        async def fire() -> None:
            await trio.sleep_until(when_ns / NS_PER_S)
            if entry[2] is not None:
                entry[2](entry[3])

        trio.lowlevel.spawn_system_task(fire, name=f"timer@{when_ns}")
        return TimerHandle(entry)


def current_clock() -> SimClock:
    """The run's clock; pagehint code runs only under one of ours."""
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, SimClock):
        raise RuntimeError(
            "pagehint needs its own clock: run with pagehint.runtime.run_simulation(), or in a "
            "test use the `actor_system` fixture (or pass clock=VirtualClock() to trio.run)"
        )
    return clock
