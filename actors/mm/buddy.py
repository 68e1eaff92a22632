"""A pure model of one Linux zone's buddy allocator (mm/page_alloc.c), sized by blocks, not pages.

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

Memory grows with the number of blocks and of top-order regions, never with the number of
pages: a free top-order block (most of an idle zone) is a byte and two array slots of its
region, every other block an entry in dicts keyed by its first pfn.  A 1 TiB idle zone is
2**18 regions of 9 bytes, not 2**28 pages.
"""

from __future__ import annotations

import enum
import math
import random
from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import NoReturn, Protocol

import attrs

__all__ = [
    "CHECK_SLICE_BLOCKS",
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


def _snapshot(pfn: int, value: int) -> Block:
    kind = value & _KIND_MASK
    return Block(pfn, value >> 2, _STATE_OF_KIND[kind], kind == _FREE_REPORTED)


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


CHECK_SLICE_BLOCKS = 4096
"""Blocks a ``check_slice`` looks at (finishing the region it is in): 2-5 ms of checking, and
64 slices for a round of an idle 1 TiB zone."""


# A zone is cut into regions of 2**top pages, one per possible top-order block.  A free
# top-order block is the common case (a 12 TiB idle zone holds 3M of them), so it is not a dict
# entry: its state is one byte of a bytearray by region and its free-list links two array
# slots, 9 bytes in all where dict entries cost about 190.  Every other block (lower orders,
# and top-order blocks allocated or isolated) is a dict entry keyed by its first pfn.
class _Links(Protocol):
    """Free-list links by key: a dict by pfn below the top order, an array by region at it."""

    def __getitem__(self, key: int, /) -> int: ...

    def __setitem__(self, key: int, value: int, /) -> None: ...


@attrs.define
class _Tally:
    """What a walk over the blocks found, to hold against the allocator's counters."""

    free_blocks: list[int]  # by order
    reported_blocks: list[int]  # by order
    end: int  # one past the last block walked
    pages: list[int] = attrs.Factory(lambda: [0] * 4)  # by kind
    in_dict: int = 0  # blocks kept as dict entries


class BuddyAllocator:
    """One zone of ``total_pages`` 4 KiB pages managed as Linux's buddy allocator does.

    Free lists are intrusive circular doubly linked lists, one per order, with a head per order:
    insertion at either end, removal and ``rotate_to_front`` are O(1), as with Linux's
    ``list_head``.  Below the top order the links are two dicts (``prev``/``next`` by pfn); at
    the top order two arrays by region number, and the list heads hold region numbers.
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
        if not 1 <= max_order <= 64:  # so that a top-order block's state fits in a byte
            raise ValueError(f"max_order must be within 1..64, got {max_order}")
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

        self._top = max_order - 1
        self._regions = total_pages >> self._top  # whole top-order blocks the zone holds
        self._blocks: dict[int, int] = {}  # first pfn -> order << 2 | kind, but free top blocks
        self._next: dict[int, int] = {}  # free-list links below the top order, by pfn
        self._prev: dict[int, int] = {}
        # region -> order << 2 | kind if it is a free top-order block, else 0; then its links
        self._top_value = bytearray()
        self._top_next = array("i" if self._regions < 1 << 31 else "q")
        self._top_prev = array(self._top_next.typecode)
        self._head = [_NONE] * max_order  # a pfn, or at the top order a region
        self._nr_free = [0] * max_order
        self._nr_reported = [0] * max_order
        self._free_pages = 0
        self._allocated_pages = 0
        self._isolated_pages = 0
        self._reported_pages = 0
        self._check_from = 0  # where the next check_slice starts
        self._boot()
        # How each free_area is kept: key = pfn >> shift, then the next and prev links by key.
        self._links: list[tuple[int, _Links, _Links]] = [(0, self._next, self._prev)] * max_order
        self._links[self._top] = (self._top, self._top_next, self._top_prev)

    def _boot(self) -> None:
        """Free the whole zone at once: the top-order blocks in bulk (2**18 at 1 TiB), then the
        zone's tail, at most one block per lower order.

        Like memblock_free_all since 5.10 (tail placement in __free_pages_core), each list runs
        in ascending pfn order; with shuffling on, shuffle_zone() then permutes the top order
        (the lower orders' lists of one block stay as they are).
        """
        top, regions = self._top, self._regions
        if regions:
            typecode = self._top_next.typecode
            if self._shuffle:
                assert self._rng is not None
                ring = array(typecode, range(regions))
                self._rng.shuffle(ring)  # the permutation a list of their pfns would get
                self._top_next = array(typecode, bytes(ring.itemsize * regions))
                self._top_prev = array(typecode, self._top_next)
                for before, after in zip(ring, ring[1:] + ring[:1], strict=True):
                    self._top_next[before] = after
                    self._top_prev[after] = before
                self._head[top] = ring[0]
            else:
                self._top_next = array(typecode, range(1, regions + 1))
                self._top_next[-1] = 0
                self._top_prev = array(typecode, range(-1, regions - 1))
                self._top_prev[0] = regions - 1
                self._head[top] = 0
            self._top_value = bytearray([top << 2 | _FREE]) * regions
            self._nr_free[top] = regions
            self._free_pages = regions << top
        pfn = regions << top
        for order in range(top - 1, -1, -1):
            if self._total - pfn >= 1 << order:
                self._push(pfn, order, False)
                pfn += 1 << order

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
        """Blocks kept one by one, as dict entries: the allocator's memory cost beyond its
        fixed 9 bytes or so per top-order region.  Free top-order blocks are not among them."""
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
        nxt: _Links
        prv: _Links
        if order == self._top:
            key, nxt, prv = pfn >> order, self._top_next, self._top_prev
            self._top_value[key] = order << 2 | _FREE
        else:
            key, nxt, prv = pfn, self._next, self._prev
            self._blocks[pfn] = order << 2 | _FREE
        head = self._head[order]
        if head == _NONE:
            nxt[key] = key
            prv[key] = key
            self._head[order] = key
        else:
            last = prv[head]
            nxt[key] = head
            prv[key] = last
            nxt[last] = key
            prv[head] = key
            if not tail:
                self._head[order] = key
        self._nr_free[order] += 1
        self._free_pages += 1 << order

    def _pop(self, pfn: int, order: int, value: int) -> None:
        """Take a free block off its list (del_page_from_free_list), dropping its reported flag.

        ``value`` is the block's current state; below the top order the caller rewrites or
        deletes its ``_blocks`` entry.
        """
        nxt: _Links
        prv: _Links
        if order == self._top:
            key, nxt, prv = pfn >> order, self._top_next, self._top_prev
            self._top_value[key] = 0
            after, before = nxt[key], prv[key]
        else:
            key, nxt, prv = pfn, self._next, self._prev
            after, before = self._next.pop(pfn), self._prev.pop(pfn)
        if after == key:
            self._head[order] = _NONE
        else:
            nxt[before] = after
            prv[after] = before
            if self._head[order] == key:
                self._head[order] = after
        self._nr_free[order] -= 1
        self._free_pages -= 1 << order
        if value & _REPORTED:
            self._nr_reported[order] -= 1
            self._reported_pages -= 1 << order

    def _value(self, pfn: int) -> int | None:
        """The state of the block that starts at ``pfn`` (``order << 2 | kind``), if one does."""
        top = self._top
        region = pfn >> top
        if region << top == pfn and 0 <= region < self._regions:
            value = self._top_value[region]
            if value:
                return value
        return self._blocks.get(pfn)

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
        if current == self._top:  # the head is a region
            value = self._top_value[pfn]
            pfn <<= current
        else:
            value = self._blocks[pfn]
        self._pop(pfn, current, value)
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
        while order < top:  # a buddy below the top order is in the same region: a dict entry
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
        value = self._value(pfn)
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
            if order == self._top:
                self._top_value[pfn >> order] = order << 2 | _FREE_REPORTED
            else:
                self._blocks[pfn] = order << 2 | _FREE_REPORTED
            self._nr_reported[order] += 1
            self._reported_pages += 1 << order
        if notify and self.on_free is not None:
            self.on_free(*merged)
        return merged

    def rotate_to_front(self, order: int, pfn: int) -> None:
        """Make ``free_area[order]`` start at ``pfn`` (list_rotate_to_front), in O(1)."""
        value = self._value(pfn)
        if value is None or value | _REPORTED != order << 2 | _FREE_REPORTED:
            raise NotFreeError(f"cannot rotate to pfn {pfn} order {order}: {self._describe(pfn)}")
        self._head[order] = pfn >> self._links[order][0]

    def is_reported(self, pfn: int) -> bool:
        """Whether the block containing ``pfn`` is free and carries the reported flag."""
        return self.block_at(pfn).reported

    # ------------------------------------------------------------------ queries

    def first_free(self, order: int) -> int | None:
        """The head of ``free_area[order]``, or None if the list is empty."""
        self._check_order(order)
        head = self._head[order]
        return None if head == _NONE else head << self._links[order][0]

    def next_free(self, pfn: int) -> int | None:
        """The block after ``pfn`` on its free list, or None at the end (before the head).

        With ``first_free`` this is the ``list_for_each_entry_safe`` walk: fetch the next pfn
        before isolating the current one.
        """
        value = self._value(pfn)
        if value is None or not value & _FREE:
            raise NotFreeError(f"pfn {pfn} is not on a free list: {self._describe(pfn)}")
        order = value >> 2
        shift, nxt, _ = self._links[order]
        after = nxt[pfn >> shift]
        return None if after == self._head[order] else after << shift

    def iter_free(self, order: int) -> Iterator[int]:
        """The pfns on ``free_area[order]`` from head to tail; do not free or allocate meanwhile."""
        self._check_order(order)
        return self._walk(order)

    def _walk(self, order: int) -> Iterator[int]:
        head = self._head[order]
        if head == _NONE:
            return
        shift, nxt, _ = self._links[order]
        key = head
        while True:
            yield key << shift
            key = nxt[key]
            if key == head:
                return

    def block_at(self, pfn: int) -> Block:
        """The block (free, allocated or isolated) that contains ``pfn``; O(max_order)."""
        if not 0 <= pfn < self._total:
            raise InvalidBlockError(f"pfn {pfn} is outside the zone 0..{self._total - 1}")
        region = pfn >> self._top
        if region < self._regions and self._top_value[region]:
            return _snapshot(region << self._top, self._top_value[region])
        for order in range(self._max_order):
            start = pfn >> order << order
            value = self._blocks.get(start)
            if value is not None and value >> 2 >= order:
                return _snapshot(start, value)
        raise InvariantViolation(f"pfn {pfn} is not covered by any block")

    def state_of(self, pfn: int) -> BlockState:
        """The state of the block containing ``pfn``."""
        return self.block_at(pfn).state

    def iter_blocks(self) -> Iterator[Block]:
        """Every block in pfn order, walking the zone: O(blocks), for checks and tests."""
        for pfn, value in self._tiles(0, self._total):
            yield _snapshot(pfn, value)

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

    def _tiles(self, start: int, budget: int) -> Iterator[tuple[int, int]]:
        """(pfn, state) of the blocks from ``start`` on, in pfn order, checked to tile the zone:
        aligned, in range, one after the other.  Stops at the zone's end, or once ``budget``
        blocks are out at the next region boundary.

        It cannot see a stray entry inside a block; ``check_invariants`` counts them.
        """
        blocks, top_value = self._blocks, self._top_value
        top, mask, regions = self._top, (1 << self._top) - 1, self._regions
        pfn = start
        while pfn < self._total and (budget > 0 or pfn & mask):
            value = blocks.get(pfn)
            if not pfn & mask and pfn >> top < regions and top_value[pfn >> top]:
                if value is not None:
                    raise InvariantViolation(
                        f"pfn {pfn} is both a free top-order block and kept as a dict entry"
                    )
                value = top_value[pfn >> top]
                if value | _REPORTED != top << 2 | _FREE_REPORTED:
                    raise InvariantViolation(f"region at pfn {pfn} holds the bad state {value}")
            elif value is None:
                limit = min(self._total, (pfn | mask) + 1)  # no block crosses a region's end
                end = next((p for p in range(pfn + 1, limit) if self._value(p) is not None), limit)
                raise InvariantViolation(f"pages {pfn}..{end - 1} belong to no block")
            elif value >> 2 == top and value & _FREE:
                raise InvariantViolation(f"free top-order block at pfn {pfn} kept as a dict entry")
            order = value >> 2
            if not 0 <= order <= top:
                raise InvariantViolation(f"block at pfn {pfn} has order {order} out of range")
            if pfn & ((1 << order) - 1):
                raise InvariantViolation(f"block at pfn {pfn} is not aligned to order {order}")
            if pfn + (1 << order) > self._total:
                raise InvariantViolation(
                    f"block at pfn {pfn} order {order} runs past the zone's {self._total} pages"
                )
            yield pfn, value
            budget -= 1
            pfn += 1 << order

    # ------------------------------------------------------------------ invariants

    def check_invariants(self) -> None:
        """Check every book the allocator keeps against the others; O(blocks), and no
        temporaries that grow with the zone.

        Raises InvariantViolation naming the first inconsistency found.
        """
        tally = self._check_blocks(0, self._total)
        if tally.in_dict != len(self._blocks):
            raise InvariantViolation(
                f"{len(self._blocks) - tally.in_dict} dict entries are no block of the zone "
                "(inside another block, or outside the zone)"
            )
        for order in range(self._max_order):
            for name, per_order, found in (
                ("nr_free", self._nr_free, tally.free_blocks),
                ("nr_reported", self._nr_reported, tally.reported_blocks),
            ):
                if per_order[order] != found[order]:
                    raise InvariantViolation(
                        f"{name}[{order}] is {per_order[order]} but the zone has {found[order]} "
                        "such blocks"
                    )
        books = {
            "free_pages": (self._free_pages, tally.pages[_FREE] + tally.pages[_FREE_REPORTED]),
            "allocated_pages": (self._allocated_pages, tally.pages[_ALLOCATED]),
            "isolated_pages": (self._isolated_pages, tally.pages[_ISOLATED]),
            "reported_pages": (self._reported_pages, tally.pages[_FREE_REPORTED]),
        }
        for name, (counted, actual) in books.items():
            if counted != actual:
                raise InvariantViolation(f"{name} is {counted} but the blocks hold {actual}")
        self._check_counters()
        self._check_lists()

    def check_slice(self, blocks: int = CHECK_SLICE_BLOCKS) -> None:
        """Check the counters against each other, then the next ``blocks`` blocks of the zone
        as ``check_invariants`` does one by one (tiling, links, merging), round-robin.

        A periodic check whose cost does not grow with the zone: successive slices cover the
        zone in about ``blocks_in_zone / blocks`` calls (a whole region each at least), so a
        corruption they can see is found within one such round.  What only a whole pass can
        count (blocks per order and kind against the counters, a free list's length, entries
        hidden inside other blocks) is left to ``check_invariants``.
        """
        self._check_counters()
        end = self._check_blocks(self._check_from, blocks).end
        self._check_from = 0 if end >= self._total else end

    def _check_counters(self) -> None:
        """The counters agree with each other and with the lists' heads: O(max_order)."""
        total = self._free_pages + self._allocated_pages + self._isolated_pages
        if total != self._total:
            raise InvariantViolation(
                f"conservation: free {self._free_pages} + allocated {self._allocated_pages} + "
                f"isolated {self._isolated_pages} = {total}, not {self._total}"
            )
        for name, counted, per_order in (
            ("free_pages", self._free_pages, self._nr_free),
            ("reported_pages", self._reported_pages, self._nr_reported),
        ):
            listed = sum(count << order for order, count in enumerate(per_order))
            if counted != listed:
                raise InvariantViolation(f"{name} is {counted} but the lists hold {listed}")
        for order in range(self._max_order):
            nr_free, head = self._nr_free[order], self._head[order]
            if not 0 <= self._nr_reported[order] <= nr_free:
                raise InvariantViolation(
                    f"nr_reported[{order}] is {self._nr_reported[order]} of {nr_free} free"
                )
            if (head == _NONE) != (nr_free == 0):
                raise InvariantViolation(f"nr_free[{order}] is {nr_free}, head is {head}")
            if head != _NONE:
                value = self._value(head << self._links[order][0])
                if value is None or value | _REPORTED != order << 2 | _FREE_REPORTED:
                    raise InvariantViolation(f"free_area[{order}]'s head is not a free block")
        linked = sum(self._nr_free[: self._top])
        if len(self._next) != linked or len(self._prev) != linked:
            raise InvariantViolation(
                f"{len(self._next)} next and {len(self._prev)} prev links kept for "
                f"{linked} free blocks below the top order"
            )

    def _check_blocks(self, start: int, budget: int) -> _Tally:
        """Walk blocks from ``start`` (see ``_tiles``), checking each one on its own: a free
        block's links (``_check_links``), and that its buddy is not free at its order; a block
        off the lists has no links."""
        blocks, nxt_of, prv_of, top = self._blocks, self._next, self._prev, self._top
        tally = _Tally([0] * self._max_order, [0] * self._max_order, end=start)
        for pfn, value in self._tiles(start, budget):
            order, kind = value >> 2, value & _KIND_MASK
            tally.end = pfn + (1 << order)
            tally.pages[kind] += 1 << order
            tally.in_dict += order != top or not kind & _FREE
            if not kind & _FREE:
                if pfn in nxt_of or pfn in prv_of:
                    raise InvariantViolation(f"list links kept for pfn {pfn}, which is not free")
                continue
            tally.free_blocks[order] += 1
            tally.reported_blocks[order] += kind == _FREE_REPORTED
            self._check_links(pfn, order)
            buddy = pfn ^ (1 << order)
            if order < top and blocks.get(buddy, _ALLOCATED) | _REPORTED == value | _REPORTED:
                raise InvariantViolation(
                    f"free buddies at pfns {min(pfn, buddy)} and {max(pfn, buddy)} "
                    f"order {order} were not merged"
                )
        return tally

    def _check_links(self, pfn: int, order: int) -> None:
        """The free block's links lead both ways to blocks that link back, the next one a free
        block of the same order."""
        shift, nxt, prv = self._links[order]
        key = pfn >> shift
        try:
            after, before = nxt[key], prv[key]
            linked = prv[after] == key and nxt[before] == key
        except (KeyError, IndexError):
            linked = False
        if not linked:
            raise InvariantViolation(f"broken free-list links at pfn {pfn} (order {order})")
        value = self._value(after << shift)
        if value is None or value | _REPORTED != order << 2 | _FREE_REPORTED:
            raise InvariantViolation(
                f"pfn {pfn} on free_area[{order}] links to pfn {after << shift}, which is not a "
                f"free block of order {order}"
            )

    def _check_lists(self) -> None:
        """Each free list, walked from its head, closes into a cycle of nr_free blocks.

        With ``_check_blocks`` over the whole zone this puts every free block on exactly its
        own order's list: the head is a free block of that order, every free block links to
        one of the same order and its links are symmetric, so the walk meets distinct free
        blocks of that order until it is back at the head, and there are nr_free of them.
        """
        for order in range(self._max_order):
            head, nr_free = self._head[order], self._nr_free[order]
            if head == _NONE:
                continue
            nxt = self._links[order][1]
            key, count = nxt[head], 1
            while key != head:
                count += 1
                if count > nr_free:
                    break
                key = nxt[key]
            if count != nr_free:
                raise InvariantViolation(
                    f"nr_free[{order}] is {nr_free} but its list holds "
                    f"{'more' if count > nr_free else count}"
                )
