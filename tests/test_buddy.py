"""The pure buddy allocator: Linux's rules one by one, its errors, and a model-checked walk."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Callable
from collections.abc import Set as AbstractSet

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pagehint.actors.mm.buddy import (
    AllocatorError,
    Block,
    BlockState,
    BuddyAllocator,
    DoubleFreeError,
    InvalidBlockError,
    InvariantViolation,
    NotAllocatedError,
    NotFreeError,
    NotIsolatedError,
    Watermarks,
    WrongOrderError,
)

NO_WATERMARKS = Watermarks(min=0, low=0, high=0)

Snapshot = tuple[list[Block], list[list[int]], tuple[int, int, int, int]]


def snapshot(b: BuddyAllocator) -> Snapshot:
    """Everything observable: the blocks, every list in order, and the page counters."""
    lists = [list(b.iter_free(order)) for order in range(b.max_order)]
    counters = (b.free_pages, b.allocated_pages, b.isolated_pages, b.reported_pages)
    return list(b.iter_blocks()), lists, counters


def free_shape(b: BuddyAllocator) -> set[tuple[int, int]]:
    return {(blk.pfn, blk.order) for blk in b.iter_blocks() if blk.state is BlockState.FREE}


def reported_blocks(b: BuddyAllocator) -> set[tuple[int, int]]:
    return {(blk.pfn, blk.order) for blk in b.iter_blocks() if blk.reported}


def alloc_all(b: BuddyAllocator, order: int = 0) -> list[int]:
    pfns = []
    while (pfn := b.alloc(order)) is not None:
        pfns.append(pfn)
    return pfns


class ScriptedRandom(random.Random):
    """A Random whose next coin flips a test dictates (then falls back to the real stream)."""

    def __init__(self) -> None:
        super().__init__(0)
        self.script: list[int] = []

    def getrandbits(self, k: int, /) -> int:
        return self.script.pop(0) if self.script else super().getrandbits(k)


# ---------------------------------------------------------------------------------- boot


def test_boot_carves_the_largest_aligned_blocks() -> None:
    b = BuddyAllocator(100)  # 64 + 32 + 4: not a power of two
    assert free_shape(b) == {(0, 6), (64, 5), (96, 2)}
    assert b.free_pages == 100
    assert b.allocated_pages == b.isolated_pages == b.reported_pages == 0
    b.check_invariants()

    b = BuddyAllocator(1000, max_order=4)
    assert list(b.iter_free(3)) == list(range(0, 1000, 8))
    assert [b.nr_free(o) for o in range(4)] == [0, 0, 0, 125]
    b.check_invariants()


def test_pageblock_order_is_clamped_like_linux() -> None:
    assert BuddyAllocator(64, max_order=4).pageblock_order == 3
    assert BuddyAllocator(64).pageblock_order == 9


def test_default_watermarks_follow_linux() -> None:
    # 4 GiB: min_free_kbytes = sqrt(4 GiB in KiB * 16) = 8192 KiB = 2048 pages.
    assert Watermarks.linux_default(2**20) == Watermarks(min=2048, low=3096, high=4144)
    # Tiny zones are clamped to 128 KiB.
    assert Watermarks.linux_default(64) == Watermarks(min=32, low=40, high=48)
    # 1 TiB: 128 MiB min; the scale factor (0.1 % of the zone) dominates low and high.
    assert Watermarks.linux_default(2**28) == Watermarks(min=32768, low=301203, high=569638)
    assert BuddyAllocator(2**20).watermarks == Watermarks.linux_default(2**20)
    with pytest.raises(ValueError, match="min <= low <= high"):
        Watermarks(min=5, low=4, high=6)


def test_terabyte_zone_costs_regions_not_pages() -> None:
    tracemalloc.start()
    try:
        b = BuddyAllocator(2**28)  # 1 TiB of 4 KiB pages
        traced, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert b.nr_free(10) == 2**18
    assert b.free_pages == 2**28
    # Free top-order blocks are no dict entries: 9 bytes a region, 2.25 MiB in all (a dict
    # entry each was 48 MiB; a per-page array would be 256 MiB at one byte a page).
    assert b.stored_blocks == 0
    assert peak < 3 * 2**20
    assert traced < 3 * 2**20

    assert b.alloc(0) == 0
    # The order-10 block became the page plus one free block at each of orders 0..9.
    assert b.stored_blocks == 11
    assert b.free(0, 0) == (0, 10)
    assert b.stored_blocks == 0
    b.check_invariants()


# ---------------------------------------------------------------------------------- alloc


def test_alloc_splits_and_leaves_upper_halves_free_and_unreported() -> None:
    b = BuddyAllocator(16, max_order=5, watermarks=NO_WATERMARKS)
    assert b.alloc(0) == 0
    assert free_shape(b) == {(1, 0), (2, 1), (4, 2), (8, 3)}
    assert b.state_of(0) is BlockState.ALLOCATED
    assert b.block_at(7) == Block(4, 2, BlockState.FREE, reported=False)
    assert b.alloc(0) == 1
    assert b.alloc(1) == 2
    assert b.alloc(0) == 4  # splits (4, 2)
    assert free_shape(b) == {(5, 0), (6, 1), (8, 3)}
    assert b.allocated_pages == 5
    b.check_invariants()


def test_alloc_takes_the_head_of_the_smallest_non_empty_order() -> None:
    b = BuddyAllocator(64, max_order=4, watermarks=NO_WATERMARKS)
    assert b.alloc(3) == 0
    b.rotate_to_front(3, 40)
    assert b.alloc(3) == 40
    assert b.alloc(1) == 48  # order 1 and 2 are empty: split the order-3 head (now 48)
    assert b.alloc(1) == 50  # now order 1 has a block
    assert free_shape(b) == {(8, 3), (16, 3), (24, 3), (32, 3), (52, 2), (56, 3)}
    b.check_invariants()


def test_alloc_fails_with_none_and_changes_nothing() -> None:
    b = BuddyAllocator(16, max_order=5, watermarks=NO_WATERMARKS)
    assert b.alloc(4) == 0
    before = snapshot(b)
    assert b.alloc(0) is None
    assert b.alloc_bulk(0, 4) == []
    assert snapshot(b) == before

    b = BuddyAllocator(16, max_order=5, watermarks=NO_WATERMARKS)
    pages = alloc_all(b)
    assert pages == list(range(16))
    for pfn in pages[::2]:
        b.free(pfn, 0)
    assert b.free_pages == 8
    assert b.alloc(1) is None  # 8 free pages, no two of them buddies
    assert b.alloc(0) is not None


def test_alloc_gate_is_a_watermark_in_pages() -> None:
    b = BuddyAllocator(64, max_order=4, watermarks=NO_WATERMARKS)
    assert b.alloc(0, gate=64) is None  # would leave 63 < 64
    assert b.alloc(3, gate=57) is None  # would leave 56 < 57
    assert b.alloc_bulk(0, 8, gate=64) == []
    assert b.free_pages == 64
    assert b.alloc(3, gate=56) == 0  # leaves exactly 56
    assert b.alloc(0, gate=55) == 8


def test_alloc_bulk_takes_as_many_as_there_are() -> None:
    b = BuddyAllocator(64, max_order=4, watermarks=NO_WATERMARKS)
    assert b.alloc_bulk(0, 5) == [0, 1, 2, 3, 4]
    got = b.alloc_bulk(1, 100)
    assert len(got) == 29  # 59 free pages, one of them a lone order-0 page
    assert len(set(got)) == 29
    assert b.free_pages == 1
    assert b.alloc_bulk(0, 0) == []
    b.check_invariants()


def test_invalid_orders_are_rejected() -> None:
    b = BuddyAllocator(64, max_order=4)
    with pytest.raises(InvalidBlockError, match="order 4"):
        b.alloc(4)
    with pytest.raises(InvalidBlockError, match="order -1"):
        b.nr_free(-1)
    with pytest.raises(InvalidBlockError, match="pfn 64"):
        b.block_at(64)
    with pytest.raises(ValueError, match="rng"):
        BuddyAllocator(64, shuffle=True)


# ---------------------------------------------------------------------------------- free


def test_free_merges_and_the_hook_gets_the_merged_block() -> None:
    calls: list[tuple[int, int]] = []
    b = BuddyAllocator(16, max_order=5, on_free=lambda pfn, order: calls.append((pfn, order)))
    alloc_all(b)
    assert b.free(1, 0) == (1, 0)  # buddy 0 is allocated
    assert b.free(0, 0) == (0, 1)
    assert b.free(2, 0) == (2, 0)
    assert b.free(3, 0) == (0, 2)  # 3+2 -> (2, 1), + (0, 1) -> (0, 2)
    assert calls == [(1, 0), (0, 1), (2, 0), (0, 2)]
    assert free_shape(b) == {(0, 2)}

    assert b.free(4, 0, notify=False) == (4, 0)
    assert calls[-1] == (0, 2)  # FPI_SKIP_REPORT_NOTIFY: no hook call
    b.free_bulk([(pfn, 0) for pfn in range(5, 16)])
    assert calls[-1] == (0, 4)
    assert len(calls) == 4 + 11
    assert free_shape(b) == {(0, 4)}
    b.check_invariants()


@pytest.mark.parametrize(
    ("to_tail", "after_likely", "after_unlikely"),
    [(None, [5, 0], [9, 5, 0]), (True, [5, 0], [5, 0, 9]), (False, [0, 5], [9, 0, 5])],
)
def test_free_placement_explicit_or_buddy_merge_likely(
    to_tail: bool | None, after_likely: list[int], after_unlikely: list[int]
) -> None:
    b = BuddyAllocator(16, max_order=5, watermarks=NO_WATERMARKS)  # heuristic on orders 0..2
    alloc_all(b)
    b.free(5, 0)
    b.free(2, 0)
    assert list(b.iter_free(0)) == [2, 5]  # ordinary frees go to the head
    b.free(3, 0)  # merges into (2, 1)
    assert list(b.iter_free(0)) == [5]
    # 0's buddy 1 is busy, but the next-order buddy (2, 1) is free: merge likely, so the
    # heuristic puts it at the tail; an explicit to_tail overrides the heuristic.
    assert b.free(0, 0, to_tail=to_tail) == (0, 0)
    assert list(b.iter_free(0)) == after_likely
    # 9's next-order buddy (10, 1) is busy: the heuristic says head.
    assert b.free(9, 0, to_tail=to_tail) == (9, 0)
    assert list(b.iter_free(0)) == after_unlikely
    b.check_invariants()


@pytest.mark.parametrize(("max_order", "expected"), [(4, [8, 16]), (5, [16, 8])])
def test_buddy_merge_likely_only_below_max_order_minus_2(
    max_order: int, expected: list[int]
) -> None:
    b = BuddyAllocator(32, max_order=max_order, watermarks=NO_WATERMARKS)
    assert alloc_all(b, order=2) == list(range(0, 32, 4))
    b.free(16, 2)
    b.free(0, 2)
    b.free(4, 2)  # (0, 3), whose buddy (8, 3) would be free once 8 and 12 are
    # Freeing (8, 2): the next-order buddy (0, 3) is free, so "merge likely" says tail, but
    # Linux only asks below MAX_ORDER-2: with max_order 4, order 2 goes to the head.
    b.free(8, 2)
    assert list(b.iter_free(2)) == expected


def test_shuffle_picks_the_tail_by_coin_flip_at_the_shuffle_order_only() -> None:
    rng = ScriptedRandom()
    b = BuddyAllocator(64, max_order=4, watermarks=NO_WATERMARKS, shuffle=True, rng=rng)
    blocks = alloc_all(b, order=3)
    b.free(blocks[0], 3)
    rng.script = [1, 0]
    b.free(blocks[1], 3)  # heads
    b.free(blocks[2], 3)  # tails
    assert rng.script == []
    assert list(b.iter_free(3)) == [blocks[2], blocks[0], blocks[1]]

    # Below SHUFFLE_ORDER the flip is not consulted: buddy_merge_likely decides.
    pfn = b.alloc(0)
    assert pfn is not None
    assert b.alloc(0) == pfn + 1
    rng.script = [1]
    assert b.free(pfn + 1, 0) == (pfn + 1, 0)  # buddy busy: stays at order 0
    assert rng.script == [1]

    # shuffle_order=0 shuffles every order.
    rng = ScriptedRandom()
    b = BuddyAllocator(16, max_order=5, shuffle=True, shuffle_order=0, rng=rng)
    alloc_all(b)
    rng.script = [1]
    b.free(4, 0)
    assert rng.script == []


def test_shuffle_permutes_the_boot_lists_deterministically() -> None:
    def boot_order(seed: int) -> list[int]:
        b = BuddyAllocator(1024, max_order=4, shuffle=True, rng=random.Random(seed))
        return list(b.iter_free(3))

    assert sorted(boot_order(1)) == list(range(0, 1024, 8))
    assert boot_order(1) != list(range(0, 1024, 8))
    assert boot_order(1) == boot_order(1)
    assert boot_order(1) != boot_order(2)


def _contract_setup() -> BuddyAllocator:
    """Zone of 64: (0, 1) and (8, 3) allocated, (16, 3) isolated, the rest free."""
    b = BuddyAllocator(64, max_order=4, watermarks=NO_WATERMARKS)
    assert b.alloc(1) == 0
    assert b.alloc(3) == 8
    assert b.isolate(16, 3)
    return b


CONTRACT_VIOLATIONS: list[
    tuple[str, Callable[[BuddyAllocator], object], type[AllocatorError], str]
] = [
    ("free block", lambda b: b.free(2, 1), DoubleFreeError, r"pfn 2 order 1\b.*free block"),
    ("inside a free block", lambda b: b.free(5, 0), DoubleFreeError, r"pfn 5 order 0\b.*inside"),
    ("isolated", lambda b: b.free(16, 3), DoubleFreeError, r"pfn 16 order 3\b.*isolated"),
    ("inside allocated", lambda b: b.free(9, 0), NotAllocatedError, r"pfn 9 order 0\b.*never"),
    ("outside the zone", lambda b: b.free(640, 0), NotAllocatedError, r"pfn 640 order 0\b"),
    ("wrong order", lambda b: b.free(8, 2), WrongOrderError, r"pfn 8 order 2\b.*order 3"),
    ("bulk, one bad", lambda b: b.free_bulk([(0, 1), (8, 2)]), WrongOrderError, r"pfn 8 order 2"),
    ("bulk, twice", lambda b: b.free_bulk([(8, 3), (8, 3)]), DoubleFreeError, r"pfn 8 order 3"),
    ("putback free", lambda b: b.putback(2, 1, reported=True), NotIsolatedError, r"pfn 2 order 1"),
    ("putback order", lambda b: b.putback(16, 2, reported=True), NotIsolatedError, r"order 2"),
    ("isolate busy", lambda b: b.isolate(8, 3), NotFreeError, r"pfn 8 order 3\b.*allocated"),
    ("isolate order", lambda b: b.isolate(4, 1), NotFreeError, r"pfn 4 order 1\b"),
    ("rotate busy", lambda b: b.rotate_to_front(1, 0), NotFreeError, r"pfn 0 order 1\b"),
]


@pytest.mark.parametrize(
    ("op", "error", "message"),
    [case[1:] for case in CONTRACT_VIOLATIONS],
    ids=[case[0] for case in CONTRACT_VIOLATIONS],
)
def test_contract_violations_raise_named_errors_and_change_nothing(
    op: Callable[[BuddyAllocator], object], error: type[AllocatorError], message: str
) -> None:
    b = _contract_setup()
    before = snapshot(b)
    with pytest.raises(error, match=message):
        op(b)
    assert snapshot(b) == before
    b.check_invariants()


def test_a_second_free_of_the_same_block_is_a_double_free() -> None:
    b = _contract_setup()
    b.free(0, 1)
    before = snapshot(b)
    with pytest.raises(DoubleFreeError, match=r"pfn 0 order 1\b"):
        b.free(0, 1)
    assert snapshot(b) == before


# ---------------------------------------------------------------------------------- lists


def test_rotate_to_front_is_list_rotate_to_front() -> None:
    b = BuddyAllocator(64, max_order=4, watermarks=NO_WATERMARKS)
    b.rotate_to_front(3, 24)
    assert list(b.iter_free(3)) == [24, 32, 40, 48, 56, 0, 8, 16]
    assert b.first_free(3) == 24
    assert b.next_free(56) == 0
    assert b.next_free(16) is None  # the end of the (rotated) list
    assert b.alloc(3) == 24
    b.free(24, 3, to_tail=True)  # the tail is just before the new head
    assert list(b.iter_free(3)) == [32, 40, 48, 56, 0, 8, 16, 24]
    pfn = b.alloc(3)
    assert pfn == 32
    b.free(pfn, 3, to_tail=False)
    assert list(b.iter_free(3)) == [32, 40, 48, 56, 0, 8, 16, 24]
    assert b.first_free(0) is None
    b.check_invariants()


# ---------------------------------------------------------------------------------- reporting


def test_isolate_watermark_gate_is_free_above_min_plus_block() -> None:
    b = BuddyAllocator(64, max_order=4, watermarks=Watermarks(min=10, low=12, high=14))
    for _ in range(45):
        assert b.alloc(0) is not None
    assert b.free_pages == 19
    assert b.isolate(48, 3)  # 19 > 10 + 8
    assert (b.free_pages, b.isolated_pages) == (11, 8)
    assert b.putback(48, 3, reported=False) == (48, 3)

    assert b.alloc(0) == 45
    assert b.free_pages == 18
    before = snapshot(b)
    assert not b.isolate(48, 3)  # 18 is not > 10 + 8
    assert snapshot(b) == before
    assert b.isolate(46, 1)  # 18 > 10 + 2
    b.check_invariants()


def test_isolate_and_putback_reported() -> None:
    b = BuddyAllocator(64, max_order=4, watermarks=NO_WATERMARKS)
    assert b.isolate(8, 3)
    assert b.state_of(12) is BlockState.ISOLATED
    assert 8 not in b.iter_free(3)
    assert (b.free_pages, b.isolated_pages, b.nr_free(3)) == (56, 8, 7)
    b.check_invariants()

    assert b.putback(8, 3, reported=True) == (8, 3)
    assert b.is_reported(8) and b.is_reported(15)
    assert (b.free_pages, b.isolated_pages, b.reported_pages) == (64, 0, 8)
    assert (b.nr_free(3), b.nr_unreported(3)) == (8, 7)
    b.check_invariants()

    assert b.isolate(8, 3)  # isolation takes the block off the list: the flag goes
    assert b.reported_pages == 0
    assert b.putback(8, 3, reported=False) == (8, 3)
    assert not b.is_reported(8)


def test_splitting_a_reported_block_leaves_unreported_halves() -> None:
    b = BuddyAllocator(64, max_order=4, watermarks=NO_WATERMARKS)
    for pfn in range(0, 64, 8):
        assert b.isolate(pfn, 3)
        b.putback(pfn, 3, reported=True)
    assert b.reported_pages == 64
    assert b.alloc(0) is not None
    halves = free_shape(b) - {(p, 3) for p in range(0, 64, 8)}
    assert len(halves) == 3
    assert not any(b.is_reported(p) for p, _ in halves)
    assert b.reported_pages == 56
    b.check_invariants()


def test_putback_that_merges_is_left_unreported() -> None:
    calls: list[tuple[int, int]] = []
    b = BuddyAllocator(
        16, max_order=5, watermarks=NO_WATERMARKS, on_free=lambda p, o: calls.append((p, o))
    )
    assert b.alloc(0) == 0  # free: (1, 0) (2, 1) (4, 2) (8, 3)
    assert b.isolate(2, 1)
    b.free(0, 0)  # merges with 1 only: (2, 1) is isolated, not a buddy
    assert free_shape(b) == {(0, 1), (4, 2), (8, 3)}
    assert b.putback(2, 1, reported=True) == (0, 4)
    assert not b.is_reported(0)
    assert b.reported_pages == 0
    assert calls == [(0, 1)]  # putback does not notify by default (FPI_SKIP_REPORT_NOTIFY)
    b.check_invariants()


def test_merging_with_a_reported_buddy_leaves_the_merged_block_unreported() -> None:
    b = BuddyAllocator(16, max_order=5, watermarks=NO_WATERMARKS)
    assert b.alloc(0) == 0
    assert b.isolate(2, 1)
    assert b.putback(2, 1, reported=True) == (2, 1)  # its buddy (0, 1) is half allocated
    assert b.is_reported(2) and b.reported_pages == 2
    assert b.free(0, 0) == (0, 4)  # merges (1, 0), the reported (2, 1), (4, 2), (8, 3)
    assert not b.is_reported(0)
    assert (b.reported_pages, b.nr_unreported(4)) == (0, 1)
    b.check_invariants()


def test_putback_placement_and_notify() -> None:
    calls: list[tuple[int, int]] = []
    b = BuddyAllocator(
        64, max_order=4, watermarks=NO_WATERMARKS, on_free=lambda p, o: calls.append((p, o))
    )
    assert b.isolate(0, 3)
    assert b.isolate(8, 3)
    b.putback(0, 3, reported=True, to_tail=True)
    b.putback(8, 3, reported=True, notify=True)  # order 3 is the top order: head
    assert list(b.iter_free(3)) == [8, 16, 24, 32, 40, 48, 56, 0]
    assert calls == [(8, 3)]


# ---------------------------------------------------------------------------------- checker


def test_check_invariants_catches_corruption() -> None:
    def fresh() -> BuddyAllocator:
        b = BuddyAllocator(16, max_order=5, watermarks=NO_WATERMARKS)
        assert b.alloc(0) == 0
        assert b.alloc(0) == 1
        return b

    b = fresh()
    b._free_pages += 1
    with pytest.raises(InvariantViolation, match="free_pages"):
        b.check_invariants()

    b = fresh()
    del b._blocks[0]
    b._allocated_pages -= 1
    with pytest.raises(InvariantViolation, match=r"pages 0\.\.0 belong to no block"):
        b.check_invariants()

    b = fresh()  # free 0 and 1 behind the allocator's back, without merging them
    b._allocated_pages -= 2
    b._push(0, 0, False)
    b._push(1, 0, False)
    with pytest.raises(InvariantViolation, match="pfns 0 and 1 order 0 were not merged"):
        b.check_invariants()

    b = fresh()
    b._next[2] = 8  # (2, 1) is alone on its list: it must link to itself
    with pytest.raises(InvariantViolation, match="broken free-list links at pfn 2"):
        b.check_invariants()

    b = fresh()
    b._nr_free[3] += 1
    with pytest.raises(InvariantViolation, match=r"nr_free\[3\]"):
        b.check_invariants()


def _unmerge(b: BuddyAllocator, pfn: int) -> None:
    """Allocate the free top-order block at ``pfn``, then free its halves behind the
    allocator's back, without merging them."""
    top = b.max_order - 1
    b.rotate_to_front(top, pfn)
    assert b.alloc(top) == pfn
    del b._blocks[pfn]
    b._allocated_pages -= 1 << top
    b._push(pfn, top - 1, False)
    b._push(pfn + (1 << (top - 1)), top - 1, False)


SLICE_CORRUPTIONS: list[tuple[str, Callable[[BuddyAllocator, int], None], str]] = [
    ("lost block", lambda b, pfn: b._top_value.__setitem__(pfn >> 4, 0), "no block|not a free"),
    ("broken link", lambda b, pfn: b._top_next.__setitem__(pfn >> 4, pfn >> 4), "broken"),
    ("unmerged", _unmerge, "not merged"),
]


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [case[1:] for case in SLICE_CORRUPTIONS],
    ids=[case[0] for case in SLICE_CORRUPTIONS],
)
@pytest.mark.parametrize("pfn", [100 * 16, 2**16 - 32], ids=["behind", "ahead"])
def test_check_slice_finds_corruption_within_one_round(
    corrupt: Callable[[BuddyAllocator, int], None], message: str, pfn: int
) -> None:
    b = BuddyAllocator(2**16, max_order=5, watermarks=NO_WATERMARKS)  # 4096 regions of 16
    b.alloc_bulk(0, 40)
    per_slice = 256
    round_length = -(-sum(1 for _ in b.iter_blocks()) // per_slice)
    for _ in range(2 * round_length):  # two whole rounds find nothing in a sound zone
        b.check_slice(per_slice)
    b.check_slice(per_slice)  # the next slice starts past region 100 ("behind")
    corrupt(b, pfn)
    b._check_counters()  # the counters alone do not see it: the walk must reach it
    calls = 0
    with pytest.raises(InvariantViolation, match=message):
        while calls <= round_length:
            calls += 1
            b.check_slice(per_slice)
    assert 1 < calls <= round_length
    with pytest.raises(InvariantViolation, match=message):
        b.check_invariants()


# ---------------------------------------------------------------------------------- model check

FREE, ALLOCATED, ISOLATED = 0, 1, 2
CODE = {BlockState.FREE: FREE, BlockState.ALLOCATED: ALLOCATED, BlockState.ISOLATED: ISOLATED}


class BuddyMachine(RuleBasedStateMachine):
    """Random operations against a per-page ownership model kept by the test alone."""

    b: BuddyAllocator

    @initialize(
        total=st.integers(64, 4096),
        max_order=st.integers(4, 11),
        wmin=st.none() | st.integers(0, 64),
        shuffle=st.sampled_from([None, "top", "all"]),
        seed=st.integers(0, 2**32 - 1),
    )
    def boot(
        self, total: int, max_order: int, wmin: int | None, shuffle: str | None, seed: int
    ) -> None:
        self.hook: list[tuple[int, int]] = []
        self.b = BuddyAllocator(
            total,
            max_order,
            watermarks=None if wmin is None else Watermarks(wmin, wmin, wmin),
            shuffle=shuffle is not None,
            shuffle_order=0 if shuffle == "all" else None,
            rng=random.Random(seed) if shuffle else None,
            on_free=lambda pfn, order: self.hook.append((pfn, order)),
        )
        self.boot_shape = free_shape(self.b)
        self.owner = bytearray(total)
        self.allocated: dict[int, int] = {}
        self.isolated: dict[int, int] = {}
        self.reported_before: set[tuple[int, int]] = set()

    # -- model helpers

    def _claim(self, pfn: int, order: int, code: int) -> None:
        pages = range(pfn, pfn + (1 << order))
        assert all(self.owner[p] == FREE for p in pages), f"({pfn}, {order}) overlaps a block"
        self.owner[pfn : pfn + (1 << order)] = bytes([code]) * (1 << order)

    def _release(self, pfn: int, order: int) -> None:
        self.owner[pfn : pfn + (1 << order)] = bytes(1 << order)

    def _free_blocks(self) -> list[Block]:
        return [blk for blk in self.b.iter_blocks() if blk.state is BlockState.FREE]

    def _expect_reported(self, new: AbstractSet[tuple[int, int]] = frozenset()) -> None:
        """A reported flag survives exactly while its block is untouched on its free list."""
        b = self.b
        kept = set()
        for pfn, order in self.reported_before:
            blk = b.block_at(pfn)
            if (blk.pfn, blk.order, blk.state) == (pfn, order, BlockState.FREE):
                kept.add((pfn, order))
        assert reported_blocks(b) == kept | new

    def _order(self, raw: int) -> int:
        return raw % self.b.max_order

    # -- rules

    @rule(raw_order=st.integers(0, 10), gated=st.booleans())
    def alloc(self, raw_order: int, gated: bool) -> None:
        b, order = self.b, self._order(raw_order)
        heads = [b.first_free(o) for o in range(b.max_order)]
        source = next((o for o in range(order, b.max_order) if heads[o] is not None), None)
        gate = b.watermarks.min if gated else None
        refused = gate is not None and b.free_pages - (1 << order) < gate
        pfn = b.alloc(order, gate=gate)
        if refused or source is None:
            assert pfn is None
            return
        assert pfn is not None and pfn == heads[source]  # __rmqueue_smallest takes the head
        self._claim(pfn, order, ALLOCATED)
        self.allocated[pfn] = order
        assert self.hook == []

    @rule(raw_order=st.integers(0, 10), count=st.integers(1, 40))
    def alloc_bulk(self, raw_order: int, count: int) -> None:
        b, order = self.b, self._order(raw_order)
        available = sum(b.nr_free(o) << (o - order) for o in range(order, b.max_order))
        got = b.alloc_bulk(order, count)
        assert len(got) == min(count, available)
        for pfn in got:
            self._claim(pfn, order, ALLOCATED)
            self.allocated[pfn] = order

    @precondition(lambda self: self.allocated)
    @rule(index=st.integers(0, 10**6), to_tail=st.none() | st.booleans(), notify=st.booleans())
    def free(self, index: int, to_tail: bool | None, notify: bool) -> None:
        pfn, order = sorted(self.allocated.items())[index % len(self.allocated)]
        self._free(pfn, order, to_tail, notify)

    @rule(to_tail=st.none() | st.booleans())
    def free_next_to_reported(self, to_tail: bool | None) -> None:
        """Free a block inside a reported block's buddy: the merge that must drop the flag."""
        b = self.b
        for blk in b.iter_blocks():
            if blk.reported and blk.order < b.max_order - 1:
                buddy = blk.pfn ^ blk.nr_pages
                for pfn, order in sorted(self.allocated.items()):
                    if buddy <= pfn < buddy + blk.nr_pages:
                        self._free(pfn, order, to_tail, notify=True)
                        return

    def _free(self, pfn: int, order: int, to_tail: bool | None, notify: bool) -> None:
        merged = self.b.free(pfn, order, to_tail=to_tail, notify=notify)
        del self.allocated[pfn]
        self._release(pfn, order)
        mpfn, morder = merged
        assert morder >= order and mpfn <= pfn < pfn + (1 << order) <= mpfn + (1 << morder)
        assert self.b.block_at(mpfn) == Block(mpfn, morder, BlockState.FREE, reported=False)
        assert self.hook == ([merged] if notify else [])

    @precondition(lambda self: self.allocated)
    @rule(picks=st.sets(st.integers(0, 10**6), min_size=1, max_size=8))
    def free_bulk(self, picks: set[int]) -> None:
        items = sorted(self.allocated.items())
        batch = list({items[i % len(items)] for i in picks})
        self.b.free_bulk(batch)
        for pfn, order in batch:
            del self.allocated[pfn]
            self._release(pfn, order)
        assert len(self.hook) == len(batch)

    @precondition(lambda self: self.b.free_pages)
    @rule(index=st.integers(0, 10**6))
    def isolate(self, index: int) -> None:
        free = self._free_blocks()
        blk = free[index % len(free)]
        b = self.b
        allowed = b.free_pages > b.watermarks.min + blk.nr_pages
        assert b.isolate(blk.pfn, blk.order) is allowed
        if allowed:
            self._claim(blk.pfn, blk.order, ISOLATED)
            self.isolated[blk.pfn] = blk.order
            assert b.state_of(blk.pfn) is BlockState.ISOLATED

    @precondition(lambda self: self.isolated)
    @rule(index=st.integers(0, 10**6), reported=st.booleans(), to_tail=st.none() | st.booleans())
    def putback(self, index: int, reported: bool, to_tail: bool | None) -> None:
        pfn, order = sorted(self.isolated.items())[index % len(self.isolated)]
        merged = self.b.putback(pfn, order, reported=reported, to_tail=to_tail)
        del self.isolated[pfn]
        self._release(pfn, order)
        unmerged = merged == (pfn, order)
        assert self.b.is_reported(pfn) is (reported and unmerged)
        self._expect_reported({(pfn, order)} if reported and unmerged else set())
        self.reported_before = reported_blocks(self.b)
        assert self.hook == []

    @precondition(lambda self: self.b.free_pages)
    @rule(index=st.integers(0, 10**6))
    def rotate(self, index: int) -> None:
        free = self._free_blocks()
        blk = free[index % len(free)]
        before = list(self.b.iter_free(blk.order))
        self.b.rotate_to_front(blk.order, blk.pfn)
        at = before.index(blk.pfn)
        assert list(self.b.iter_free(blk.order)) == before[at:] + before[:at]

    @precondition(lambda self: self.b.free_pages or self.isolated)
    @rule(index=st.integers(0, 10**6))
    def double_free(self, index: int) -> None:
        blocks = [blk for blk in self.b.iter_blocks() if blk.state is not BlockState.ALLOCATED]
        blk = blocks[index % len(blocks)]
        before = snapshot(self.b)
        with pytest.raises(DoubleFreeError, match=rf"pfn {blk.pfn} order {blk.order}\b"):
            self.b.free(blk.pfn, blk.order)
        assert snapshot(self.b) == before

    @precondition(lambda self: len(self.allocated) + len(self.isolated) >= 3)
    @rule(now=st.integers(0, 3))
    def free_everything(self, now: int) -> None:
        if now:  # Hypothesis picks rules uniformly: only one time in four, or it dominates
            return
        for pfn, order in list(self.isolated.items()):
            self.b.putback(pfn, order, reported=True)
        self.b.free_bulk(self.allocated.items())
        self.allocated.clear()
        self.isolated.clear()
        self.owner = bytearray(self.b.total_pages)
        # Every merge that can happen has happened: the zone is back to its boot shape.
        assert free_shape(self.b) == self.boot_shape
        self.reported_before = reported_blocks(self.b)

    # -- after every step

    @invariant()
    def books_balance(self) -> None:
        if not hasattr(self, "b"):
            return
        b = self.b
        b.check_invariants()
        assert b.free_pages + b.allocated_pages + b.isolated_pages == b.total_pages
        assert b.allocated_pages == sum(1 << o for o in self.allocated.values())
        assert b.isolated_pages == sum(1 << o for o in self.isolated.values())
        owner = bytearray(b.total_pages)
        for blk in b.iter_blocks():
            owner[blk.pfn : blk.end] = bytes([CODE[blk.state]]) * blk.nr_pages
            if blk.state is BlockState.ALLOCATED:
                assert self.allocated.get(blk.pfn) == blk.order
        assert owner == self.owner
        # Only putback may raise a reported flag (its rule checks and records that itself).
        self._expect_reported()
        self.reported_before = reported_blocks(b)
        self.hook.clear()


# No "explain" phase: tracing this much code makes a failing run take minutes to report.
BuddyMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
TestBuddyMachine = BuddyMachine.TestCase
