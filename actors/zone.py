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
from collections.abc import Callable
from typing import Any, ClassVar

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
        self._serving: ZoneRequest | None = None  # the request being applied under the lock
        self._answering: trio.Nursery  # where sent requests wait for the lock (set by run)
        allocator.on_free = self._notify_free

    # -- hooks for hinting ---------------------------------------------------------------
    def add_free_hook(self, hook: FreeHook) -> None:
        """Call ``hook(pfn, order, requester)`` for each block freed (after merging), under
        the lock; ``requester`` is who freed it (the CPU, for per-CPU designs)."""
        self._free_hooks.append(hook)

    def _notify_free(self, pfn: int, order: int) -> None:
        serving = self._serving
        requester = "boot" if serving is None else serving.requester
        for hook in self._free_hooks:
            hook(pfn, order, requester)

    # -- the lock ------------------------------------------------------------------------
    def _acquired(self, requester: str, wait_ns: int) -> LockStats:
        stats = self._stats_of.get(requester)
        if stats is None:
            group = requester_group(requester)
            stats = self.by_requester.get(group)
            if stats is None:
                stats = self.by_requester[group] = LockStats()
            self._stats_of[requester] = stats
        stats.wait_ns.record(wait_ns)
        stats.queue_depth.record(self.lock.waiting)  # requests still queued behind this one
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

    def _account(self, requester: str, pages: int) -> None:
        self.held_by[requester] = self.held_by.get(requester, 0) + pages

    def take_at_boot(self, pages: int, order: int) -> list[int]:
        """Allocate blocks the booted kernel already uses (no lock: before any vCPU runs)."""
        taken = self.allocator.alloc_blocks(pages, order)
        self._account("boot", len(taken) << order)
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
        now = self.clock.now_ns()
        wait = now - request.sent_ns
        stats = self._acquired(request.requester, wait)
        self._serving = request
        try:
            result, blocks = self._apply[type(request)](self, request, wait)
        finally:
            self._serving = None
        hold = self.costs.lock_hold_ns(blocks)
        stats.hold_ns.record(hold)
        self.hold_total_ns += hold
        release = now + hold
        self.lock.hold_until(release)
        return result, release

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

    def _allocate(self, request: ZoneAlloc, wait: int) -> tuple[tuple[int, ...], int]:
        allocator = self.allocator
        gate = allocator.watermarks.min
        if request.count == 1:
            pfn = allocator.alloc(request.order, gate=gate)
            pfns: tuple[int, ...] = () if pfn is None else (pfn,)
        else:
            pfns = tuple(allocator.alloc_bulk(request.order, request.count, gate=gate))
        if pfns:
            self._account(request.requester, len(pfns) << request.order)
        else:
            # A false OOM: the pages isolated for hinting would have let this one succeed.
            need = 1 << request.order
            false_oom = allocator.isolated_pages >= need and (
                allocator.free_pages + allocator.isolated_pages - need >= gate
            )
            self.failed_allocations += 1
            self.log.warning(
                "alloc_failed",
                requester=request.requester,
                order=request.order,
                free_pages=allocator.free_pages,
                isolated_pages=allocator.isolated_pages,
                min_wmark_pages=gate,
                false_oom=false_oom,
            )
        self.log.debug(
            "zone_alloc",
            requester=request.requester,
            order=request.order,
            wanted=request.count,
            got=len(pfns),
            pfns=pfns,
            wait_ns=wait,
            queued=self.lock.waiting,
        )
        return pfns, max(1, len(pfns))

    def _release(self, request: ZoneFree, wait: int) -> tuple[None, int]:
        self.allocator.free_bulk((pfn, request.order) for pfn in request.pfns)
        self._account(request.requester, -(len(request.pfns) << request.order))
        self.log.debug(
            "zone_free",
            requester=request.requester,
            order=request.order,
            blocks=len(request.pfns),
            pfns=request.pfns,
            wait_ns=wait,
            queued=self.lock.waiting,
        )
        return None, len(request.pfns)

    def _work(self, request: ZoneWork, wait: int) -> tuple[object, int]:
        """A hinting step under the lock: isolation or put-back decided by a pure policy."""
        result, examined = request.work(self.allocator)
        self.peak_isolated_pages = max(self.peak_isolated_pages, self.allocator.isolated_pages)
        self.log.debug(
            "zone_work",
            requester=request.requester,
            examined=examined,
            isolated_pages=self.allocator.isolated_pages,
            wait_ns=wait,
            queued=self.lock.waiting,
        )
        return result, max(1, examined)

    _apply: ClassVar[dict[type, Callable[[Any, Any, int], tuple[Any, int]]]] = {
        ZoneAlloc: _allocate,
        ZoneFree: _release,
        ZoneWork: _work,
    }

    def utilisation(self, elapsed_ns: int) -> float:
        """Fraction of ``elapsed_ns`` the lock was held."""
        return self.hold_total_ns / elapsed_ns if elapsed_ns else 0.0
