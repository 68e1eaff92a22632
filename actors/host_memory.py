"""The host's view of one guest's memory: which guest pages are backed by host memory.

A guest page costs the host memory from the first time the guest touches it (an EPT fault the
host serves with a zeroed page) until the host discards it (``MADV_DONTNEED`` on a hint). A touch
of a discarded page is a *refault*: the host must supply a zeroed page again.

Two bitmaps of one bit per 4 KiB page: 32 MiB each for a 1 TiB guest, and range operations work a
byte (8 pages) at a time, so touching or discarding a 2 MiB block is a slice assignment.
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


class GuestBacking:
    """Backed and discarded guest pages, with RSS and fault counts."""

    __slots__ = ("_backed", "_discarded", "first_touches", "refaults", "rss_pages", "total_pages")

    def __init__(self, total_pages: int) -> None:
        if total_pages <= 0:
            raise ValueError(f"a guest needs at least one page, got {total_pages}")
        self.total_pages = total_pages
        self._backed = bytearray((total_pages + 7) // 8)
        self._discarded = bytearray((total_pages + 7) // 8)
        self.rss_pages = 0
        self.first_touches = 0
        self.refaults = 0

    def _check(self, pfn: int, count: int) -> None:
        if pfn < 0 or count < 0 or pfn + count > self.total_pages:
            raise ValueError(
                f"pages [{pfn}, {pfn + count}) are outside the guest's {self.total_pages} pages"
            )

    def touch(self, pfn: int, count: int = 1) -> tuple[int, int]:
        """The guest writes pages [pfn, pfn+count): returns (first touches, refaults)."""
        self._check(pfn, count)
        end = pfn + count
        already = _count_bits(self._backed, pfn, end)
        if already == count:
            return 0, 0
        refaulted = _count_bits(self._discarded, pfn, end)
        new = count - already
        _fill(self._backed, pfn, end, True)
        if refaulted:
            _fill(self._discarded, pfn, end, False)
        self.rss_pages += new
        self.first_touches += new - refaulted
        self.refaults += refaulted
        return new - refaulted, refaulted

    def touch_pages(self, pfns: Iterable[int]) -> tuple[int, int]:
        """Touch single pages (an order-0 fault each): returns (first touches, refaults)."""
        backed, discarded = self._backed, self._discarded
        first = refaults = 0
        for pfn in pfns:
            byte, bit = pfn >> 3, 1 << (pfn & 7)
            if backed[byte] & bit:
                continue
            backed[byte] |= bit
            if discarded[byte] & bit:
                discarded[byte] &= ~bit & 0xFF
                refaults += 1
            else:
                first += 1
        self.rss_pages += first + refaults
        self.first_touches += first
        self.refaults += refaults
        return first, refaults

    def discard(self, pfn: int, count: int) -> int:
        """The host drops pages [pfn, pfn+count) (MADV_DONTNEED): returns pages freed."""
        self._check(pfn, count)
        end = pfn + count
        freed = _count_bits(self._backed, pfn, end)
        if freed:
            # Only pages that were backed can refault; a never-touched page stays a first touch.
            backed, discarded = self._backed, self._discarded
            for byte in range(pfn >> 3, ((end - 1) >> 3) + 1):
                low = max(pfn, byte << 3) - (byte << 3)
                high = min(end, (byte + 1) << 3) - (byte << 3)
                discarded[byte] |= backed[byte] & (((1 << (high - low)) - 1) << low)
            _fill(backed, pfn, end, False)
            self.rss_pages -= freed
        return freed

    def is_backed(self, pfn: int) -> bool:
        return bool(self._backed[pfn >> 3] & (1 << (pfn & 7)))
