"""``percpu_capture``: Nitesh Narayan Lal's v9 series.

Per-CPU arrays of freed MAX_ORDER-1 blocks, hinting at 128 captured, one descriptor per report
(several in flight), two allocations per hint, an asynchronous host.
"""

from __future__ import annotations

import attrs

from ..mm.buddy import BlockState, BuddyAllocator
from .base import Batch, Block, DesignConfig, Limits, Policy


@attrs.frozen
class PercpuCaptureConfig(DesignConfig):
    threshold: int = 128
    """Captured entries in a CPU's array that start hinting (v9's HINTING_THRESHOLD)."""
    array_size: int = 256
    """Entries per CPU array (MAX_FGPT_ENTRIES); frees beyond it are lost hints."""


class PercpuCapturePolicy(Policy):
    """Nitesh v9: per-CPU arrays captured at free time, hinted when 128 are captured."""

    name = "percpu_capture"
    description = (
        "Nitesh v9: per-CPU arrays of freed MAX_ORDER-1 blocks captured at free time, hinted "
        "when a threshold is captured, two allocations per report, an asynchronous host"
    )
    Config = PercpuCaptureConfig
    default_capacity = 128  # a hint round takes what reached HINTING_THRESHOLD
    returns_memory = True
    synchronous = False
    allocations_per_report = 2  # "2 allocations that have to occur every time we provide a hint"
    runs_inline = True  # v9 captures and hints from free_one_page/free_pcppages_bulk
    sorts_reports = True  # the captured array is sorted before it is hinted

    def __init__(self, limits: Limits, config: PercpuCaptureConfig) -> None:
        super().__init__(limits, config)
        self.array_size = config.array_size
        self.threshold = config.threshold
        self.arrays: dict[str, list[Block]] = {}
        self._ready: list[str] = []  # CPUs whose array reached the threshold, in order
        self._queue: list[Block] = []  # the array being hinted, a block per report

    def on_free(self, pfn: int, order: int, requester: str) -> bool:
        if order < self.min_order:
            return False
        array = self.arrays.setdefault(requester, [])
        if len(array) >= self.array_size:
            self.lost_hints += 1  # the buffer overran: this hint is lost
            return False
        array.append((pfn, order))
        if len(array) == self.threshold:
            self._ready.append(requester)
            return True
        return False

    def fill(self, allocator: BuddyAllocator) -> Batch:
        """One block per report: v9 hands the host one descriptor per hint, asynchronously,
        so several reports are in flight at once. A CPU's array that reached the threshold
        is taken whole and sorted, then hinted a block at a time."""
        while self._queue or self._ready:
            if not self._queue:
                cpu = self._ready[0]
                array = self.arrays[cpu]
                self._queue = sorted(array[: self.capacity], reverse=True)  # popped from the end
                del array[: self.capacity]
                if len(array) < self.threshold:
                    self._ready.pop(0)
            pfn, order = self._queue.pop()
            block = allocator.block_at(pfn)
            # Still free at the captured order (it may since have been allocated or merged).
            still_free = block.state is BlockState.FREE and not block.reported
            same_block = (block.pfn, block.order) == (pfn, order)
            if same_block and still_free and allocator.isolate(pfn, order):
                return Batch(((pfn, order),), 1, last=not (self._queue or self._ready))
        return Batch((), 0, last=True)
