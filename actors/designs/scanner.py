"""``scanner``: Duyck's April 2019 proposal, the seed thread's "simple scanner".

Wake at 2x a batch of freed pages not yet hinted (``nr_freed`` against its value at the last
hint), isolate non-offline blocks of MAX_ORDER-1 and MAX_ORDER-2 up to 64 MiB, mark them offline
and enqueue them at the tail on return; stop when a full set cannot be filled (a NIC Rx softirq).
"""

from __future__ import annotations

from typing import Any

import attrs

from pagehint.protocol.units import PAGE_SIZE, Bytes, format_size, pages

from ..mm.buddy import BuddyAllocator
from .base import Batch, Block, DesignConfig, Limits, Policy


@attrs.frozen
class ScannerConfig(DesignConfig):
    batch: Bytes = Bytes(64 << 20)
    """Most memory isolated at once (the seed's 64 MiB); the scanner wakes at twice this."""


class ScannerPolicy(Policy):
    """Duyck's scanner from the seed thread: a NAPI-style worker over a high-water mark."""

    name = "scanner"
    description = (
        "the seed's proposal: wake at 2x a batch of freed, unhinted pages, isolate MAX_ORDER-1 "
        "and -2 blocks up to the batch, offline and tail-enqueue on return"
    )
    Config = ScannerConfig
    excludes_shuffle = (
        "its offline pages are enqueued at the tail of their free list so that allocation takes "
        "the others first; shuffling scatters them (the seed thread: 'make the features "
        "mutually exclusive')"
    )
    returns_memory = True

    @classmethod
    def default_min_order(cls, max_order: int, pageblock_order: int) -> int:
        return max_order - 2

    @classmethod
    def limits(
        cls, config: DesignConfig, max_order: int, pageblock_order: int, host_batch: int
    ) -> Limits:
        """A batch the host supplies replaces the scanner's own page budget, not its entries."""
        assert isinstance(config, ScannerConfig)
        limits = super().limits(config, max_order, pageblock_order, 0)
        budget = pages(host_batch or config.batch)
        if host_batch:
            budget = max(1 << limits.min_order, budget)
        return attrs.evolve(limits, page_limit=budget)

    @classmethod
    def check(cls, config: Any, limits: Limits) -> list[str]:
        smallest = PAGE_SIZE << limits.min_order
        if config.batch < smallest:
            return [
                f"policy.batch: {format_size(config.batch)} is smaller than one block of the "
                f"smallest hinted order ({format_size(smallest)})"
            ]
        return []

    def __init__(self, limits: Limits, config: ScannerConfig) -> None:
        super().__init__(limits, config)
        assert limits.page_limit is not None, "the scanner's limits carry its page budget"
        self.batch_pages = limits.page_limit  # the most isolated at once: 64 MiB, or the host's
        self.nr_freed = 0  # pages freed at the hinted orders (Duyck's nr_freed)
        self.nr_freed_at_last_hint = 0
        self.awake = False

    def fill_ratio(self, batch: Batch) -> float:
        return min(1.0, max(len(batch.blocks) / self.capacity, batch.pages / self.batch_pages))

    def on_free(self, pfn: int, order: int, requester: str) -> bool:
        if order < self.min_order:
            return False
        self.nr_freed += 1 << order
        if self.awake or self.nr_freed - self.nr_freed_at_last_hint < 2 * self.batch_pages:
            return False
        self.awake = True  # the interrupt fires once; the worker polls until it runs dry
        return True

    def fill(self, allocator: BuddyAllocator) -> Batch:
        # Offline (reported) blocks are aggregated at the tail, so a head walk that meets one
        # has seen every unreported block of that order.
        blocks: list[Block] = []
        examined = 0
        room_pages = self.batch_pages
        for order in range(self.max_order - 1, self.min_order - 1, -1):
            pfn = allocator.first_free(order)
            while pfn is not None and room_pages >= 1 << order and len(blocks) < self.capacity:
                following = allocator.next_free(pfn)
                examined += 1
                if allocator.is_reported(pfn) or not allocator.isolate(pfn, order):
                    break
                blocks.append((pfn, order))
                room_pages -= 1 << order
                pfn = following
        self.nr_freed_at_last_hint = self.nr_freed
        full = room_pages < 1 << self.min_order or len(blocks) == self.capacity
        return Batch(tuple(blocks), examined, last=not full)

    def drain(self, allocator: BuddyAllocator, batch: Batch, reported: bool) -> None:
        for pfn, order in batch.blocks:  # mark offline, enqueue at the tail
            allocator.putback(pfn, order, reported=reported, to_tail=reported)

    def end_pass(self) -> bool:
        self.awake = False  # re-armed: the next 2x high-water mark wakes it again
        return False
