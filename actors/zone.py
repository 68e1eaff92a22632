"""The zone-lock actor: the only way to the buddy allocator.

Every request takes the zone lock, a FIFO ``TimedLock`` in virtual time: as in Linux, where the
CPU that needs ``zone->lock`` takes it and does the allocator work itself, the requester's
change to the allocator is made when it acquires the lock, and the lock then stays held for the
hold time of the cost model. Requests that find it held queue in arrival order. Contention is
not computed from a formula: it is the queue that forms under load. For every request the zone
records how long the requester waited, how long the lock was held and how many requests were
still queued when it got the lock, by requester.

Two ways in, one lock:

* ``request``, called from the requester's own task (the vCPUs'): no message, no extra task; the
  requester is told when the lock is released and spends the hold in its own next sleep, so an
  uncontended request costs no scheduler pass of its own;
* messages (``ask`` a ``ZoneAlloc``, ``ZoneFree`` or ``ZoneWork``; the hinting worker's way): the
  zone queues the request at the lock on the sender's behalf when it arrives, and answers once
  the lock is released.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from pagehint.protocol.messages import ZoneAlloc, ZoneFree, ZoneWork
from pagehint.runtime import Actor, Histogram, Reply, TimedLock, handles

from .mm.buddy import BuddyAllocator
from .mm.costs import Costs

FreeHook = Callable[[int, int, str], None]
ZoneRequest = ZoneAlloc | ZoneFree | ZoneWork


def requester_group(requester: str) -> str:
    """'g1.vcpu12' -> 'vcpu': the class of requester that contention is reported by."""
    name = requester.rpartition(".")[2]
    return name.rstrip("0123456789") or name


@attrs.define
class LockStats:
    """What one class of requester saw of the zone lock."""

    wait_ns: Histogram = attrs.Factory(Histogram)
    hold_ns: Histogram = attrs.Factory(Histogram)
    queue_depth: Histogram = attrs.Factory(Histogram)

    def summary(self) -> dict[str, Any]:
        return {
            "wait_ns": self.wait_ns.summary(),
            "hold_ns": self.hold_ns.summary(),
            "queue_depth": self.queue_depth.summary(),
        }


class Zone(Actor):
    """Owns one ``BuddyAllocator``; each request is one acquisition of the zone lock."""

    default_mailbox_size = 1024

    def __init__(self, name: str, allocator: BuddyAllocator, costs: Costs) -> None:
        super().__init__(name)
        self.allocator = allocator
        self.costs = costs
        self.by_requester: dict[str, LockStats] = {}  # by requester class: vcpu, worker
        self._stats_of: dict[str, LockStats] = {}  # requester name -> its class's stats
        self.hold_total_ns = 0
        self.failed_allocations = 0
        self.peak_isolated_pages = 0
        # Pages each requester holds from the zone, changed in the same step as the allocator:
        # the ledger that page conservation is checked against.
        self.held_by: dict[str, int] = {}
        self._free_hooks: list[FreeHook] = []
        self._serving: str | None = None  # who the change being made under the lock is for
        self._answering: trio.Nursery  # where sent requests wait for the lock (set by run)

    # -- hooks for hinting ---------------------------------------------------------------
    def add_free_hook(self, hook: FreeHook) -> None:
        """Call ``hook(pfn, order, requester)`` for each block freed (after merging), under
        the lock; ``requester`` is who freed it (the CPU, for per-CPU designs)."""
        self._free_hooks.append(hook)
        self.allocator.on_free = self._notify_free  # none until a hook: a call per free saved

    def _notify_free(self, pfn: int, order: int) -> None:
        requester = "boot" if self._serving is None else self._serving
        for hook in self._free_hooks:
            hook(pfn, order, requester)

    # -- the lock ------------------------------------------------------------------------
    def _stats_for(self, requester: str) -> LockStats:
        """The statistics of ``requester``'s class (made on its first request)."""
        group = requester_group(requester)
        stats = self.by_requester.get(group)
        if stats is None:
            stats = self.by_requester[group] = LockStats()
        self._stats_of[requester] = stats
        return stats

    def _merged(self, pick: Callable[[LockStats], Histogram]) -> Histogram:
        total = Histogram()
        for stats in self.by_requester.values():
            total.merge(pick(stats))
        return total

    @property
    def lock_wait_ns(self) -> Histogram:
        return self._merged(lambda stats: stats.wait_ns)

    @property
    def lock_hold_ns(self) -> Histogram:
        return self._merged(lambda stats: stats.hold_ns)

    @property
    def queue_depth(self) -> Histogram:
        return self._merged(lambda stats: stats.queue_depth)

    def take_at_boot(self, pages: int, order: int) -> list[int]:
        """Allocate blocks the booted kernel already uses (no lock: before any vCPU runs)."""
        taken = self.allocator.alloc_blocks(pages, order)
        self.held_by["boot"] = self.held_by.get("boot", 0) + (len(taken) << order)
        return taken

    # -- the requests ---------------------------------------------------------------------
    @functools.cached_property
    def lock(self) -> TimedLock:
        return TimedLock(self.clock)

    def hold_ns_until(self, end_ns: int) -> int:
        """Time the lock was held up to ``end_ns``: a hold running past it counts up to it."""
        overrun = self.lock.statistics().release_ns
        return self.hold_total_ns - max(0, (overrun or 0) - end_ns)

    @property
    def queued(self) -> int:
        """Requests waiting for the lock, and messages not yet taken up."""
        return self.lock.waiting + self.stats.depth

    async def request(self, request: ZoneRequest) -> tuple[Any, int]:
        """Take the lock, make the change under it, and return the result with the virtual time
        the lock is released. The caller holds the lock until then: it must not act before
        that time, and typically spends the hold in its next sleep."""
        await self.lock.acquire()
        if isinstance(request, ZoneAlloc):
            return self.alloc_held(request.requester, request.order, request.count, request.sent_ns)
        if isinstance(request, ZoneFree):
            release = self.free_held(
                request.requester, request.order, request.pfns, request.sent_ns
            )
            return None, release
        return self._work_held(request)

    # A requester in its own task (a vCPU) takes ``lock`` itself (``try_acquire``, else
    # ``acquire``) and calls one of these under it, with no message object: the hot path.
    def alloc_held(
        self, requester: str, order: int, count: int, sent_ns: int
    ) -> tuple[tuple[int, ...], int]:
        """Under the lock: allocate ``count`` blocks of ``order`` for ``requester`` (waiting
        since ``sent_ns``); the blocks, and when the lock is released."""
        now = self.clock.now_ns()
        allocator = self.allocator
        gate = allocator.watermarks.min
        self._serving = requester
        try:
            if count == 1:
                pfn = allocator.alloc(order, gate=gate)
                pfns: tuple[int, ...] = () if pfn is None else (pfn,)
            else:
                pfns = tuple(allocator.alloc_bulk(order, count, gate=gate))
        finally:
            self._serving = None
        got = len(pfns)
        if not got:
            self._failed(requester, order)
        if self._debug:
            self.log.debug(
                "zone_alloc",
                requester=requester,
                order=order,
                wanted=count,
                got=got,
                pfns=pfns,
                wait_ns=now - sent_ns,
                queued=self.lock.waiting,
            )
        return pfns, self._settle(requester, now, now - sent_ns, got << order, got or 1)

    def free_held(self, requester: str, order: int, pfns: Sequence[int], sent_ns: int) -> int:
        """Under the lock: free ``pfns`` (blocks of ``order``) for ``requester``; when the lock
        is released."""
        now = self.clock.now_ns()
        allocator = self.allocator
        self._serving = requester
        try:
            if len(pfns) == 1:  # a THP unmapped: the common case, without a batch to build
                allocator.free(pfns[0], order)
            else:
                allocator.free_bulk((pfn, order) for pfn in pfns)
        finally:
            self._serving = None
        if self._debug:
            self.log.debug(
                "zone_free",
                requester=requester,
                order=order,
                blocks=len(pfns),
                pfns=tuple(pfns),
                wait_ns=now - sent_ns,
                queued=self.lock.waiting,
            )
        return self._settle(requester, now, now - sent_ns, -(len(pfns) << order), len(pfns))

    def _work_held(self, request: ZoneWork) -> tuple[object, int]:
        """Under the lock: a hinting step, isolation or put-back decided by a pure policy."""
        now = self.clock.now_ns()
        wait = now - request.sent_ns
        self._serving = request.requester
        try:
            result, examined = request.work(self.allocator)
        finally:
            self._serving = None
        self.peak_isolated_pages = max(self.peak_isolated_pages, self.allocator.isolated_pages)
        if self._debug:
            self.log.debug(
                "zone_work",
                requester=request.requester,
                examined=examined,
                isolated_pages=self.allocator.isolated_pages,
                wait_ns=wait,
                queued=self.lock.waiting,
            )
        return result, self._settle(request.requester, now, wait, 0, max(1, examined))

    def _settle(self, requester: str, now: int, wait_ns: int, pages: int, blocks: int) -> int:
        """The books of a request made under the lock at ``now``: ``pages`` more lent to (fewer:
        given back by) ``requester``, its wait, the queue behind it, and the hold for the cost
        of ``blocks``; when the lock is released. One call per request: the vCPUs' hot path."""
        stats = self._stats_of.get(requester)
        if stats is None:
            stats = self._stats_for(requester)
        stats.wait_ns.record(wait_ns)
        stats.queue_depth.record(self.lock.waiting)  # requests still queued behind this one
        if pages:
            held = self.held_by
            held[requester] = held.get(requester, 0) + pages
        hold = self.costs.lock_hold_ns(blocks)
        stats.hold_ns.record(hold)
        self.hold_total_ns += hold
        release = now + hold
        self.lock.hold_until(release)
        return release

    def _failed(self, requester: str, order: int) -> None:
        """An allocation found nothing above the min watermark; a false OOM if the pages
        isolated for hinting would have let it succeed."""
        allocator = self.allocator
        need, gate = 1 << order, allocator.watermarks.min
        false_oom = allocator.isolated_pages >= need and (
            allocator.free_pages + allocator.isolated_pages - need >= gate
        )
        self.failed_allocations += 1
        self.log.warning(
            "alloc_failed",
            requester=requester,
            order=order,
            free_pages=allocator.free_pages,
            isolated_pages=allocator.isolated_pages,
            min_wmark_pages=gate,
            false_oom=false_oom,
        )

    @functools.cached_property
    def _debug(self) -> bool:
        """Whether debug lines are written: their arguments are built only then."""
        return self.log.is_enabled_for(logging.DEBUG)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._answering = nursery
            await self.serve()

    @handles(ZoneAlloc, ZoneFree, ZoneWork)
    def take_message(self, request: ZoneRequest) -> None:
        """Queue a sent request at the lock now, as it arrives; the reply follows the release."""
        self._answering.start_soon(self._answer, request, self.defer_reply())

    async def _answer(self, request: ZoneRequest, reply: Reply | None) -> None:
        result, release = await self.request(request)
        await self.clock.sleep_until_ns(release)
        if reply is not None:
            reply.send(result)

    def utilisation(self, elapsed_ns: int) -> float:
        """Fraction of ``elapsed_ns`` the lock was held."""
        return self.hold_total_ns / elapsed_ns if elapsed_ns else 0.0
