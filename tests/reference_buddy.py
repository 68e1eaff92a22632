"""Reference model for the tests, not project code: ``actors/mm/buddy.py`` as it was before
issue 18 kept free top-order blocks in arrays (every block a dict entry), copied on purpose.

``test_buddy_reference.py`` drives it and the current allocator side by side and requires the
same results, free lists and flags after every step. Keep it as it is: a twin by design, it is
what "behaves exactly as before" means. Its original docstring follows.

A pure model of one Linux zone's buddy allocator (mm/page_alloc.c), sized by blocks, not pages.

The zone actor owns one `BuddyAllocator` and is its only user; the allocator itself knows nothing
of time, locks or trio.  It follows Linux 5.7-5.10 where the hinting designs depend on it:

* ``alloc`` is ``__rmqueue_smallest``: the head block of the smallest non-empty order >= the
  request, split by ``expand()`` with the upper halves put back at the head of their lists;
* ``free`` is ``__free_one_page``: merge with free buddies up to ``max_order - 1``, then head or
  tail placement (``FPI_TO_TAIL``, ``shuffle_pick_tail`` or ``buddy_merge_likely``), then the
  free hook (``page_reporting_notify_free``);
* ``isolate`` / ``putback`` are ``__isolate_free_page`` and ``__putback_isolated_page`` plus the
  ``PageReported`` step of ``page_reporting_drain``;
* removing a block from a free list for any reason (allocation, split, merge, isolation) clears
  its reported flag, as ``del_page_from_free_list`` does.

Memory grows with the number of blocks (free, allocated or isolated), never with the number of
pages: every per-block fact lives in dicts keyed by the block's first pfn, so a 1 TiB idle zone
is 2**18 blocks, not 2**28 pages.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Iterable, Iterator
from typing import NoReturn

import attrs

__all__ = [
    "AllocatorError",
    "BadFreeError",
    "Block",
    "BlockState",
    "BuddyAllocator",
    "DoubleFreeError",
    "FreeHook",
    "InvalidBlockError",
    "InvariantViolation",
    "NotAllocatedError",
    "NotFreeError",
    "NotIsolatedError",
    "Watermarks",
    "WrongOrderError",
]

FreeHook = Callable[[int, int], None]
"""Called as ``hook(pfn, order)`` with the block a free ended in, after merging and placement."""

# Per-block state is one small int per block: ``order << 2 | kind``.  Small ints are cached by
# CPython, so a block costs a dict slot and no object.  The kinds are chosen so that "free, with
# or without the reported flag, at order o" is the single test ``v | _REPORTED == o << 2 | 3``.
_ALLOCATED = 0
_FREE = 1
_REPORTED = 2  # only ever set together with _FREE
_ISOLATED = 2  # on its own: isolated, off every list
_FREE_REPORTED = _FREE | _REPORTED
_KIND_MASK = 3
_NONE = -1  # head of an empty list


class AllocatorError(Exception):
    """Base of every error the allocator raises: a caller broke the allocator's contract."""


class InvalidBlockError(AllocatorError, ValueError):
    """An order outside 0..max_order-1, or a query about a pfn outside the zone."""


class BadFreeError(AllocatorError):
    """A free that would corrupt the zone; the allocator is left unchanged."""


class DoubleFreeError(BadFreeError):
    """The pages being freed are already free (or isolated): a double free."""


class NotAllocatedError(BadFreeError):
    """The pfn was never handed out as the start of a block."""


class WrongOrderError(BadFreeError):
    """The block is allocated, but at a different order than the one being freed."""


class NotFreeError(AllocatorError):
    """Isolation or rotation asked for a block that is not free at that order."""


class NotIsolatedError(AllocatorError):
    """A putback of a block that is not isolated at that order."""


class InvariantViolation(AllocatorError):
    """``check_invariants`` found the allocator's books inconsistent (a bug in the allocator)."""


class BlockState(enum.Enum):
    """Where a block is: handed out, on a free list (PageBuddy), or isolated for a report."""

    ALLOCATED = "allocated"
    FREE = "free"
    ISOLATED = "isolated"


_STATE_OF_KIND = {
    _ALLOCATED: BlockState.ALLOCATED,
    _FREE: BlockState.FREE,
    _FREE_REPORTED: BlockState.FREE,
    _ISOLATED: BlockState.ISOLATED,
}


@attrs.frozen
class Block:
    """A snapshot of one block, for queries and tests; the allocator never stores these."""

    pfn: int
    order: int
    state: BlockState
    reported: bool = False

    @property
    def nr_pages(self) -> int:
        return 1 << self.order

    @property
    def end(self) -> int:
        """One past the block's last pfn."""
        return self.pfn + (1 << self.order)


@attrs.frozen
class Watermarks:
    """A zone's min/low/high watermarks, in pages (``zone->_watermark[]``)."""

    min: int
    low: int
    high: int

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.min <= self.low <= self.high:
            raise ValueError(
                "watermarks must satisfy 0 <= min <= low <= high, got "
                f"min={self.min} low={self.low} high={self.high}"
            )

    @classmethod
    def linux_default(cls, total_pages: int, scale_factor: int = 10) -> Watermarks:
        """What ``init_per_zone_wmark_min`` + ``__setup_per_zone_wmarks`` give a lone zone.

        min_free_kbytes = int_sqrt(kbytes * 16) clamped to [128, 262144]; low and high add
        max(min / 4, pages * watermark_scale_factor / 10000) once and twice (factor 10 by
        default, vm.watermark_scale_factor).
        """
        total_kbytes = total_pages * 4
        min_free_kbytes = min(max(math.isqrt(total_kbytes * 16), 128), 262144)
        wmin = min_free_kbytes // 4
        step = max(wmin // 4, total_pages * scale_factor // 10000)
        return cls(min=wmin, low=wmin + step, high=wmin + 2 * step)


def _boot_blocks(total_pages: int, max_order: int) -> dict[int, list[int]]:
    """The zone carved into the largest naturally aligned blocks, ascending, per order."""
    top = max_order - 1
    size = 1 << top
    full = total_pages >> top
    per_order: dict[int, list[int]] = {}
    if full:
        per_order[top] = list(range(0, full * size, size))
    pfn = full * size
    for order in range(top - 1, -1, -1):
        if total_pages - pfn >= 1 << order:
            per_order[order] = [pfn]
            pfn += 1 << order
    return per_order


class BuddyAllocator:
    """One zone of ``total_pages`` 4 KiB pages managed as Linux's buddy allocator does.

    Free lists are intrusive circular doubly linked lists, one per order, kept in two dicts
    (``prev``/``next`` by pfn) and a head pfn per order: insertion at either end, removal and
    ``rotate_to_front`` are O(1), as with Linux's ``list_head``.
    """

    def __init__(
        self,
        total_pages: int,
        max_order: int = 11,
        pageblock_order: int = 9,
        watermarks: Watermarks | None = None,
        *,
        shuffle: bool = False,
        shuffle_order: int | None = None,
        rng: random.Random | None = None,
        on_free: FreeHook | None = None,
    ) -> None:
        if total_pages < 1:
            raise ValueError(f"total_pages must be >= 1, got {total_pages}")
        if max_order < 1:
            raise ValueError(f"max_order must be >= 1, got {max_order}")
        if pageblock_order < 0:
            raise ValueError(f"pageblock_order must be >= 0, got {pageblock_order}")
        if shuffle and rng is None:
            # A hidden default seed would make every run shuffle alike whatever its seed.
            raise ValueError("shuffle=True needs an rng derived from the run seed")
        self._total = total_pages
        self._max_order = max_order
        # Linux: pageblock_order = min(HUGETLB_PAGE_ORDER, MAX_ORDER - 1).
        self._pageblock_order = min(pageblock_order, max_order - 1)
        if watermarks is None:
            watermarks = Watermarks.linux_default(total_pages)
        self._watermarks = watermarks
        self._shuffle = shuffle
        # Linux shuffles only at SHUFFLE_ORDER = MAX_ORDER - 1 (mm/shuffle.h); lower orders
        # keep the buddy_merge_likely heuristic even with shuffling on.
        self._shuffle_order = max_order - 1 if shuffle_order is None else shuffle_order
        if not 0 <= self._shuffle_order < max_order:
            raise ValueError(f"shuffle_order must be in [0, {max_order}), got {shuffle_order}")
        self._rng = rng
        self.on_free = on_free

        self._blocks: dict[int, int] = {}  # first pfn -> order << 2 | kind, for every block
        self._next: dict[int, int] = {}  # free-list links, only for free blocks
        self._prev: dict[int, int] = {}
        self._head = [_NONE] * max_order
        self._nr_free = [0] * max_order
        self._nr_reported = [0] * max_order
        self._free_pages = 0
        self._allocated_pages = 0
        self._isolated_pages = 0
        self._reported_pages = 0
        self._boot()

    def _boot(self) -> None:
        """Free the whole zone at once, in bulk rather than block by block (2**18 at 1 TiB).

        Like memblock_free_all since 5.10 (tail placement in __free_pages_core), each list runs
        in ascending pfn order; with shuffling on, shuffle_zone() then permutes the shuffle orders.
        """
        for order, pfns in _boot_blocks(self._total, self._max_order).items():
            if self._shuffle and order >= self._shuffle_order:
                assert self._rng is not None
                self._rng.shuffle(pfns)
            # One list of int objects shared by all three dicts keeps boot memory per block low.
            self._blocks.update(dict.fromkeys(pfns, order << 2 | _FREE))
            self._next.update(zip(pfns, pfns[1:] + pfns[:1], strict=True))
            self._prev.update(zip(pfns, pfns[-1:] + pfns[:-1], strict=True))
            self._head[order] = pfns[0]
            self._nr_free[order] = len(pfns)
            self._free_pages += len(pfns) << order

    # ------------------------------------------------------------------ configuration and counts

    @property
    def total_pages(self) -> int:
        return self._total

    @property
    def max_order(self) -> int:
        """Orders run 0..max_order-1 (Linux's pre-6.4 exclusive MAX_ORDER)."""
        return self._max_order

    @property
    def pageblock_order(self) -> int:
        return self._pageblock_order

    @property
    def watermarks(self) -> Watermarks:
        return self._watermarks

    @property
    def free_pages(self) -> int:
        """Pages on the free lists (NR_FREE_PAGES): isolated pages are not counted."""
        return self._free_pages

    @property
    def allocated_pages(self) -> int:
        return self._allocated_pages

    @property
    def isolated_pages(self) -> int:
        return self._isolated_pages

    @property
    def reported_pages(self) -> int:
        """Free pages whose block carries the reported flag."""
        return self._reported_pages

    @property
    def stored_blocks(self) -> int:
        """How many blocks the allocator keeps state for: its memory cost, in blocks."""
        return len(self._blocks)

    def nr_free(self, order: int) -> int:
        """Blocks on ``free_area[order]`` (``area->nr_free``)."""
        self._check_order(order)
        return self._nr_free[order]

    def nr_unreported(self, order: int) -> int:
        """Free blocks of this order not yet reported: what a reporting pass would look at."""
        self._check_order(order)
        return self._nr_free[order] - self._nr_reported[order]

    # ------------------------------------------------------------------ free-list primitives

    def _push(self, pfn: int, order: int, tail: bool) -> None:
        """Put a block on ``free_area[order]`` (add_to_free_list{,_tail}), unreported."""
        head = self._head[order]
        if head == _NONE:
            self._next[pfn] = pfn
            self._prev[pfn] = pfn
            self._head[order] = pfn
        else:
            last = self._prev[head]
            self._next[pfn] = head
            self._prev[pfn] = last
            self._next[last] = pfn
            self._prev[head] = pfn
            if not tail:
                self._head[order] = pfn
        self._blocks[pfn] = order << 2 | _FREE
        self._nr_free[order] += 1
        self._free_pages += 1 << order

    def _pop(self, pfn: int, order: int, value: int) -> None:
        """Take a free block off its list (del_page_from_free_list), dropping its reported flag.

        ``value`` is the block's current ``_blocks`` entry; the caller rewrites or deletes it.
        """
        nxt = self._next.pop(pfn)
        prv = self._prev.pop(pfn)
        if nxt == pfn:
            self._head[order] = _NONE
        else:
            self._next[prv] = nxt
            self._prev[nxt] = prv
            if self._head[order] == pfn:
                self._head[order] = nxt
        self._nr_free[order] -= 1
        self._free_pages -= 1 << order
        if value & _REPORTED:
            self._nr_reported[order] -= 1
            self._reported_pages -= 1 << order

    def _check_order(self, order: int) -> None:
        if not 0 <= order < self._max_order:
            raise InvalidBlockError(f"order {order} is outside 0..{self._max_order - 1}")

    # ------------------------------------------------------------------ allocation

    def alloc(self, order: int, *, gate: int | None = None) -> int | None:
        """Allocate one block of ``2**order`` pages and return its pfn, or None.

        ``gate`` is a watermark in pages (callers pass ``watermarks.min`` for ordinary
        allocations): the allocation fails if it would leave fewer free pages than that, which is
        zone_watermark_ok's ``free - (2**order - 1) <= mark`` test.
        """
        self._check_order(order)
        if gate is not None and self._free_pages - (1 << order) < gate:
            return None
        return self._rmqueue_smallest(order)

    def alloc_blocks(self, pages: int, order: int) -> list[int]:
        """Blocks of ``order`` until ``pages`` are covered or the zone runs out (no gate).

        What a booted kernel already holds before any workload runs.
        """
        taken: list[int] = []
        while len(taken) << order < pages:
            pfn = self.alloc(order)
            if pfn is None:
                break
            taken.append(pfn)
        return taken

    def alloc_bulk(self, order: int, count: int, *, gate: int | None = None) -> list[int]:
        """Allocate up to ``count`` blocks at once (rmqueue_bulk refilling a per-CPU list).

        As in Linux, the watermark is checked once, for the one block the caller needed; the
        rest of the batch is taken while any block of that order or larger is free.
        """
        self._check_order(order)
        if count <= 0 or (gate is not None and self._free_pages - (1 << order) < gate):
            return []
        got: list[int] = []
        for _ in range(count):
            pfn = self._rmqueue_smallest(order)
            if pfn is None:
                break
            got.append(pfn)
        return got

    def _rmqueue_smallest(self, order: int) -> int | None:
        """__rmqueue_smallest + expand(): take a head block, split, upper halves to list heads."""
        head = self._head
        current = order
        while current < self._max_order:
            pfn = head[current]
            if pfn != _NONE:
                break
            current += 1
        else:
            return None
        self._pop(pfn, current, self._blocks[pfn])
        while current > order:
            current -= 1
            self._push(pfn + (1 << current), current, False)
        self._blocks[pfn] = order << 2 | _ALLOCATED
        self._allocated_pages += 1 << order
        return pfn

    # ------------------------------------------------------------------ freeing

    def free(
        self, pfn: int, order: int, *, to_tail: bool | None = None, notify: bool = True
    ) -> tuple[int, int]:
        """Free an allocated block (__free_one_page); returns the (pfn, order) it merged into.

        ``to_tail`` forces the placement (FPI_TO_TAIL); None lets Linux's rules choose.
        ``notify`` calls the free hook (False is FPI_SKIP_REPORT_NOTIFY).
        """
        if self._blocks.get(pfn) != order << 2 | _ALLOCATED:
            self._raise_bad_free(pfn, order)
        self._allocated_pages -= 1 << order
        merged = self._free_one(pfn, order, to_tail)
        if notify and self.on_free is not None:
            self.on_free(*merged)
        return merged

    def free_bulk(self, blocks: Iterable[tuple[int, int]], *, notify: bool = True) -> None:
        """Free many (pfn, order) blocks (free_pcppages_bulk draining a per-CPU list).

        The whole batch is checked before anything is freed, so a bad entry leaves the
        allocator unchanged.
        """
        batch = list(blocks)
        seen: set[int] = set()
        for pfn, order in batch:
            if pfn in seen:
                raise DoubleFreeError(f"double free of pfn {pfn} order {order}: twice in one batch")
            if self._blocks.get(pfn) != order << 2 | _ALLOCATED:
                self._raise_bad_free(pfn, order)
            seen.add(pfn)
        for pfn, order in batch:
            self._allocated_pages -= 1 << order
            merged = self._free_one(pfn, order, None)
            if notify and self.on_free is not None:
                self.on_free(*merged)

    def _free_one(self, pfn: int, order: int, to_tail: bool | None) -> tuple[int, int]:
        """Merge and place a block that the caller has already taken off its books."""
        blocks = self._blocks
        del blocks[pfn]
        top = self._max_order - 1
        while order < top:
            buddy = pfn ^ (1 << order)
            value = blocks.get(buddy, _ALLOCATED)
            if value | _REPORTED != order << 2 | _FREE_REPORTED:
                break  # not a free block (PageBuddy) of exactly this order
            self._pop(buddy, order, value)
            del blocks[buddy]
            pfn &= buddy
            order += 1
        if to_tail is None:
            if self._shuffle and order >= self._shuffle_order:
                assert self._rng is not None
                to_tail = self._rng.getrandbits(1) == 1  # shuffle_pick_tail
            elif order < self._max_order - 2:
                # buddy_merge_likely: if the buddy of the next-larger block is free, this block
                # may soon merge into it, so keep it at the tail, away from allocations.
                higher_buddy = (pfn & ~(1 << order)) ^ (1 << (order + 1))
                value = blocks.get(higher_buddy, _ALLOCATED)
                to_tail = value | _REPORTED == (order + 1) << 2 | _FREE_REPORTED
            else:
                to_tail = False
        self._push(pfn, order, to_tail)
        return pfn, order

    def _raise_bad_free(self, pfn: int, order: int) -> NoReturn:
        """Say precisely why freeing (pfn, order) is wrong; the slow path, off the hot one."""
        what = f"pfn {pfn} order {order}"
        if not 0 <= pfn < self._total:
            raise NotAllocatedError(f"free of {what}: pfn is outside the zone 0..{self._total - 1}")
        block = self.block_at(pfn)
        if block.state is not BlockState.ALLOCATED:
            raise DoubleFreeError(f"double free of {what}: {self._describe(pfn)}")
        if block.pfn == pfn:
            raise WrongOrderError(
                f"free of {what}: that block was allocated at order {block.order}"
            )
        raise NotAllocatedError(
            f"free of {what}: pfn was never allocated as a block; it lies inside the "
            f"allocated block at pfn {block.pfn} order {block.order}"
        )

    # ------------------------------------------------------------------ reporting support

    def isolate(self, pfn: int, order: int) -> bool:
        """Take a free block off its list for a report (__isolate_free_page).

        Refused, with nothing changed, unless ``zone_watermark_ok(zone, 0, min + 2**order)``,
        i.e. unless ``free_pages > min + 2**order``: reporting must not push the zone to OOM.
        """
        value = self._blocks.get(pfn)
        if value is None or value | _REPORTED != order << 2 | _FREE_REPORTED:
            raise NotFreeError(f"cannot isolate pfn {pfn} order {order}: {self._describe(pfn)}")
        if self._free_pages <= self._watermarks.min + (1 << order):
            return False
        self._pop(pfn, order, value)
        self._blocks[pfn] = order << 2 | _ISOLATED
        self._isolated_pages += 1 << order
        return True

    def putback(
        self,
        pfn: int,
        order: int,
        *,
        reported: bool,
        to_tail: bool | None = None,
        notify: bool = False,
    ) -> tuple[int, int]:
        """Return an isolated block (__putback_isolated_page, then page_reporting_drain).

        If ``reported`` and the block did not merge, it is marked reported; a merged block is
        left unreported so that a later pass reports it at its larger order.  Pass
        ``to_tail=True`` for 5.10+ (FPI_TO_TAIL); ``notify`` defaults off like 5.7+.
        Returns the (pfn, order) the block ended in.
        """
        if self._blocks.get(pfn) != order << 2 | _ISOLATED:
            raise NotIsolatedError(
                f"cannot put back pfn {pfn} order {order}: {self._describe(pfn)}"
            )
        self._isolated_pages -= 1 << order
        merged = self._free_one(pfn, order, to_tail)
        if reported and merged == (pfn, order):
            self._blocks[pfn] = order << 2 | _FREE_REPORTED
            self._nr_reported[order] += 1
            self._reported_pages += 1 << order
        if notify and self.on_free is not None:
            self.on_free(*merged)
        return merged

    def rotate_to_front(self, order: int, pfn: int) -> None:
        """Make ``free_area[order]`` start at ``pfn`` (list_rotate_to_front), in O(1)."""
        value = self._blocks.get(pfn)
        if value is None or value | _REPORTED != order << 2 | _FREE_REPORTED:
            raise NotFreeError(f"cannot rotate to pfn {pfn} order {order}: {self._describe(pfn)}")
        self._head[order] = pfn

    def is_reported(self, pfn: int) -> bool:
        """Whether the block containing ``pfn`` is free and carries the reported flag."""
        return self.block_at(pfn).reported

    # ------------------------------------------------------------------ queries

    def first_free(self, order: int) -> int | None:
        """The head of ``free_area[order]``, or None if the list is empty."""
        self._check_order(order)
        head = self._head[order]
        return None if head == _NONE else head

    def next_free(self, pfn: int) -> int | None:
        """The block after ``pfn`` on its free list, or None at the end (before the head).

        With ``first_free`` this is the ``list_for_each_entry_safe`` walk: fetch the next pfn
        before isolating the current one.
        """
        value = self._blocks.get(pfn)
        if value is None or not value & _FREE:
            raise NotFreeError(f"pfn {pfn} is not on a free list: {self._describe(pfn)}")
        nxt = self._next[pfn]
        return None if nxt == self._head[value >> 2] else nxt

    def iter_free(self, order: int) -> Iterator[int]:
        """The pfns on ``free_area[order]`` from head to tail; do not free or allocate meanwhile."""
        self._check_order(order)
        return self._walk(self._head[order])

    def _walk(self, head: int) -> Iterator[int]:
        if head == _NONE:
            return
        nxt = self._next
        pfn = head
        while True:
            yield pfn
            pfn = nxt[pfn]
            if pfn == head:
                return

    def block_at(self, pfn: int) -> Block:
        """The block (free, allocated or isolated) that contains ``pfn``; O(max_order)."""
        if not 0 <= pfn < self._total:
            raise InvalidBlockError(f"pfn {pfn} is outside the zone 0..{self._total - 1}")
        blocks = self._blocks
        for order in range(self._max_order):
            start = pfn >> order << order
            value = blocks.get(start)
            if value is not None and value >> 2 >= order:
                kind = value & _KIND_MASK
                return Block(start, value >> 2, _STATE_OF_KIND[kind], kind == _FREE_REPORTED)
        raise InvariantViolation(f"pfn {pfn} is not covered by any block")

    def state_of(self, pfn: int) -> BlockState:
        """The state of the block containing ``pfn``."""
        return self.block_at(pfn).state

    def iter_blocks(self) -> Iterator[Block]:
        """Every block in pfn order; sorts, so O(n log n): for checks and tests."""
        for pfn in sorted(self._blocks):
            value = self._blocks[pfn]
            kind = value & _KIND_MASK
            yield Block(pfn, value >> 2, _STATE_OF_KIND[kind], kind == _FREE_REPORTED)

    def _describe(self, pfn: int) -> str:
        if not 0 <= pfn < self._total:
            return "pfn is outside the zone"
        block = self.block_at(pfn)
        if block.reported:
            what = "a reported free"
        else:
            what = ("a " if block.state is BlockState.FREE else "an ") + block.state.value
        where = "it is" if block.pfn == pfn else "it lies inside"
        return f"{where} {what} block (pfn {block.pfn} order {block.order})"

    # ------------------------------------------------------------------ invariants

    def check_invariants(self) -> None:
        """Check every book the allocator keeps against the others; O(blocks log blocks).

        Raises InvariantViolation naming the first inconsistency found.
        """
        self._check_tiling()
        self._check_lists()
        self._check_counters()
        self._check_merged()

    def _check_tiling(self) -> None:
        """Blocks are aligned, in range, do not overlap, and cover the zone exactly."""
        expected = 0
        for pfn in sorted(self._blocks):
            value = self._blocks[pfn]
            order = value >> 2
            if not 0 <= order < self._max_order:
                raise InvariantViolation(f"block at pfn {pfn} has order {order} out of range")
            if pfn & ((1 << order) - 1):
                raise InvariantViolation(f"block at pfn {pfn} is not aligned to order {order}")
            if pfn < expected:
                raise InvariantViolation(
                    f"block at pfn {pfn} order {order} overlaps its predecessor"
                )
            if pfn > expected:
                raise InvariantViolation(f"pages {expected}..{pfn - 1} belong to no block")
            expected = pfn + (1 << order)
        if expected != self._total:
            raise InvariantViolation(f"blocks end at pfn {expected}, zone has {self._total} pages")

    def _check_lists(self) -> None:
        """Links agree, each free block is on exactly its own order's list, nr_free matches."""
        on_list: set[int] = set()
        for order in range(self._max_order):
            head = self._head[order]
            count = 0
            reported = 0
            if head != _NONE:
                pfn = head
                while True:
                    if pfn in on_list:
                        raise InvariantViolation(
                            f"pfn {pfn} is on a free list twice (order {order})"
                        )
                    on_list.add(pfn)
                    value = self._blocks.get(pfn)
                    if value is None or value | _REPORTED != order << 2 | _FREE_REPORTED:
                        raise InvariantViolation(
                            f"pfn {pfn} is on free_area[{order}] but is {self._describe(pfn)}"
                        )
                    reported += value == order << 2 | _FREE_REPORTED
                    nxt = self._next.get(pfn)
                    if nxt is None or self._prev.get(nxt) != pfn:
                        raise InvariantViolation(f"broken links after pfn {pfn} (order {order})")
                    count += 1
                    if count > len(self._blocks):
                        raise InvariantViolation(f"free_area[{order}] does not close into a cycle")
                    pfn = nxt
                    if pfn == head:
                        break
            if count != self._nr_free[order]:
                raise InvariantViolation(
                    f"nr_free[{order}] is {self._nr_free[order]} but the list holds {count}"
                )
            if reported != self._nr_reported[order]:
                raise InvariantViolation(
                    f"{reported} reported blocks on free_area[{order}], "
                    f"counted {self._nr_reported[order]}"
                )
        free_blocks = {pfn for pfn, value in self._blocks.items() if value & _FREE}
        if free_blocks != on_list:
            stray = sorted(free_blocks ^ on_list)[:5]
            raise InvariantViolation(f"free blocks and free-list members differ at pfns {stray}")
        if self._next.keys() != on_list or self._prev.keys() != on_list:
            raise InvariantViolation("list links kept for pfns that are not on a free list")

    def _check_counters(self) -> None:
        """Page counts agree with the blocks, and free + allocated + isolated == total."""
        by_kind = {_ALLOCATED: 0, _FREE: 0, _FREE_REPORTED: 0, _ISOLATED: 0}
        for value in self._blocks.values():
            by_kind[value & _KIND_MASK] += 1 << (value >> 2)
        free = by_kind[_FREE] + by_kind[_FREE_REPORTED]
        books = {
            "free_pages": (self._free_pages, free),
            "allocated_pages": (self._allocated_pages, by_kind[_ALLOCATED]),
            "isolated_pages": (self._isolated_pages, by_kind[_ISOLATED]),
            "reported_pages": (self._reported_pages, by_kind[_FREE_REPORTED]),
        }
        for name, (counted, actual) in books.items():
            if counted != actual:
                raise InvariantViolation(f"{name} is {counted} but the blocks hold {actual}")
        total = self._free_pages + self._allocated_pages + self._isolated_pages
        if total != self._total:
            raise InvariantViolation(
                f"conservation: free {self._free_pages} + allocated {self._allocated_pages} + "
                f"isolated {self._isolated_pages} = {total}, not {self._total}"
            )

    def _check_merged(self) -> None:
        """No two free buddies of equal order below max_order-1 were left unmerged."""
        top = self._max_order - 1
        for pfn, value in self._blocks.items():
            order = value >> 2
            if value & _FREE and order < top:
                buddy = pfn ^ (1 << order)
                if self._blocks.get(buddy, _ALLOCATED) | _REPORTED == order << 2 | _FREE_REPORTED:
                    raise InvariantViolation(
                        f"free buddies at pfns {min(pfn, buddy)} and {max(pfn, buddy)} "
                        f"order {order} were not merged"
                    )
