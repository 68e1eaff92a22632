"""What every hinting design decides, and the ``none`` design (no hinting) itself.

Every method that touches the allocator is called by the worker *under the zone lock* (the
worker sends it to the zone actor as a ``ZoneWork``), so a policy is plain synchronous code:
what to record when a block is freed and whether that wakes the worker, which blocks to isolate
for the next report, and how to put them back when the host has answered. ``Policy`` itself is
``none``: it never wakes the worker.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from ..mm.buddy import BuddyAllocator

Block = tuple[int, int]  # (pfn, order)


@attrs.frozen
class Batch:
    """Blocks isolated for one report, and what it took to find them."""

    blocks: tuple[Block, ...]
    examined: int  # list entries looked at under the lock (the lock hold cost)
    last: bool  # the pass ends after this report

    @property
    def pages(self) -> int:
        return sum(1 << order for _, order in self.blocks)


class Policy:
    """The decisions of one hinting design. Subclasses override what differs."""

    name: ClassVar[str] = "none"
    synchronous: ClassVar[bool] = True  # wait for the host's ack before the next report
    allocations_per_report: ClassVar[int] = 0  # pages allocated (and freed) per report

    def __init__(self, capacity: int, min_order: int, max_order: int, delay_ns: int = 0) -> None:
        self.capacity = capacity
        self.min_order = min_order
        self.max_order = max_order
        self.delay_ns = delay_ns
        self.lost_hints = 0  # frees a design meant to hint but had no room to record

    @property
    def enabled(self) -> bool:
        return type(self) is not Policy

    def use_host_batch(self, pages: int) -> None:
        """The host supplied the batch size (Tsirkin's suggestion in the seed thread)."""
        self.capacity = max(1, pages >> self.min_order)

    def fill_ratio(self, batch: Batch) -> float:
        """How full a report is, by what limits this design's reports: here, entries."""
        return len(batch.blocks) / self.capacity

    def on_free(self, pfn: int, order: int, requester: str) -> bool:
        """A block landed on a free list (after merging). True: wake the worker."""
        return False

    def begin_pass(self, allocator: BuddyAllocator) -> None:
        """The worker starts a pass (after its delay)."""

    def fill(self, allocator: BuddyAllocator) -> Batch:
        """Isolate the next report's blocks. ``last`` ends the pass."""
        return Batch((), 0, True)

    def drain(self, allocator: BuddyAllocator, batch: Batch, reported: bool) -> None:
        """Put a report's blocks back. ``reported`` is False after a failed or reset report."""
        for pfn, order in batch.blocks:
            allocator.putback(pfn, order, reported=reported)

    def end_pass(self) -> bool:
        """The pass is over. True: start another pass (the worker was re-armed)."""
        return False
