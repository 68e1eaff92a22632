"""The zone-lock actor: the only way to the buddy allocator.

The actor handles one request at a time, and spends the lock's hold time (from the cost model)
while handling it; everyone else's request waits in its mailbox. That *is* the zone lock:
contention is not computed from a formula, it is the queue that forms under load. For every
request the zone records how long the requester waited, how long the lock was held and how many
requests were queued behind it, by requester.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from pagehint.protocol.messages import ZoneAlloc, ZoneFree, ZoneWork
from pagehint.runtime import Actor, Histogram, handles

from .buddy import BuddyAllocator
from .costs import Costs

FreeHook = Callable[[int, int, str], None]


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
    """Owns one ``BuddyAllocator``; each message is one acquisition of the zone lock."""

    default_mailbox_size = 1024

    def __init__(self, name: str, allocator: BuddyAllocator, costs: Costs) -> None:
        super().__init__(name)
        self.allocator = allocator
        self.costs = costs
        self.by_requester: dict[str, LockStats] = {}  # by requester class: vcpu, worker
        self.hold_total_ns = 0
        self.failed_allocations = 0
        self.false_ooms = 0
        self.peak_isolated_pages = 0
        # Pages each requester holds from the zone, changed in the same step as the allocator:
        # the ledger that page conservation is checked against.
        self.held_by: dict[str, int] = {}
        self._free_hooks: list[FreeHook] = []
        allocator.on_free = self._notify_free

    # -- hooks for hinting ---------------------------------------------------------------
    def add_free_hook(self, hook: FreeHook) -> None:
        """Call ``hook(pfn, order, requester)`` for each block freed (after merging), under
        the lock; ``requester`` is who freed it (the CPU, for per-CPU designs)."""
        self._free_hooks.append(hook)

    def _notify_free(self, pfn: int, order: int) -> None:
        current = self.current_message
        requester = current.requester if isinstance(current, ZoneFree | ZoneWork) else "boot"
        for hook in self._free_hooks:
            hook(pfn, order, requester)

    # -- the lock ------------------------------------------------------------------------
    def _acquired(self, requester: str, sent_ns: int) -> tuple[LockStats, int]:
        wait = self.now_ns - sent_ns
        group = requester_group(requester)
        stats = self.by_requester.get(group)
        if stats is None:
            stats = self.by_requester[group] = LockStats()
        stats.wait_ns.record(wait)
        stats.queue_depth.record(self.stats.depth)  # requests still queued behind this one
        return stats, wait

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

    async def _hold(self, stats: LockStats, blocks: int) -> None:
        hold = self.costs.lock_hold_ns(blocks)
        stats.hold_ns.record(hold)
        self.hold_total_ns += hold
        await self.sleep_ns(hold)

    @handles(ZoneAlloc)
    async def allocate(self, request: ZoneAlloc) -> tuple[int, ...]:
        stats, wait = self._acquired(request.requester, request.sent_ns)
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
            self.false_ooms += false_oom
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
            queued=self.stats.depth,
        )
        await self._hold(stats, max(1, len(pfns)))
        return pfns

    @handles(ZoneFree)
    async def release(self, request: ZoneFree) -> None:
        stats, wait = self._acquired(request.requester, request.sent_ns)
        self.allocator.free_bulk((pfn, request.order) for pfn in request.pfns)
        self._account(request.requester, -(len(request.pfns) << request.order))
        self.log.debug(
            "zone_free",
            requester=request.requester,
            order=request.order,
            blocks=len(request.pfns),
            pfns=request.pfns,
            wait_ns=wait,
            queued=self.stats.depth,
        )
        await self._hold(stats, len(request.pfns))

    @handles(ZoneWork)
    async def work(self, request: ZoneWork) -> object:
        """A hinting step under the lock: isolation or put-back decided by a pure policy."""
        stats, wait = self._acquired(request.requester, request.sent_ns)
        result, examined = request.work(self.allocator)
        self.peak_isolated_pages = max(self.peak_isolated_pages, self.allocator.isolated_pages)
        self.log.debug(
            "zone_work",
            requester=request.requester,
            examined=examined,
            isolated_pages=self.allocator.isolated_pages,
            wait_ns=wait,
            queued=self.stats.depth,
        )
        await self._hold(stats, max(1, examined))
        return result

    def utilisation(self, elapsed_ns: int) -> float:
        """Fraction of ``elapsed_ns`` the lock was held."""
        return self.hold_total_ns / elapsed_ns if elapsed_ns else 0.0
