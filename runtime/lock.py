"""A FIFO lock in simulated time whose holder states when it will release it.

A kernel spinlock has no owner task: the CPU that needs it takes it, does its work under it and
drops it, and CPUs that find it held queue in arrival order (qspinlock's MCS queue). An actor
serving requests models that faithfully but costs scheduler passes on every request, even
uncontended ones. ``TimedLock`` keeps the semantics and drops the passes:

* an uncontended ``acquire`` returns at once, without a trip through the scheduler;
* the holder does its work, then calls ``hold_until(release_ns)``: the lock stays held until
  then, and the holder may spend that time in the same sleep as whatever it does next;
* a requester that finds the lock held, or others already waiting, queues; at the release time
  the lock is handed to the first waiter (a clock timer wakes it), never to a later arrival.

So the time a requester waits, and the queue it sees, come from the real order and timing of
requests: contention is measured, not computed from a formula.
"""

from __future__ import annotations

from collections import deque

import attrs
from trio.lowlevel import Abort, RaiseCancelT, Task, current_task, reschedule, wait_task_rescheduled

from .clock import SimClock

# ``_release_ns`` while a holder has the lock but has not yet said when it will release it.
_UNTIL_STATED = 1 << 62


@attrs.frozen
class TimedLockStatistics:
    """A snapshot of a ``TimedLock``, as ``trio.Lock.statistics()`` gives one of a trio lock.

    There is no ``owner``: like the spinlock it models, the lock does not know which task
    holds it, only until when.
    """

    locked: bool  # a holder has it (its hold not yet over), or requesters queue
    tasks_waiting: int  # requesters queued, not counting the holder
    release_ns: int | None  # when the current hold ends; None if free or not yet stated


class TimedLock:
    """FIFO mutual exclusion in virtual time; see the module docstring for the protocol."""

    __slots__ = ("_clock", "_hand_off_armed", "_release_ns", "_waiters")

    def __init__(self, clock: SimClock) -> None:
        self._clock = clock
        self._release_ns = 0  # the lock is free from this time on
        self._waiters: deque[Task] = deque()
        self._hand_off_armed = False

    @property
    def waiting(self) -> int:
        """Requesters queued for the lock (not counting its holder)."""
        return len(self._waiters)

    def held(self) -> bool:
        """True while a holder has the lock (its hold not yet over) or requesters queue."""
        return bool(self._waiters) or self._release_ns > self._clock.now_ns()

    def statistics(self) -> TimedLockStatistics:
        locked = self.held()
        stated = locked and self._release_ns != _UNTIL_STATED
        return TimedLockStatistics(locked, len(self._waiters), self._release_ns if stated else None)

    def try_acquire(self) -> bool:
        """Take the lock if it is free and nobody queues, without a coroutine; False: it is
        not, and the caller must ``acquire`` (the hot path of a requester that is usually
        alone skips a coroutine level this way)."""
        if not self._waiters and self._release_ns <= self._clock.now_ns():
            self._release_ns = _UNTIL_STATED
            return True
        return False

    async def acquire(self) -> None:
        """Take the lock, queueing behind earlier requesters while it is held.

        The caller must call ``hold_until`` before its next checkpoint; until then the lock is
        held for an unstated time. An uncontended acquire is not a trio checkpoint.
        """
        if self.try_acquire():
            return
        task = current_task()
        waiters = self._waiters
        waiters.append(task)
        self._arm_hand_off()

        def abort(_: RaiseCancelT) -> Abort:
            waiters.remove(task)
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def hold_until(self, release_ns: int) -> None:
        """The holder keeps the lock until ``release_ns`` (at least now)."""
        now = self._clock.now_ns()
        self._release_ns = release_ns if release_ns > now else now
        if self._waiters:
            self._arm_hand_off()

    def _arm_hand_off(self) -> None:
        # One timer per holder, set once both its release time and a waiter are known.
        if self._waiters and not self._hand_off_armed and self._release_ns != _UNTIL_STATED:
            self._hand_off_armed = True
            self._clock.call_at(self._release_ns, self._hand_off, None)

    def _hand_off(self, _: object) -> None:
        self._hand_off_armed = False
        if self._waiters:  # else every waiter was cancelled: the lock is simply free
            self._release_ns = _UNTIL_STATED
            reschedule(self._waiters.popleft())
