"""Where one vCPU's virtual time goes: a ledger of kinds that sum to the elapsed time.

Pure bookkeeping, owned by a vCPU. The vCPU records each of its sleeps as it starts it (the
whole planned span, by kind). Other actors charge it for work that runs on that CPU (the
hinting worker's CPU work, a used-buffer interrupt, a TLB shootdown from a host discard)
through ``charge``:

- a vCPU that is **idle** (halted: a pause or an idle workload) takes the charge in its idle
  time, which it then no longer counts as idle; what does not fit is owed;
- a vCPU that is **running** owes it and pays at its next sleep, which it lengthens: the
  charge delays whatever the vCPU runs next, without a wake-up per charge.

At every operation boundary ``sum(totals) == now``: an invariant the vCPU checks.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

KINDS = ("work", "fault", "lock_wait", "hinting", "shootdown", "interrupt", "idle")
WORK, FAULT, LOCK_WAIT, HINTING, SHOOTDOWN, INTERRUPT, IDLE = range(len(KINDS))

Segment = tuple[int, int]  # (kind, ns)


@attrs.define
class CpuTime:
    """One vCPU's time by kind (indices into ``KINDS``), and what other actors charged it."""

    totals: list[int] = attrs.field(factory=lambda: [0] * len(KINDS))
    owed: list[int] = attrs.field(factory=lambda: [0] * len(KINDS))
    owed_ns: int = 0
    idle_until: int = 0  # the end of the idle span the vCPU is sleeping through, if any
    _idle_busy_until: int = 0  # charges taken in that idle span run until here
    _idle_taken: list[int] = attrs.field(factory=lambda: [0] * len(KINDS))  # by kind
    _plan_end: int = 0  # the end of the sleep in progress (its whole span is in totals)
    _plan: tuple[int, ...] = ()  # that sleep's segments in time order, flat: kind, ns, ...
    waiting_since: int | None = None  # spinning on the zone lock (or blocked) since then
    waiting_kind: int = LOCK_WAIT  # what that wait counts as

    def in_guest_mode(self, now: int) -> bool:
        """Whether the vCPU runs guest code now (not halted): a TLB shootdown must IPI it."""
        return now >= self.idle_until

    def charge(self, kind: int, ns: int, now: int) -> None:
        """``ns`` of ``kind`` ran on this CPU at ``now``: idle time takes it, else it is owed."""
        if ns <= 0:
            return
        if now < self.idle_until:
            start = max(now, self._idle_busy_until)
            taken = min(ns, max(0, self.idle_until - start))
            if taken:
                self.totals[kind] += taken
                self.totals[IDLE] -= taken
                self._idle_taken[kind] += taken
                self._idle_busy_until = start + taken
                ns -= taken
        if ns:
            self.owed[kind] += ns
            self.owed_ns += ns

    def plan(self, now: int, segments: Iterable[Segment]) -> int:
        """Record a sleep starting at ``now`` through ``segments`` and what is owed (paid
        first); return its end."""
        plan = list(segments)
        if self.owed_ns:
            plan[:0] = [(kind, ns) for kind, ns in enumerate(self.owed) if ns]
            self.owed = [0] * len(KINDS)
            self.owed_ns = 0
        totals = self.totals
        end = now
        flat: list[int] = []
        for kind, ns in plan:
            totals[kind] += ns
            end += ns
            flat += (kind, ns)
        self._plan, self._plan_end = tuple(flat), end
        return end

    def busy(self, now: int, held_kind: int, held_ns: int, kind: int, ns: int) -> int:
        """``plan`` of the vCPU's common sleep, kept lean for its hot path: the rest of a lock
        hold (``held_ns`` <= 0: none), then ``ns`` of ``kind``."""
        if held_ns < 0:
            held_ns = 0
        if self.owed_ns:
            return self.plan(now, ((held_kind, held_ns), (kind, ns)))
        totals = self.totals
        totals[held_kind] += held_ns
        totals[kind] += ns
        end = now + held_ns + ns
        self._plan, self._plan_end = (held_kind, held_ns, kind, ns), end
        return end

    def plan_idle(self, now: int, segments: Iterable[Segment], idle_ns: int) -> int:
        """``plan`` for a sleep that ends in ``idle_ns`` of idle time, open to charges."""
        end = self.plan(now, [*segments, (IDLE, idle_ns)])
        self.idle_until = end
        self._idle_busy_until = end - idle_ns
        self._idle_taken = [0] * len(KINDS)
        return end

    def woke(self) -> None:
        """The planned sleep is over (an idle one no longer takes charges)."""
        self.idle_until = 0

    def settled(self, now: int) -> list[int]:
        """The totals as of ``now``, with a sleep or a lock wait in progress cut at ``now``."""
        totals = list(self.totals)
        over = self._plan_end - now
        plan = self._plan
        for at in range(len(plan) - 2, -1, -2):
            if over <= 0:
                break
            cut = min(plan[at + 1], over)
            totals[plan[at]] -= cut
            over -= cut
        if totals[IDLE] < 0:  # charges taken in the idle span that had not run by ``now``
            deficit, totals[IDLE] = -totals[IDLE], 0
            for kind, taken in enumerate(self._idle_taken):
                cut = min(taken, deficit)
                totals[kind] -= cut
                deficit -= cut
        if self.waiting_since is not None:
            totals[self.waiting_kind] += now - self.waiting_since
        return totals

    def by_kind(self, now: int) -> dict[str, int]:
        return dict(zip(KINDS, self.settled(now), strict=True))
