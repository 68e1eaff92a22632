"""The allocator against its previous implementation (``reference_buddy.py``): same results,
same free lists in the same order, same reported flags and hook calls after every step."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import reference_buddy as reference
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pagehint.actors.mm.buddy import Block, BuddyAllocator, Watermarks

Allocator = BuddyAllocator | reference.BuddyAllocator
BlockTypes = (Block, reference.Block)


def plain(value: Any) -> Any:
    """A block as a tuple (each module has its own Block class), anything else as it is."""
    if isinstance(value, BlockTypes):
        return (value.pfn, value.order, value.state.value, value.reported)
    return value


def observe(b: Allocator) -> tuple[Any, ...]:
    """Everything a caller can see: the blocks, every list in order, the counters."""
    blocks = [plain(blk) for blk in b.iter_blocks()]
    lists = [list(b.iter_free(order)) for order in range(b.max_order)]
    per_order = [(b.nr_free(order), b.nr_unreported(order)) for order in range(b.max_order)]
    counters = (b.free_pages, b.allocated_pages, b.isolated_pages, b.reported_pages)
    return blocks, lists, per_order, counters


def outcome(call: Callable[[Allocator], Any], b: Allocator) -> Any:
    """What a call returned, or which error it raised and why (the error classes are twins)."""
    try:
        return ("returned", plain(call(b)))
    except Exception as error:
        return ("raised", type(error).__name__, str(error))


class SideBySide(RuleBasedStateMachine):
    """Every operation on both allocators; the reference's books pick what to operate on."""

    new: BuddyAllocator
    old: reference.BuddyAllocator

    @initialize(
        total=st.integers(1, 700),
        max_order=st.integers(1, 8),
        wmin=st.none() | st.integers(0, 32),
        shuffle=st.sampled_from([None, "top", "all"]),
        seed=st.integers(0, 2**32 - 1),
    )
    def boot(
        self, total: int, max_order: int, wmin: int | None, shuffle: str | None, seed: int
    ) -> None:
        self.hooks: dict[str, list[tuple[int, int]]] = {"new": [], "old": []}
        options: dict[str, Any] = {
            "max_order": max_order,
            "shuffle": shuffle is not None,
            "shuffle_order": 0 if shuffle == "all" else None,
        }
        if wmin is not None:
            options["watermarks"] = Watermarks(wmin, wmin, wmin)
        self.new = BuddyAllocator(
            total,
            rng=random.Random(seed) if shuffle else None,
            on_free=lambda pfn, order: self.hooks["new"].append((pfn, order)),
            **options,
        )
        self.old = reference.BuddyAllocator(
            total,
            rng=random.Random(seed) if shuffle else None,
            on_free=lambda pfn, order: self.hooks["old"].append((pfn, order)),
            **options,
        )
        self.allocated: dict[int, int] = {}
        self.isolated: dict[int, int] = {}

    def both(self, call: Callable[[Allocator], Any]) -> Any:
        result = outcome(call, self.old)
        assert outcome(call, self.new) == result
        return result[1] if result[0] == "returned" else None

    def _order(self, raw: int) -> int:
        return raw % self.old.max_order

    def _free_blocks(self) -> list[tuple[int, int]]:
        return [
            (pfn, order) for order in range(self.old.max_order) for pfn in self.old.iter_free(order)
        ]

    # -- what the zone, the vCPUs and the designs do

    @rule(raw_order=st.integers(0, 10), count=st.integers(1, 40), gated=st.booleans())
    def alloc(self, raw_order: int, count: int, gated: bool) -> None:
        order = self._order(raw_order)
        gate = self.old.watermarks.min if gated else None
        if count == 1:
            pfn = self.both(lambda b: b.alloc(order, gate=gate))
            got = [] if pfn is None else [pfn]
        else:
            got = self.both(lambda b: b.alloc_bulk(order, count, gate=gate))
        self.allocated.update(dict.fromkeys(got, order))

    @precondition(lambda self: self.allocated)
    @rule(index=st.integers(0, 10**6), to_tail=st.none() | st.booleans(), notify=st.booleans())
    def free(self, index: int, to_tail: bool | None, notify: bool) -> None:
        pfn, order = sorted(self.allocated.items())[index % len(self.allocated)]
        self.both(lambda b: b.free(pfn, order, to_tail=to_tail, notify=notify))
        del self.allocated[pfn]

    @precondition(lambda self: self.allocated)
    @rule(picks=st.sets(st.integers(0, 10**6), min_size=1, max_size=8))
    def free_bulk(self, picks: set[int]) -> None:
        items = sorted(self.allocated.items())
        batch = sorted({items[i % len(items)] for i in picks})
        self.both(lambda b: b.free_bulk(batch))
        for pfn, _ in batch:
            del self.allocated[pfn]

    @precondition(lambda self: self.old.free_pages)
    @rule(index=st.integers(0, 10**6))
    def isolate(self, index: int) -> None:
        free = self._free_blocks()
        pfn, order = free[index % len(free)]
        if self.both(lambda b: b.isolate(pfn, order)):
            self.isolated[pfn] = order

    @precondition(lambda self: self.isolated)
    @rule(
        index=st.integers(0, 10**6),
        reported=st.booleans(),
        to_tail=st.none() | st.booleans(),
        notify=st.booleans(),
    )
    def putback(self, index: int, reported: bool, to_tail: bool | None, notify: bool) -> None:
        pfn, order = sorted(self.isolated.items())[index % len(self.isolated)]
        self.both(
            lambda b: b.putback(pfn, order, reported=reported, to_tail=to_tail, notify=notify)
        )
        del self.isolated[pfn]

    @precondition(lambda self: self.old.free_pages)
    @rule(index=st.integers(0, 10**6))
    def rotate(self, index: int) -> None:
        free = self._free_blocks()
        pfn, order = free[index % len(free)]
        self.both(lambda b: b.rotate_to_front(order, pfn))

    @rule(pfn=st.integers(-2, 720), order=st.integers(-1, 8))
    def anything_anywhere(self, pfn: int, order: int) -> None:
        """Queries and contract violations: the same answers, the same errors, no change."""
        self.both(lambda b: b.block_at(pfn))
        self.both(lambda b: b.next_free(pfn))
        self.both(lambda b: b.first_free(order))
        self.both(lambda b: b.isolate(pfn, order) and b.putback(pfn, order, reported=True))
        self.both(lambda b: b.rotate_to_front(order, pfn))
        if self.both(lambda b: b.free(pfn, order)) is not None:
            del self.allocated[pfn]
        if self.both(lambda b: b.putback(pfn, order, reported=False)) is not None:
            del self.isolated[pfn]

    # -- after every step

    @invariant()
    def same_books(self) -> None:
        if not hasattr(self, "new"):
            return
        assert observe(self.new) == observe(self.old)
        assert self.hooks["new"] == self.hooks["old"]
        for order in range(self.new.max_order):  # list_for_each_entry_safe's walk
            walked, pfn = [], self.new.first_free(order)
            while pfn is not None:
                walked.append(pfn)
                pfn = self.new.next_free(pfn)
            assert walked == list(self.new.iter_free(order))
        self.new.check_invariants()
        self.new.check_slice(blocks=3)


# No "explain" phase: tracing this much code makes a failing run take minutes to report.
SideBySide.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
TestSideBySide = SideBySide.TestCase
