"""The host's view of one guest's memory: which guest pages are backed by host memory.

A guest page costs the host memory from the first time the guest touches it (an EPT fault the
host serves with a zeroed page) until the host discards it (``MADV_DONTNEED`` on a hint) or
swaps it out under memory pressure. A touch of a discarded page is a *refault* (the host supplies
a zeroed page again); a touch of a swapped-out page is a *swap-in*, much dearer. The host cannot
tell a guest-free page from a used one: without hints it swaps both alike.

Bitmaps of one bit per 4 KiB page (32 MiB each for a 1 TiB guest); range operations work a byte
(8 pages) at a time, so touching or discarding a 2 MiB block is a slice assignment.
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


Touches = tuple[int, int, int, int]  # first touches, refaults, swap-ins, remaps
UNTOUCHED: Touches = (0, 0, 0, 0)  # a touch of pages the host backs and maps: nothing to do


class GuestBacking:
    """Backed and discarded guest pages, with RSS and fault counts."""

    __slots__ = (
        "_backed",
        "_discarded",
        "_evict_hand",
        "_lazy",
        "_swapped",
        "discarded_pages",
        "first_touches",
        "lazy_pages",
        "refaults",
        "rss_pages",
        "swap_ins",
        "swap_outs",
        "swapped_pages",
        "total_pages",
    )

    def __init__(self, total_pages: int) -> None:
        if total_pages <= 0:
            raise ValueError(f"a guest needs at least one page, got {total_pages}")
        self.total_pages = total_pages
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
        the guest's first touches."""
        _fill(self._backed, 0, self.total_pages, True)
        self.rss_pages = self.total_pages

    def touch(self, pfn: int, count: int = 1) -> Touches:
        """The guest writes pages [pfn, pfn+count): (first touches, refaults, swap-ins,
        remaps: pages the host had MADV_FREEd and reclaim had not taken, still backed but
        unmapped from the guest, so each touch is an EPT-violation exit)."""
        self._check(pfn, count)
        end = pfn + count
        cancelled = 0
        if self.lazy_pages:  # a write cancels a lazy free that reclaim has not taken yet
            cancelled = _count_bits(self._lazy, pfn, end)
            if cancelled:
                _fill(self._lazy, pfn, end, False)
                self.lazy_pages -= cancelled
        already = _count_bits(self._backed, pfn, end)
        if already == count:
            return (0, 0, 0, cancelled) if cancelled else UNTOUCHED
        refaulted = _count_bits(self._discarded, pfn, end)
        swapped = _count_bits(self._swapped, pfn, end) if self.swapped_pages else 0
        new = count - already
        _fill(self._backed, pfn, end, True)
        if refaulted:
            _fill(self._discarded, pfn, end, False)
        if swapped:
            _fill(self._swapped, pfn, end, False)
        return self._count_touches(new - refaulted - swapped, refaulted, swapped, cancelled)

    def touch_pages(self, pfns: Iterable[int]) -> Touches:
        """Touch single pages (an order-0 fault each), counted as ``touch`` counts them."""
        backed, discarded, swapped, lazy = self._backed, self._discarded, self._swapped, self._lazy
        first = refaults = swap_ins = remaps = 0
        for pfn in pfns:
            byte, bit = pfn >> 3, 1 << (pfn & 7)
            if backed[byte] & bit:
                if self.lazy_pages and lazy[byte] & bit:
                    lazy[byte] &= ~bit & 0xFF
                    self.lazy_pages -= 1
                    remaps += 1
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
        return self._count_touches(first, refaults, swap_ins, remaps)

    def _count_touches(self, first: int, refaults: int, swap_ins: int, remaps: int) -> Touches:
        self.rss_pages += first + refaults + swap_ins
        self.first_touches += first
        self.refaults += refaults
        self.swap_ins += swap_ins
        self.swapped_pages -= swap_ins
        return first, refaults, swap_ins, remaps

    def discard(self, pfn: int, count: int, *, lazy: bool = False) -> int:
        """The host drops pages [pfn, pfn+count): returns the pages whose mapping into the
        guest it removed (what makes KVM flush the guest's TLBs; 0: nothing was mapped).

        ``MADV_DONTNEED`` (the default) frees them at once; swapped-out pages in the range lose
        their swap slots too. ``lazy`` is ``MADV_FREE``: the pages stay in RSS, marked free,
        until reclaim takes them (first, and without swapping) or a guest write cancels it; the
        mmu notifier still unmaps them from the guest (``madvise_free_single_vma``).
        """
        self._check(pfn, count)
        end = pfn + count
        if lazy:
            if not self._lazy:
                self._lazy = bytearray(len(self._backed))
            unmapped = 0
            for byte in range(pfn >> 3, ((end - 1) >> 3) + 1):
                mask = _byte_mask(byte, pfn, end) & self._backed[byte] & ~self._lazy[byte]
                self._lazy[byte] |= mask
                unmapped += mask.bit_count()
            self.lazy_pages += unmapped
            return unmapped
        if self.swapped_pages:
            swapped = _count_bits(self._swapped, pfn, end)
            if swapped:
                _fill(self._swapped, pfn, end, False)
                self.swapped_pages -= swapped
        freed = _count_bits(self._backed, pfn, end)
        if freed:
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
            self.discarded_pages += freed
        return freed

    def evict(self, pages: int) -> int:
        """Swap out up to ``pages`` backed pages (host reclaim): returns how many.

        Lazily freed (MADV_FREE) pages go first, dropped without I/O. Then the host, which sees
        only guest-physical pages and not whether the guest uses them, swaps pages out in address
        order from a moving hand (a CLOCK with no reference bits).
        """
        freed = self._drop_lazy(pages)
        if not self._swapped:
            self._swapped = bytearray(len(self._backed))
        backed, swapped = self._backed, self._swapped
        size = len(backed)
        evicted = 0
        pages -= freed
        for _ in range(size):
            if evicted >= pages:
                break
            byte = self._evict_hand
            self._evict_hand = (byte + 1) % size
            bits = backed[byte]
            if not bits:
                continue
            if evicted + bits.bit_count() > pages:  # take only the low bits still needed
                keep = bits
                for _ in range(pages - evicted):
                    keep &= keep - 1
                bits ^= keep
                self._evict_hand = byte
            backed[byte] &= ~bits & 0xFF
            swapped[byte] |= bits
            evicted += bits.bit_count()
        self.rss_pages -= evicted
        self.swapped_pages += evicted
        self.swap_outs += evicted
        return freed + evicted

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
