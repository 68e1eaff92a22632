"""``bitmap``: Nitesh Narayan Lal's v11/v12 series.

A per-zone bitmap at MAX_ORDER-2 granularity set after merge, a threshold-triggered worker,
synchronous reports of 16.
"""

from __future__ import annotations

import attrs

from ..mm.buddy import BlockState, BuddyAllocator
from .base import Batch, Block, DesignConfig, Limits, Policy


@attrs.frozen
class BitmapConfig(DesignConfig):
    threshold: int = 16
    """Set bits that wake the worker (v11 names no value: one report's worth,
    PAGE_REPORTING_MAX_PAGES)."""


class BitmapPolicy(Policy):
    """Nitesh v11/v12: a zone bitmap at MAX_ORDER-2 granularity, set after merge."""

    name = "bitmap"
    description = (
        "Nitesh v11/v12: a zone bitmap at MAX_ORDER-2 set after merge, a threshold-triggered "
        "worker, synchronous reports of 16"
    )
    Config = BitmapConfig
    default_capacity = 16  # v12's PAGE_REPORTING_MAX_PAGES
    returns_memory = True
    budgeted = False  # v12 walks the whole bitmap; no per-wake-up budget

    @classmethod
    def default_min_order(cls, max_order: int, pageblock_order: int) -> int:
        return max_order - 2

    def __init__(self, limits: Limits, config: BitmapConfig) -> None:
        super().__init__(limits, config)
        self.threshold = config.threshold
        self.bits: set[int] = set()  # chunk indices (pfn >> min_order) with the bit set
        self.requested = False
        self._scan: list[int] = []
        self._in_report = 0  # entries of the report being filled

    def on_free(self, pfn: int, order: int, requester: str) -> bool:
        if order < self.min_order:
            return False
        self.bits.add(pfn >> self.min_order)
        if self.requested or len(self.bits) < self.threshold:
            return False
        self.requested = True
        return True

    def begin_pass(self, allocator: BuddyAllocator) -> None:
        self._scan = sorted(self.bits, reverse=True)  # walked in pfn order, popped from the end
        self._in_report = 0

    def fill(self, allocator: BuddyAllocator) -> Batch:
        """One bit under one hold of the zone lock, as v12's scan_zone_bitmap takes and drops
        the lock per set bit (Duyck's review: "bouncing the zone lock once per page"); a
        report is whole at capacity or at the end of the bitmap."""
        if not self._scan:
            return Batch((), 0, last=True)
        chunk = self._scan.pop()
        self.bits.discard(chunk)  # bits are cleared when the page is hinted (or gone)
        pfn = chunk << self.min_order
        block = allocator.block_at(pfn)
        taken: tuple[Block, ...] = ()
        still_free = block.pfn == pfn and block.state is BlockState.FREE and not block.reported
        if still_free and block.order >= self.min_order and allocator.isolate(pfn, block.order):
            taken = ((pfn, block.order),)
            self._in_report += 1
        whole = self._in_report == self.capacity
        if whole:
            self._in_report = 0
        return Batch(taken, 1, last=not self._scan, complete=whole)

    def end_pass(self) -> bool:
        """Not re-armed: v12's worker runs again only when new frees set the threshold of
        bits (on_free)."""
        self.requested = False
        return False
