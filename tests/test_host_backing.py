"""The host's compressed page state against a model of plain sets, a page at a time.

``SetModel`` restates ``GuestBacking``'s rules with one Python set per page state and the
eviction hand moving a bitmap byte (8 pages) per step, as the rules are written; the backing
works on ranges and windows of bytes at once. Random sequences of every operation, on guests
small enough for the model, must give the same answers to every query.
"""

from __future__ import annotations

from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from pagehint.actors.mm import host_memory
from pagehint.actors.mm.host_memory import GuestBacking, Touches

COUNTERS = (
    "rss_pages",
    "in_use_pages",
    "deferred_pages",
    "swapped_pages",
    "lazy_pages",
    "discarded_pages",
    "pool_returned_pages",
    "first_touches",
    "refaults",
    "swap_ins",
    "swap_outs",
    "huge_faults",
    "skipped_discards",
)


class SetModel:
    """``GuestBacking`` a page at a time."""

    def __init__(self, total: int, host_pages: int, hugetlb: bool) -> None:
        self.total_pages, self.host_pages, self.hugetlb = total, host_pages, hugetlb
        self.backed: set[int] = set()
        self.discarded: set[int] = set()
        self.swapped: set[int] = set()
        self.lazy: set[int] = set()
        self.accessed: set[int] | None = None
        self.huge: set[int] = set()  # host huge pages by index
        self.hand = 0  # the eviction hand, in bytes of 8 pages
        self.deferred_pages = self.discarded_pages = self.pool_returned_pages = 0
        self.first_touches = self.refaults = self.swap_ins = self.swap_outs = 0
        self.huge_faults = self.skipped_discards = 0

    @property
    def rss_pages(self) -> int:
        return len(self.backed)

    @property
    def in_use_pages(self) -> int:
        return len(self.backed) + self.deferred_pages

    @property
    def swapped_pages(self) -> int:
        return len(self.swapped)

    @property
    def lazy_pages(self) -> int:
        return len(self.lazy)

    def region(self, index: int) -> set[int]:
        size = self.host_pages
        return set(range(index * size, min((index + 1) * size, self.total_pages)))

    def byte(self, index: int) -> list[int]:
        return list(range(index * 8, min(index * 8 + 8, self.total_pages)))

    def prefault(self) -> None:
        self.backed = set(range(self.total_pages))
        if self.host_pages > 1:
            self.huge = set(range(-(-self.total_pages // self.host_pages)))

    def track_age(self) -> None:
        if self.accessed is None:
            self.accessed = set(range(self.total_pages))

    def release_deferred(self) -> int:
        released, self.deferred_pages = self.deferred_pages, 0
        return released

    def touch_pages(self, pfns: list[int]) -> Touches:
        """A page at a time: a remap of a lazily freed page, a host huge page faulted in for a
        region wholly unbacked and not swapped, or a 4 KiB refault, swap-in or first touch."""
        counts = [0, 0, 0, 0, 0]  # first touches, refaults, swap-ins, remaps, huge pages
        for pfn in pfns:
            if self.accessed is not None:
                self.accessed.add(pfn)
            if pfn in self.backed:
                if pfn in self.lazy:
                    self.lazy.remove(pfn)
                    counts[3] += 1
                continue
            region = self.region(pfn // self.host_pages)
            if self.host_pages > 1 and not region & (self.backed | self.swapped):
                self.refaults += len(region & self.discarded)
                self.first_touches += len(region - self.discarded)
                self.backed |= region
                self.discarded -= region
                self.huge.add(pfn // self.host_pages)
                self.huge_faults += 1
                counts[4] += 1
                continue
            self.backed.add(pfn)
            kind = 1 if pfn in self.discarded else 2 if pfn in self.swapped else 0
            self.discarded.discard(pfn)
            self.swapped.discard(pfn)
            counts[kind] += 1
        self.first_touches += counts[0]
        self.refaults += counts[1]
        self.swap_ins += counts[2]
        first, refaults, swap_ins, remaps, huge = counts
        return first, refaults, swap_ins, remaps, huge

    def discard(self, pfn: int, count: int, lazy: bool) -> int:
        size, pages = self.host_pages, set(range(pfn, pfn + count))
        if self.hugetlb and (pfn % size or count % size):
            self.skipped_discards += 1
            return 0
        if lazy:
            newly = (pages & self.backed) - self.lazy
            self.lazy |= newly
            if pfn % size or count % size:
                self.split(pages, freed_from_rss=False)
            return len(newly)
        self.swapped -= pages
        freed = pages & self.backed
        self.split(pages, freed_from_rss=True)
        self.discarded |= freed
        self.backed -= pages
        self.lazy -= pages
        if self.hugetlb:
            self.pool_returned_pages += len(freed)
        else:
            self.discarded_pages += len(freed)
        return len(freed)

    def split(self, pages: set[int], *, freed_from_rss: bool) -> None:
        for index in sorted(self.huge):
            region = self.region(index)
            if not region & pages or (region <= pages and not freed_from_rss):
                continue
            self.huge.remove(index)
            if freed_from_rss and not region <= pages:
                self.deferred_pages += len(region & pages & self.backed)

    def evict(self, pages: int, sweeps: int) -> int:
        """Lazily freed pages first, then the hand a byte at a time: a byte's backed pages
        touched since it last passed lose their accessed bits, the others go to swap, lowest
        first; a byte it takes only some pages from is where it stays."""
        if self.hugetlb:
            return 0
        freed = self.drop_lazy(pages)
        evicted, size = 0, -(-self.total_pages // 8)
        for _ in range(sweeps * size):
            if evicted >= pages - freed:
                break
            byte, self.hand = self.hand, (self.hand + 1) % size
            old = [pfn for pfn in self.byte(byte) if pfn in self.backed]
            if self.accessed is not None:
                young = [pfn for pfn in old if pfn in self.accessed]
                self.accessed -= set(old)
                old = [pfn for pfn in old if pfn not in young]
            if evicted + len(old) > pages - freed:
                old, self.hand = old[: pages - freed - evicted], byte
            for pfn in old:
                self.huge.discard(pfn // self.host_pages)
                self.backed.remove(pfn)
                self.swapped.add(pfn)
            evicted += len(old)
        self.swap_outs += evicted
        return freed + evicted

    def drop_lazy(self, pages: int) -> int:
        """Whole bytes of lazily freed pages, lowest first, until there are ``pages``."""
        dropped = 0
        for byte in range(-(-self.total_pages // 8)):
            if dropped >= pages or not self.lazy:
                break
            for pfn in self.lazy.intersection(self.byte(byte)):
                self.huge.discard(pfn // self.host_pages)
                self.backed.remove(pfn)
                self.lazy.remove(pfn)
                self.discarded.add(pfn)
                dropped += 1
        self.discarded_pages += dropped
        return dropped


def same_answers(backing: GuestBacking, model: SetModel, pfn: int, count: int) -> None:
    for counter in COUNTERS:
        assert getattr(backing, counter) == getattr(model, counter), counter
    assert backing.backed_pages(pfn, count) == len(model.backed & set(range(pfn, pfn + count)))
    for start in range(0, model.total_pages, 8):
        stop = min(start + 8, model.total_pages)
        expected = len(model.backed & set(range(start, stop)))
        assert backing.backed_pages(start, stop - start) == expected
    assert [backing.is_backed(p) for p in range(model.total_pages)] == [
        p in model.backed for p in range(model.total_pages)
    ]


# Touches and frees twice as often: they make the state that reclaim and splits then read.
ACTIONS = (
    "touch",
    "touch",
    "touch_pages",
    "discard",
    "free",
    "free",
    "evict",
    "sweep",
    "shrink",
    "age",
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[int, int, bool, int, list[tuple[str, int, int]]]:
    host_pages, hugetlb = draw(
        st.sampled_from([(1, False), (4, False), (8, False), (32, False), (16, True)])
    )
    total = draw(st.integers(1, 400))
    window = draw(st.integers(1, 12))  # bytes an eviction sweeps at once, doubling
    step = host_pages if draw(st.booleans()) else 1  # host-page aligned, or any page
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(ACTIONS),
                st.integers(0, (total - 1) // step).map(lambda block: block * step),
                st.integers(0, 300 // step).map(lambda blocks: blocks * step),
            ),
            max_size=40,
        )
    )
    return host_pages, total, hugetlb, window, ops


@settings(max_examples=400, deadline=None)
@given(case=cases(), prefault=st.booleans(), aged=st.booleans())
def test_the_backing_answers_as_a_page_at_a_time_set_model(
    case: tuple[int, int, bool, int, list[tuple[str, int, int]]], prefault: bool, aged: bool
) -> None:
    host_pages, total, hugetlb, window, ops = case
    backing = GuestBacking(total, host_pages, hugetlb=hugetlb)
    model = SetModel(total, host_pages, hugetlb)
    if prefault:
        backing.prefault()
        model.prefault()
    if aged:
        backing.track_age()
        model.track_age()
    with mock.patch.object(host_memory, "EVICT_WINDOW_BYTES", window):
        for action, pfn, count in ops:
            count = min(count, total - pfn)
            if action == "touch":  # a range: its pages' touches in order
                assert backing.touch(pfn, count) == model.touch_pages(list(range(pfn, pfn + count)))
            elif action == "touch_pages":  # in a scrambled order, some pages twice
                pfns = [pfn + (i * 7) % count for i in range(count + count // 3)] if count else []
                assert backing.touch_pages(pfns) == model.touch_pages(pfns)
            elif action in ("discard", "free"):  # of a report: never an empty range
                count, lazy = max(count, 1), action == "free"
                assert backing.discard(pfn, count, lazy=lazy) == model.discard(pfn, count, lazy)
            elif action in ("evict", "sweep"):  # sweep: once round, a few pages at a time
                pages, sweeps = (count, 2) if action == "evict" else (count % 9, 1)
                assert backing.evict(pages, sweeps) == model.evict(pages, sweeps)
            elif action == "shrink":
                assert backing.release_deferred() == model.release_deferred()
            else:
                backing.track_age()
                model.track_age()
            same_answers(backing, model, pfn, count)
    probe(backing, model)


def probe(backing: GuestBacking, model: SetModel) -> None:
    """What the queries do not show yet: which host huge pages are whole (a 1-page discard of
    one splits it, deferring the rest), the accessed bits and the hand (the order eviction
    takes pages in), then what each page was (a touch of it tells)."""
    total, size = model.total_pages, model.host_pages
    if size > 1 and not model.hugetlb:
        for start in range(0, total, size):
            assert backing.discard(start, 1) == model.discard(start, 1, lazy=False)
            assert backing.deferred_pages == model.deferred_pages, start
    for pages in [1, 2, 3, 5, 8] * (total // 19 + 1):
        assert backing.evict(pages, 1) == model.evict(pages, 1)
        assert [backing.is_backed(p) for p in range(total)] == [
            p in model.backed for p in range(total)
        ]
    for pfn in range(total):
        assert backing.touch_pages([pfn]) == model.touch_pages([pfn]), pfn
