"""Hinting policies: each design's decisions as a pure class, driven by the hinting worker.

Every method that touches the allocator is called by the worker *under the zone lock* (the
worker sends it to the zone actor as a ``ZoneWork``), so a policy is plain synchronous code:
what to record when a block is freed and whether that wakes the worker, which blocks to isolate
for the next report, and how to put them back when the host has answered.

The designs, with their sources in the kernel notes and the seed thread:

- ``none``: no hinting, the baseline.
- ``scanner``: Duyck's April 2019 proposal (the seed): wake at 2x a batch of freed pages not yet
  hinted (``nr_freed`` against its value at the last hint), isolate non-offline blocks of
  MAX_ORDER-1 and MAX_ORDER-2 up to 64 MiB, mark them offline and enqueue them at the tail on
  return; stop when a full set cannot be filled (a NIC Rx softirq).
- ``page_reporting``: Linux 5.7 ``mm/page_reporting.c``: IDLE/REQUESTED/ACTIVE, a 2 s delayed
  pass, capacity 32, pageblock order and up, a budget per free list, list rotation, the zone
  watermark gate, the lock dropped while the host works; 5.10 tail placement as an option.
- ``percpu_capture``: Nitesh v9: per-CPU arrays of freed MAX_ORDER-1 blocks, hinting at 128
  captured, two allocations per hint, asynchronous host.
- ``bitmap``: Nitesh v11/v12: a per-zone bitmap at MAX_ORDER-2 set after merge, a threshold-
  triggered worker, synchronous reports of 16.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from .buddy import BlockState, BuddyAllocator

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


class ScannerPolicy(Policy):
    """Duyck's scanner from the seed thread: a NAPI-style worker over a high-water mark."""

    name = "scanner"

    def __init__(
        self,
        capacity: int,
        min_order: int,
        max_order: int,
        delay_ns: int = 0,
        *,
        batch_pages: int = 16384,
    ) -> None:
        super().__init__(capacity, min_order, max_order, delay_ns)
        self.batch_pages = batch_pages  # 64 MiB: the most isolated at once
        self.nr_freed = 0  # pages freed at the hinted orders (Duyck's nr_freed)
        self.nr_freed_at_last_hint = 0
        self.awake = False

    def use_host_batch(self, pages: int) -> None:
        self.batch_pages = max(1 << self.min_order, pages)

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


IDLE, REQUESTED, ACTIVE = "idle", "requested", "active"


class PageReportingPolicy(Policy):
    """Linux 5.7+ free page reporting (mm/page_reporting.c) for one zone."""

    name = "page_reporting"

    def __init__(
        self,
        capacity: int,
        min_order: int,
        max_order: int,
        delay_ns: int = 2_000_000_000,
        *,
        tail_placement: bool = False,
    ) -> None:
        super().__init__(capacity, min_order, max_order, delay_ns)
        self.tail_placement = tail_placement  # 5.10: FPI_TO_TAIL on putback
        self.state = IDLE
        self._order = min_order
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


class PercpuCapturePolicy(Policy):
    """Nitesh v9: per-CPU arrays captured at free time, hinted when 128 are captured."""

    name = "percpu_capture"
    synchronous = False
    allocations_per_report = 2  # "2 allocations that have to occur every time we provide a hint"

    def __init__(
        self,
        capacity: int,
        min_order: int,
        max_order: int,
        delay_ns: int = 0,
        *,
        array_size: int = 256,
        threshold: int = 128,
    ) -> None:
        super().__init__(capacity, min_order, max_order, delay_ns)
        self.array_size = array_size
        self.threshold = threshold
        self.arrays: dict[str, list[Block]] = {}
        self._ready: list[str] = []  # CPUs whose array reached the threshold, in order

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
        while self._ready:
            cpu = self._ready[0]
            array = self.arrays[cpu]
            captured = sorted(array[: self.capacity])
            del array[: self.capacity]
            if len(array) < self.threshold:
                self._ready.pop(0)
            blocks: list[Block] = []
            for pfn, order in captured:
                block = allocator.block_at(pfn)
                # Still free at the captured order (it may since have been allocated or merged).
                still_free = block.state is BlockState.FREE and not block.reported
                same_block = (block.pfn, block.order) == (pfn, order)
                if same_block and still_free and allocator.isolate(pfn, order):
                    blocks.append((pfn, order))
            if blocks:
                return Batch(tuple(blocks), len(captured), last=not self._ready)
        return Batch((), 0, last=True)


class BitmapPolicy(Policy):
    """Nitesh v11/v12: a zone bitmap at MAX_ORDER-2 granularity, set after merge."""

    name = "bitmap"

    def __init__(
        self,
        capacity: int,
        min_order: int,
        max_order: int,
        delay_ns: int = 0,
        *,
        threshold: int = 16,
    ) -> None:
        super().__init__(capacity, min_order, max_order, delay_ns)
        self.threshold = threshold
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
