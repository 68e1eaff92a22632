"""The host's view of one guest's memory: which guest pages are backed by host memory.

A guest page costs the host memory from the first time the guest touches it (an EPT fault the
host serves with a zeroed page) until the host discards it (``MADV_DONTNEED`` on a hint) or
swaps it out under memory pressure. A touch of a discarded page is a *refault* (the host supplies
a zeroed page again); a touch of a swapped-out page is a *swap-in*, much dearer. The host cannot
tell a guest-free page from a used one: without hints it swaps both alike.

Bitmaps of one bit per 4 KiB page (32 MiB each for a 1 TiB guest); range operations work a byte
(8 pages) at a time, so touching or discarding a 2 MiB block is a slice assignment.

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


def _count_bits(bitmap: bytearray, start: int, end: int) -> int:
    """Set bits in page range [start, end)."""
    if start >= end:
        return 0
    first_byte, last_byte = start >> 3, (end - 1) >> 3
    if first_byte == last_byte:
        mask = ((1 << (end - start)) - 1) << (start & 7)
        return (bitmap[first_byte] & mask).bit_count()
    head = (bitmap[first_byte] >> (start & 7)).bit_count()
    tail_bits = ((end - 1) & 7) + 1
    tail = (bitmap[last_byte] & ((1 << tail_bits) - 1)).bit_count()
    middle = int.from_bytes(bitmap[first_byte + 1 : last_byte], "little").bit_count()
    return head + middle + tail


def _fill(bitmap: bytearray, start: int, end: int, value: bool) -> None:
    """Set (or clear) every bit in page range [start, end)."""
    if start >= end:
        return
    first_byte, last_byte = start >> 3, (end - 1) >> 3
    if first_byte == last_byte:
        mask = ((1 << (end - start)) - 1) << (start & 7)
        bitmap[first_byte] = bitmap[first_byte] | mask if value else bitmap[first_byte] & ~mask
        return
    head_mask = (0xFF << (start & 7)) & 0xFF
    tail_mask = (1 << (((end - 1) & 7) + 1)) - 1
    if value:
        bitmap[first_byte] |= head_mask
        bitmap[last_byte] |= tail_mask
    else:
        bitmap[first_byte] &= ~head_mask & 0xFF
        bitmap[last_byte] &= ~tail_mask & 0xFF
    bitmap[first_byte + 1 : last_byte] = (b"\xff" if value else b"\x00") * (
        last_byte - first_byte - 1
    )


def _byte_mask(byte: int, start: int, end: int) -> int:
    """The bits of bitmap byte ``byte`` that fall in page range [start, end)."""
    low = max(start, byte << 3) - (byte << 3)
    high = min(end, (byte + 1) << 3) - (byte << 3)
    return ((1 << (high - low)) - 1) << low


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
        if total_pages <= 0:
            raise ValueError(f"a guest needs at least one page, got {total_pages}")
        if host_pages < 1 or host_pages & (host_pages - 1) or (hugetlb and host_pages == 1):
            raise ValueError(f"a host page is a power of two of 4 KiB pages, got {host_pages}")
        self.total_pages = total_pages
        self.host_pages = host_pages
        self.hugetlb = hugetlb
        regions = -(-total_pages // host_pages)
        self._huge = bytearray((regions + 7) // 8) if host_pages > 1 else bytearray()
        self._accessed = bytearray()  # allocated by track_age
        self.deferred_pages = 0  # split off huge pages: out of RSS, still allocated
        self.pool_returned_pages = 0  # hugetlb pages discards gave back to the pool
        self.huge_faults = 0
        self.skipped_discards = 0  # hugetlbfs discards QEMU skipped as unaligned
        self._backed = bytearray((total_pages + 7) // 8)
        self._discarded = bytearray((total_pages + 7) // 8)
        # Allocated on first use (a host memory limit, MADV_FREE): most runs never need them,
        # and at 1 TiB each is 32 MiB. Every read is guarded by its page count being non-zero.
        self._swapped = bytearray()
        self._lazy = bytearray()  # MADV_FREE'd, still backed
        self.lazy_pages = 0
        self._evict_hand = 0  # byte index where the next eviction scan starts
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
        _fill(self._backed, 0, self.total_pages, True)
        if self._huge:
            _fill(self._huge, 0, -(-self.total_pages // self.host_pages), True)
        self.rss_pages = self.total_pages

    def track_age(self) -> None:
        """Keep accessed bits from now on (a host that must choose what to reclaim)."""
        if not self._accessed:
            self._accessed = bytearray(len(self._backed))
            _fill(self._accessed, 0, self.total_pages, True)

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
        size, backed = self.host_pages, self._backed
        faulted = 0
        for region in range(pfn // size, (end - 1) // size + 1):
            start, stop = region * size, min((region + 1) * size, self.total_pages)
            if _count_bits(backed, start, stop):
                continue
            if self.swapped_pages and _count_bits(self._swapped, start, stop):
                continue  # a range with swap entries has a page table: no huge page (4 KiB)
            refaulted = _count_bits(self._discarded, start, stop)
            _fill(backed, start, stop, True)
            if refaulted:
                _fill(self._discarded, start, stop, False)
            self._huge[region >> 3] |= 1 << (region & 7)
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
        if self._accessed:
            _fill(self._accessed, pfn, end, True)
        cancelled = 0
        if self.lazy_pages:  # a write cancels a lazy free that reclaim has not taken yet
            cancelled = _count_bits(self._lazy, pfn, end)
            if cancelled:
                _fill(self._lazy, pfn, end, False)
                self.lazy_pages -= cancelled
        already = _count_bits(self._backed, pfn, end)
        if already == count:
            return (0, 0, 0, cancelled, 0) if cancelled else UNTOUCHED
        huge = self._fault_huge(pfn, end) if self.host_pages > 1 else 0
        if huge:
            already = _count_bits(self._backed, pfn, end)
        refaulted = _count_bits(self._discarded, pfn, end)
        swapped = _count_bits(self._swapped, pfn, end) if self.swapped_pages else 0
        new = count - already
        _fill(self._backed, pfn, end, True)
        if refaulted:
            _fill(self._discarded, pfn, end, False)
        if swapped:
            _fill(self._swapped, pfn, end, False)
        return self._count_touches(new - refaulted - swapped, refaulted, swapped, cancelled, huge)

    def touch_pages(self, pfns: Iterable[int]) -> Touches:
        """Touch single pages (an order-0 fault each), counted as ``touch`` counts them."""
        backed, discarded, swapped, lazy = self._backed, self._discarded, self._swapped, self._lazy
        accessed, size = self._accessed, self.host_pages
        first = refaults = swap_ins = remaps = huge = 0
        for pfn in pfns:
            byte, bit = pfn >> 3, 1 << (pfn & 7)
            if accessed:
                accessed[byte] |= bit
            if backed[byte] & bit:
                if self.lazy_pages and lazy[byte] & bit:
                    lazy[byte] &= ~bit & 0xFF
                    self.lazy_pages -= 1
                    remaps += 1
                continue
            if size > 1 and self._fault_huge(pfn, pfn + 1):
                huge += 1
                continue
            backed[byte] |= bit
            if discarded[byte] & bit:
                discarded[byte] &= ~bit & 0xFF
                refaults += 1
            elif self.swapped_pages and swapped[byte] & bit:
                swapped[byte] &= ~bit & 0xFF
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
        size = self.host_pages
        if lazy:
            if not self._lazy:
                self._lazy = bytearray(len(self._backed))
            unmapped = 0
            for byte in range(pfn >> 3, ((end - 1) >> 3) + 1):
                mask = _byte_mask(byte, pfn, end) & self._backed[byte] & ~self._lazy[byte]
                self._lazy[byte] |= mask
                unmapped += mask.bit_count()
            self.lazy_pages += unmapped
            if self._huge and (pfn % size or count % size):
                self._split(pfn, end, freed_from_rss=False)
            return unmapped
        if self.swapped_pages:
            swapped = _count_bits(self._swapped, pfn, end)
            if swapped:
                _fill(self._swapped, pfn, end, False)
                self.swapped_pages -= swapped
        freed = _count_bits(self._backed, pfn, end)
        if freed:
            if self._huge:
                self._split(pfn, end, freed_from_rss=True)
            # Only pages that were backed can refault; a never-touched page stays a first touch.
            backed, discarded = self._backed, self._discarded
            for byte in range(pfn >> 3, ((end - 1) >> 3) + 1):
                discarded[byte] |= backed[byte] & _byte_mask(byte, pfn, end)
            _fill(backed, pfn, end, False)
            if self.lazy_pages:
                dropped = _count_bits(self._lazy, pfn, end)
                _fill(self._lazy, pfn, end, False)
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
        for region in range(pfn // size, (end - 1) // size + 1):
            if not huge[region >> 3] & (1 << (region & 7)):
                continue
            start, stop = region * size, min((region + 1) * size, self.total_pages)
            whole = pfn <= start and stop <= end
            if whole and not freed_from_rss:
                continue  # MADV_FREE of a whole huge page keeps it whole (lazyfree THP)
            huge[region >> 3] &= ~(1 << (region & 7)) & 0xFF
            if not whole and freed_from_rss:
                self.deferred_pages += _count_bits(self._backed, max(pfn, start), min(end, stop))

    def evict(self, pages: int, sweeps: int = 2) -> int:
        """Swap out up to ``pages`` backed pages (host reclaim), the hand going round at most
        ``sweeps`` times: returns how many.

        Lazily freed (MADV_FREE) pages go first, dropped without I/O. Then the host, which sees
        only guest-physical pages and not whether the guest uses them, swaps out pages from a
        moving hand: with accessed bits (``track_age``), a page touched since the hand last
        passed gets a second chance (its bit is cleared, as ``kvm_age_gfn`` clears the EPT
        accessed bit), so the victims are the pages untouched longest. hugetlb pages are never
        swapped; swapping a subpage of a host huge page splits it.
        """
        if self.hugetlb:
            return 0
        freed = self._drop_lazy(pages)
        if not self._swapped:
            self._swapped = bytearray(len(self._backed))
        backed, swapped, accessed = self._backed, self._swapped, self._accessed
        size = len(backed)
        evicted = 0
        pages -= freed
        for _ in range(sweeps * size):  # a second sweep finds the bits the first cleared
            if evicted >= pages:
                break
            byte = self._evict_hand
            self._evict_hand = (byte + 1) % size
            bits = backed[byte]
            if accessed:
                young = bits & accessed[byte]
                accessed[byte] &= ~bits & 0xFF
                bits &= ~young
            if not bits:
                continue
            if evicted + bits.bit_count() > pages:  # take only the low bits still needed
                keep = bits
                for _ in range(pages - evicted):
                    keep &= keep - 1
                bits ^= keep
                self._evict_hand = byte
            if self._huge:
                self._split_huge_at(byte)
            backed[byte] &= ~bits & 0xFF
            swapped[byte] |= bits
            evicted += bits.bit_count()
        self.rss_pages -= evicted
        self.swapped_pages += evicted
        self.swap_outs += evicted
        return freed + evicted

    def _split_huge_at(self, byte: int) -> None:
        """Reclaim takes subpages in bitmap byte ``byte``: their host huge page is split."""
        region = (byte << 3) // self.host_pages
        self._huge[region >> 3] &= ~(1 << (region & 7)) & 0xFF

    def _drop_lazy(self, pages: int) -> int:
        if not self.lazy_pages or pages <= 0:
            return 0
        backed, discarded, lazy = self._backed, self._discarded, self._lazy
        dropped = 0
        for byte, bits in enumerate(lazy):
            if dropped >= pages or dropped == self.lazy_pages:
                break
            if bits:
                backed[byte] &= ~bits & 0xFF
                discarded[byte] |= bits
                lazy[byte] = 0
                dropped += bits.bit_count()
                if self._huge:
                    self._split_huge_at(byte)
        self.lazy_pages -= dropped
        self.rss_pages -= dropped
        self.discarded_pages += dropped
        return dropped

    def backed_pages(self, pfn: int, count: int) -> int:
        """How many of pages [pfn, pfn+count) the host backs."""
        self._check(pfn, count)
        return _count_bits(self._backed, pfn, pfn + count)

    def is_backed(self, pfn: int) -> bool:
        return bool(self._backed[pfn >> 3] & (1 << (pfn & 7)))


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
