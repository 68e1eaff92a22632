"""The host's view of one guest's memory: which guest pages are backed by host memory.

A guest page costs the host memory from the first time the guest touches it (an EPT fault the
host serves with a zeroed page) until the host discards it (``MADV_DONTNEED`` on a hint) or
swaps it out under memory pressure. A touch of a discarded page is a *refault* (the host supplies
a zeroed page again); a touch of a swapped-out page is a *swap-in*, much dearer. The host cannot
tell a guest-free page from a used one: without hints it swaps both alike.

Each page state (backed, discarded, swapped, lazily freed, accessed, and the host huge pages)
is a roaring bitmap of page indexes (``pyroaring.BitMap``): each 2**16 pages are kept as runs,
a sorted array or a plain bitmap, whichever is smallest. The guest touches and the host
discards aligned blocks, so the sets are mostly runs: an idle 12 TiB guest's host state takes
58 KiB where bitmaps of a bit per page took 769 MiB, and pages alternating in and out cost at
worst a bit each, as those did. Touching, discarding or counting a range is a binary search and
the containers it covers; eviction sweeps a window of pages with set operations. Page indexes
are 32-bit: a guest has at most 2**32 pages (16 TiB), which ``check_scenario`` enforces.

**Host page size** (``host_pages``): 1 (4 KiB pages), or 512 / 262144 for huge pages.

- *THP* (``hugetlb=False``): a touch of an aligned 2 MiB range the host does not back at all
  (and has not swapped) faults in one host huge page, backing all of it
  (``do_huge_pmd_anonymous_page``); otherwise 4 KiB pages. A discard of a whole huge page frees it
  at once (``zap_huge_pmd``). A partial discard splits it: RSS drops by the discarded part, but
  those pages stay allocated on the host (``deferred``) until the deferred-split shrinker runs
  under memory pressure (``release_deferred``). Swapping a subpage out splits it too.
- *hugetlbfs* (``hugetlb=True``): every touch backs a whole host page from the hugetlb pool; a
  discard that is not aligned to the page size is skipped, as QEMU's
  ``virtio_balloon_handle_report`` does ("simply ignore unaligned memory regions"), and an aligned
  one returns the page to the pool (``pool_returned_pages``), not to the host's free memory.
  hugetlb pages are never swapped.

**Age** (``track_age``): a bit per page the guest touched since the host last looked, as the
EPT accessed bits ``kvm_age_gfn`` reads; eviction gives a touched page a second chance.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyroaring import BitMap

# A BitMap holds 32-bit values: a page index reaches 2**32 - 1, 16 TiB of 4 KiB pages.
MAX_PAGES = 1 << 32
# The first window an eviction sweep takes at once, in bytes of 8 pages (one roaring container
# of 2**16 pages); each further window of the same call is twice as large.
EVICT_WINDOW_BYTES = 1 << 13


def _span(start: int, end: int) -> BitMap:
    """Pages [start, end) as a bitmap of one run: set operations with it stay in the range."""
    span = BitMap()
    span.add_range(start, end)
    return span


# 4 KiB first touches, 4 KiB refaults, swap-ins, remaps, host huge pages faulted in
Touches = tuple[int, int, int, int, int]
UNTOUCHED: Touches = (0, 0, 0, 0, 0)  # a touch of pages the host backs and maps: nothing to do


class GuestBacking:
    """Backed and discarded guest pages, with RSS and fault counts."""

    __slots__ = (
        "_accessed",
        "_backed",
        "_discarded",
        "_evict_hand",
        "_huge",
        "_lazy",
        "_swapped",
        "deferred_pages",
        "discarded_pages",
        "first_touches",
        "host_pages",
        "huge_faults",
        "hugetlb",
        "lazy_pages",
        "pool_returned_pages",
        "refaults",
        "rss_pages",
        "skipped_discards",
        "swap_ins",
        "swap_outs",
        "swapped_pages",
        "total_pages",
    )

    def __init__(self, total_pages: int, host_pages: int = 1, *, hugetlb: bool = False) -> None:
        if not 0 < total_pages <= MAX_PAGES:
            raise ValueError(f"a guest has 1 to 2**32 pages (16 TiB), got {total_pages}")
        if host_pages < 1 or host_pages & (host_pages - 1) or (hugetlb and host_pages == 1):
            raise ValueError(f"a host page is a power of two of 4 KiB pages, got {host_pages}")
        self.total_pages = total_pages
        self.host_pages = host_pages
        self.hugetlb = hugetlb
        self._huge = BitMap()  # host huge pages, by index (page // host_pages)
        self._accessed: BitMap | None = None  # kept from track_age on
        self.deferred_pages = 0  # split off huge pages: out of RSS, still allocated
        self.pool_returned_pages = 0  # hugetlb pages discards gave back to the pool
        self.huge_faults = 0
        self.skipped_discards = 0  # hugetlbfs discards QEMU skipped as unaligned
        self._backed = BitMap()
        self._discarded = BitMap()
        # Most runs never fill these (no host memory limit, no MADV_FREE): reads of them are
        # guarded by their page counts being non-zero, which is cheaper than a lookup.
        self._swapped = BitMap()
        self._lazy = BitMap()  # MADV_FREE'd, still backed
        self.lazy_pages = 0
        self._evict_hand = 0  # the byte (8 pages) where the next eviction scan starts
        self.rss_pages = 0
        self.first_touches = 0
        self.refaults = 0
        self.discarded_pages = 0  # backed pages given back by discards, over the run
        self.swapped_pages = 0
        self.swap_ins = 0
        self.swap_outs = 0

    def _check(self, pfn: int, count: int) -> None:
        if pfn < 0 or count < 0 or pfn + count > self.total_pages:
            raise ValueError(
                f"pages [{pfn}, {pfn + count}) are outside the guest's {self.total_pages} pages"
            )

    def prefault(self) -> None:
        """Back every page before the guest runs (QEMU -mem-prealloc): in RSS, not counted as
        the guest's first touches (in host huge pages where the host has them)."""
        self._backed.add_range(0, self.total_pages)
        if self.host_pages > 1:
            self._huge.add_range(0, -(-self.total_pages // self.host_pages))
        self.rss_pages = self.total_pages

    def track_age(self) -> None:
        """Keep accessed bits from now on (a host that must choose what to reclaim)."""
        if self._accessed is None:
            self._accessed = _span(0, self.total_pages)

    @property
    def in_use_pages(self) -> int:
        """Host memory this guest holds: RSS, plus split-off pages the shrinker has not freed."""
        return self.rss_pages + self.deferred_pages

    def release_deferred(self) -> int:
        """The deferred-split shrinker frees split-off pages (under memory pressure)."""
        released, self.deferred_pages = self.deferred_pages, 0
        return released

    def _fault_huge(self, pfn: int, end: int) -> int:
        """Back with one host page each region touching [pfn, end) that the host does not back
        at all and has not swapped; returns how many."""
        size, backed, discarded = self.host_pages, self._backed, self._discarded
        faulted = 0
        for region in range(pfn // size, (end - 1) // size + 1):
            start, stop = region * size, min((region + 1) * size, self.total_pages)
            if backed.range_cardinality(start, stop):
                continue
            if self.swapped_pages and self._swapped.range_cardinality(start, stop):
                continue  # a range with swap entries has a page table: no huge page (4 KiB)
            refaulted = discarded.range_cardinality(start, stop)
            backed.add_range(start, stop)
            if refaulted:
                discarded.remove_range(start, stop)
            self._huge.add(region)
            self.rss_pages += stop - start
            self.refaults += refaulted
            self.first_touches += stop - start - refaulted
            faulted += 1
        self.huge_faults += faulted
        return faulted

    def touch(self, pfn: int, count: int = 1) -> Touches:
        """The guest writes pages [pfn, pfn+count): (4 KiB first touches, 4 KiB refaults,
        swap-ins, remaps: pages the host had MADV_FREEd and reclaim had not taken, still backed
        but unmapped from the guest, so each touch is an EPT-violation exit; and host huge
        pages faulted in)."""
        self._check(pfn, count)
        end = pfn + count
        if self._accessed is not None:
            self._accessed.add_range(pfn, end)
        cancelled = 0
        if self.lazy_pages:  # a write cancels a lazy free that reclaim has not taken yet
            cancelled = self._lazy.range_cardinality(pfn, end)
            if cancelled:
                self._lazy.remove_range(pfn, end)
                self.lazy_pages -= cancelled
        backed = self._backed
        already = backed.range_cardinality(pfn, end)
        if already == count:
            return (0, 0, 0, cancelled, 0) if cancelled else UNTOUCHED
        huge = self._fault_huge(pfn, end) if self.host_pages > 1 else 0
        if huge:
            already = backed.range_cardinality(pfn, end)
        refaulted = self._discarded.range_cardinality(pfn, end)
        swapped = self._swapped.range_cardinality(pfn, end) if self.swapped_pages else 0
        new = count - already
        backed.add_range(pfn, end)
        if refaulted:
            self._discarded.remove_range(pfn, end)
        if swapped:
            self._swapped.remove_range(pfn, end)
        return self._count_touches(new - refaulted - swapped, refaulted, swapped, cancelled, huge)

    def touch_pages(self, pfns: Iterable[int]) -> Touches:
        """Touch single pages (an order-0 fault each), counted as ``touch`` counts them."""
        backed, discarded, swapped, lazy = self._backed, self._discarded, self._swapped, self._lazy
        accessed, size = self._accessed, self.host_pages
        first = refaults = swap_ins = remaps = huge = 0
        for pfn in pfns:
            if accessed is not None:
                accessed.add(pfn)
            if pfn in backed:
                if self.lazy_pages and pfn in lazy:
                    lazy.remove(pfn)
                    self.lazy_pages -= 1
                    remaps += 1
                continue
            if size > 1 and self._fault_huge(pfn, pfn + 1):
                huge += 1
                continue
            backed.add(pfn)
            if pfn in discarded:
                discarded.remove(pfn)
                refaults += 1
            elif self.swapped_pages and pfn in swapped:
                swapped.remove(pfn)
                swap_ins += 1
            else:
                first += 1
        return self._count_touches(first, refaults, swap_ins, remaps, huge)

    def _count_touches(
        self, first: int, refaults: int, swap_ins: int, remaps: int, huge: int
    ) -> Touches:
        self.rss_pages += first + refaults + swap_ins
        self.first_touches += first
        self.refaults += refaults
        self.swap_ins += swap_ins
        self.swapped_pages -= swap_ins
        return first, refaults, swap_ins, remaps, huge

    def discardable(self, pfn: int, count: int) -> bool:
        """Whether a discard of [pfn, pfn+count) is done: on hugetlbfs only whole host pages
        can be (``ram_block_discard_range`` refuses an unaligned range)."""
        size = self.host_pages
        return not self.hugetlb or not (pfn % size or count % size)

    def discard(self, pfn: int, count: int, *, lazy: bool = False) -> int:
        """The host drops pages [pfn, pfn+count): returns the pages whose mapping into the
        guest it removed (what makes KVM flush the guest's TLBs; 0: nothing was mapped).

        ``MADV_DONTNEED`` (the default) frees them at once; swapped-out pages in the range lose
        their swap slots too. ``lazy`` is ``MADV_FREE``: the pages stay in RSS, marked free,
        until reclaim takes them (first, and without swapping) or a guest write cancels it; the
        mmu notifier still unmaps them from the guest (``madvise_free_single_vma``). On
        hugetlbfs a range not aligned to the host page is skipped (``skipped_discards``).
        """
        self._check(pfn, count)
        if not self.discardable(pfn, count):
            self.skipped_discards += 1
            return 0
        end = pfn + count
        backed = self._backed
        if lazy:
            newly = backed & _span(pfn, end)
            newly -= self._lazy
            unmapped = len(newly)
            if unmapped:
                self._lazy |= newly
                self.lazy_pages += unmapped
            if self._huge and (pfn % self.host_pages or count % self.host_pages):
                self._split(pfn, end, freed_from_rss=False)
            return unmapped
        if self.swapped_pages:
            swapped = self._swapped.range_cardinality(pfn, end)
            if swapped:
                self._swapped.remove_range(pfn, end)
                self.swapped_pages -= swapped
        freed = backed.range_cardinality(pfn, end)
        if freed:
            if self._huge:
                self._split(pfn, end, freed_from_rss=True)
            # Only pages that were backed can refault; a never-touched page stays a first touch.
            if freed == count:
                self._discarded.add_range(pfn, end)
            else:
                self._discarded |= backed & _span(pfn, end)
            backed.remove_range(pfn, end)
            if self.lazy_pages:
                dropped = self._lazy.range_cardinality(pfn, end)
                self._lazy.remove_range(pfn, end)
                self.lazy_pages -= dropped
            self.rss_pages -= freed
            if self.hugetlb:
                self.pool_returned_pages += freed
            else:
                self.discarded_pages += freed
        return freed

    def _split(self, pfn: int, end: int, *, freed_from_rss: bool) -> None:
        """Host huge pages overlapping [pfn, end): one wholly inside is freed whole (or, on
        hugetlbfs, returned to the pool); one the range only partly covers is split, and the
        part ``freed_from_rss`` leaves RSS but stays allocated until the deferred-split
        shrinker runs (``deferred_split_huge_page``)."""
        size, huge = self.host_pages, self._huge
        for region in huge & _span(pfn // size, (end - 1) // size + 1):
            start, stop = region * size, min((region + 1) * size, self.total_pages)
            whole = pfn <= start and stop <= end
            if whole and not freed_from_rss:
                continue  # MADV_FREE of a whole huge page keeps it whole (lazyfree THP)
            huge.remove(region)
            if not whole and freed_from_rss:
                self.deferred_pages += self._backed.range_cardinality(
                    max(pfn, start), min(end, stop)
                )

    def evict(self, pages: int, sweeps: int = 2) -> int:
        """Swap out up to ``pages`` backed pages (host reclaim), the hand going round at most
        ``sweeps`` times: returns how many.

        Lazily freed (MADV_FREE) pages go first, dropped without I/O. Then the host, which sees
        only guest-physical pages and not whether the guest uses them, swaps out pages from a
        moving hand: with accessed bits (``track_age``), a page touched since the hand last
        passed gets a second chance (its bit is cleared, as ``kvm_age_gfn`` clears the EPT
        accessed bit), so the victims are the pages untouched longest. hugetlb pages are never
        swapped; swapping a subpage of a host huge page splits it.

        The hand steps a byte of 8 pages at a time, as it did over plain bitmaps (which keeps
        runs as they were): it ages a whole byte, takes its old pages lowest first and, when it
        needs only some of them, stays on the byte. A window of bytes is swept at once: its
        backed pages lose their accessed bits, its old ones go; a window holding as many old
        pages as needed, or more, ends at the byte of the last one needed.
        """
        if self.hugetlb:
            return 0
        freed = self._drop_lazy(pages)
        pages -= freed
        backed, accessed, total = self._backed, self._accessed, self.total_pages
        size = (total + 7) >> 3
        budget = sweeps * size  # bytes the hand may still pass
        window = EVICT_WINDOW_BYTES
        evicted = 0
        while evicted < pages and budget:
            byte = self._evict_hand
            stop = min(size, byte + window, byte + budget)
            budget -= stop - byte
            window *= 2
            lo, hi = byte << 3, min(stop << 3, total)
            seen = backed & _span(lo, hi)
            old = seen - accessed if accessed is not None else seen
            needed = pages - evicted
            if len(old) >= needed:  # the window ends at the byte of the last page needed
                last = old[needed - 1]
                stop, hi = (last >> 3) + 1, min((last | 7) + 1, total)
                more = old.range_cardinality(last + 1, hi)
                old &= _span(lo, last + 1)
                if accessed is not None:
                    seen &= _span(lo, hi)
                self._evict_hand = last >> 3 if more else stop % size
            else:
                self._evict_hand = stop % size
            if accessed is not None:
                accessed -= seen
            if old:
                self._split_holding(old)
                backed -= old
                self._swapped |= old
                evicted += len(old)
        self.rss_pages -= evicted
        self.swapped_pages += evicted
        self.swap_outs += evicted
        return freed + evicted

    def _split_holding(self, pages: BitMap) -> None:
        """Reclaim takes ``pages``: the host huge pages holding any of them are split."""
        huge, size = self._huge, self.host_pages
        if not huge:
            return
        page, last = pages.min(), pages.max()
        while True:
            region = page // size
            huge.discard(region)
            page = (region + 1) * size
            if page > last:
                return
            page = pages.next_set_bit(page)

    def _drop_lazy(self, pages: int) -> int:
        """Reclaim frees lazily freed pages, lowest first, whole bytes of 8 pages at a
        time, until it has ``pages``."""
        if not self.lazy_pages or pages <= 0:
            return 0
        lazy = self._lazy
        if pages < self.lazy_pages:  # through the byte of the last page needed
            dropped = lazy & _span(0, (lazy[pages - 1] | 7) + 1)
            lazy -= dropped
        else:
            dropped, self._lazy = lazy, BitMap()
        self._split_holding(dropped)
        self._backed -= dropped
        self._discarded |= dropped
        count = len(dropped)
        self.lazy_pages -= count
        self.rss_pages -= count
        self.discarded_pages += count
        return count

    def backed_pages(self, pfn: int, count: int) -> int:
        """How many of pages [pfn, pfn+count) the host backs."""
        self._check(pfn, count)
        return self._backed.range_cardinality(pfn, pfn + count)

    def is_backed(self, pfn: int) -> bool:
        return pfn in self._backed


class HostMemory:
    """The memory of a host shared by its guests: a limit, Linux's watermarks on it, and swap.

    - **Direct reclaim**: a guest fault that finds the host's free memory below its min
      watermark reclaims until it is back there, on the faulting vCPU, which pays for the
      swap-out it causes (``swap_ns_per_page``, the swap device's write bandwidth).
    - **kswapd**: woken every interval, it reclaims while free memory is below the low
      watermark, up to the high one, as fast as the swap device writes: no vCPU pays.

    Reclaim first frees split-off huge pages (the deferred-split shrinker), then MADV_FREEd
    pages (no I/O), then swaps out the pages untouched longest, whichever guest holds them.
    """

    def __init__(
        self, limit_pages: int, watermarks: tuple[int, int, int], swap_ns_per_page: int
    ) -> None:
        self.backings: list[GuestBacking] = []
        self.limit_pages = limit_pages  # 0: unlimited
        self.min_pages, self.low_pages, self.high_pages = watermarks
        self.swap_ns_per_page = swap_ns_per_page
        self.direct_reclaims = 0
        self._hand = 0  # the guest reclaim looks at next

    @classmethod
    def unlimited(cls) -> HostMemory:
        """A host with no memory limit: it never reclaims."""
        return cls(0, (0, 0, 0), 0)

    def add(self, backing: GuestBacking) -> None:
        """A guest's memory, on this host (its pages aged once the host has a limit)."""
        self.backings.append(backing)
        if self.limit_pages:
            backing.track_age()

    @property
    def in_use_pages(self) -> int:
        return sum(backing.in_use_pages for backing in self.backings)

    @property
    def free_pages(self) -> int:
        return self.limit_pages - self.in_use_pages

    def direct_reclaim(self) -> int:
        """A guest fault allocated host memory: the ns of direct reclaim its vCPU spends (0
        with no limit, or while free memory stays above the min watermark)."""
        if not self.limit_pages:
            return 0
        short = self.min_pages - self.free_pages
        if short <= 0:
            return 0
        self.direct_reclaims += 1
        return self.reclaim(short) * self.swap_ns_per_page

    def kswapd(self, budget_pages: int) -> int:
        """Background reclaim: below the low watermark, up to the high one, within a budget of
        pages written to swap; returns the pages written."""
        if not self.limit_pages or self.free_pages >= self.low_pages:
            return 0
        return self.reclaim(min(self.high_pages - self.free_pages, budget_pages))

    def reclaim(self, pages: int) -> int:
        """Free ``pages`` of host memory; returns how many were written to swap."""
        for backing in self.backings:
            pages -= backing.release_deferred()
        written = 0
        # A global clock over the guests' pages: the hand stays on a guest while it yields
        # old pages and moves on when a sweep of it finds none (having aged them), so the
        # victims are the pages untouched longest on the whole host, whichever guest holds them.
        count = len(self.backings)
        idle_sweeps = 0
        while pages > 0 and idle_sweeps < 2 * count:
            backing = self.backings[self._hand]
            before = backing.swap_outs
            taken = backing.evict(pages, 1)
            written += backing.swap_outs - before
            pages -= taken
            if taken:
                idle_sweeps = 0
            else:
                idle_sweeps += 1
                self._hand = (self._hand + 1) % count
        return written
