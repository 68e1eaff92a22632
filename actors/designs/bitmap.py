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

    @classmethod
    def default_min_order(cls, max_order: int, pageblock_order: int) -> int:
        return max_order - 2

    def __init__(self, limits: Limits, config: BitmapConfig) -> None:
        super().__init__(limits, config)
        self.threshold = config.threshold
        self.bits: set[int] = set()  # chunk indices (pfn >> min_order) with the bit set
        self.requested = False
        self._scan: list[int] = []

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

    def fill(self, allocator: BuddyAllocator) -> Batch:
        blocks: list[Block] = []
        examined = 0
        while self._scan and len(blocks) < self.capacity:
            chunk = self._scan.pop()
            self.bits.discard(chunk)  # bits are cleared when the page is hinted (or gone)
            examined += 1
            pfn = chunk << self.min_order
            block = allocator.block_at(pfn)
            if block.pfn != pfn or block.state is not BlockState.FREE or block.reported:
                continue
            if block.order >= self.min_order and allocator.isolate(pfn, block.order):
                blocks.append((pfn, block.order))
        return Batch(tuple(blocks), examined, last=not self._scan)

    def end_pass(self) -> bool:
        self.requested = len(self.bits) >= self.threshold
        return self.requested
