"""``page_reporting``: Linux 5.7+ free page reporting, ``mm/page_reporting.c``.

IDLE/REQUESTED/ACTIVE, a 2 s delayed pass, capacity 32, pageblock order and up, a budget per
free list, list rotation, the zone watermark gate, the lock dropped while the host works; the
putback at the head (5.7) or the tail (5.10, FPI_TO_TAIL) as the guest kernel does.
"""

from __future__ import annotations

from typing import Any

import attrs

from pagehint.runtime import NS_PER_S

from ..mm.buddy import BuddyAllocator
from ..mm.kernels import KernelProfile
from .base import Batch, Block, DesignConfig, Limits, Policy


@attrs.frozen
class PageReportingConfig(DesignConfig):
    tail_placement: bool | None = None
    """Put reported pages back at the tail of their free list (FPI_TO_TAIL); unset: as the
    guest kernel does (5.7: head, by the ordinary rule; 5.10 and later: tail)."""


def _isolate_from_list(
    allocator: BuddyAllocator, order: int, room: int
) -> tuple[list[Block], int, int | None]:
    """Walk ``free_area[order]`` from its head, isolating up to ``room`` unreported blocks.

    Returns the blocks, how many list entries were examined, and the first unreported block
    after them (where the walk stopped: None at the end of the list). The walk also stops at
    the first block the watermark gate refuses.
    """
    taken: list[Block] = []
    examined = 0
    pfn = allocator.first_free(order)
    while pfn is not None:
        if allocator.is_reported(pfn):
            examined += 1
            pfn = allocator.next_free(pfn)
            continue
        if len(taken) == room:
            break
        following = allocator.next_free(pfn)
        examined += 1
        if not allocator.isolate(pfn, order):
            return taken, examined, None
        taken.append((pfn, order))
        pfn = following
    return taken, examined, pfn


IDLE, REQUESTED, ACTIVE = "idle", "requested", "active"


class PageReportingPolicy(Policy):
    """Linux 5.7+ free page reporting (mm/page_reporting.c) for one zone."""

    name = "page_reporting"
    description = (
        "Linux 5.7+ free page reporting: IDLE/REQUESTED/ACTIVE, a delayed pass over the free "
        "lists from pageblock order up, a budget per list, the lock dropped while the host works"
    )
    Config = PageReportingConfig
    default_delay_ns = 2 * NS_PER_S  # PAGE_REPORTING_DELAY (2 * HZ)
    returns_memory = True
    kernel_knobs = ("tail_placement",)
    # page_reporting_process has no per-wake-up cap: its own limit is the budget per free list
    # (DIV_ROUND_UP(nr_free, capacity * 16) reports) and a re-request after the delay.
    budgeted = False

    @classmethod
    def kernel_defaults(cls, config: PageReportingConfig, kernel: KernelProfile) -> Any:
        if config.tail_placement is None:
            return attrs.evolve(config, tail_placement=kernel.putback_to_tail)
        return config

    @classmethod
    def default_min_order(cls, max_order: int, pageblock_order: int) -> int:
        return pageblock_order  # page_reporting_order defaults to pageblock_order

    def __init__(self, limits: Limits, config: PageReportingConfig) -> None:
        super().__init__(limits, config)
        self.tail_placement = bool(config.tail_placement)  # 5.10: FPI_TO_TAIL on putback
        self.state = IDLE
        self._order = limits.min_order
        self._budget: int | None = None
        self._pending: list[Block] = []  # the scatterlist, filled across lists and orders

    def request(self) -> bool:
        """__page_reporting_request: True when the caller must schedule the delayed work."""
        if self.state == REQUESTED:
            return False
        previous, self.state = self.state, REQUESTED
        return previous == IDLE

    def on_free(self, pfn: int, order: int, requester: str) -> bool:
        return order >= self.min_order and self.request()

    def on_register(self) -> bool:
        return self.request()  # page_reporting_register(): "begin initial flush of zones"

    def begin_pass(self, allocator: BuddyAllocator) -> None:
        self.state = ACTIVE
        self._order = self.min_order
        self._budget = None
        self._pending = []
        low_gate = allocator.watermarks.low + (self.capacity << self.min_order)
        if allocator.free_pages < low_gate:  # page_reporting_process_zone's zone gate
            self._order = self.max_order

    def fill(self, allocator: BuddyAllocator) -> Batch:
        examined = 0
        while self._order < self.max_order:
            order = self._order
            if self._budget is None:
                nr_free = allocator.nr_free(order)
                self._budget = -(-nr_free // (self.capacity * 16))
            if self._budget < 0:
                if allocator.nr_unreported(order):
                    self.state = REQUESTED  # more to do: the worker runs again after the delay
                self._next_order()
                continue
            room = self.capacity - len(self._pending)
            taken, looked, stopped_at = _isolate_from_list(allocator, order, room)
            examined += looked
            self._pending.extend(taken)
            if len(self._pending) == self.capacity:
                self._budget -= 1
                # list_rotate_to_front: the next pass over this list starts where this stopped.
                if stopped_at is not None and stopped_at != allocator.first_free(order):
                    allocator.rotate_to_front(order, stopped_at)
                return Batch(tuple(self._take_pending()), examined, last=False)
            self._next_order()
        # End of the zone: report the leftover entries.
        return Batch(tuple(self._take_pending()), examined, last=True)

    def _next_order(self) -> None:
        self._order += 1
        self._budget = None

    def _take_pending(self) -> list[Block]:
        pending, self._pending = self._pending, []
        return pending

    def drain(self, allocator: BuddyAllocator, batch: Batch, reported: bool) -> None:
        to_tail = True if self.tail_placement else None
        for pfn, order in batch.blocks:
            allocator.putback(pfn, order, reported=reported, to_tail=to_tail)

    def end_pass(self) -> bool:
        # atomic_cmpxchg(ACTIVE -> IDLE); a request during the pass re-arms the work.
        if self.state == ACTIVE:
            self.state = IDLE
            return False
        return True
