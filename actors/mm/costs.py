"""The cost model: virtual time charged for each thing the guest and host do.

Pure data with the arithmetic next to it, so a reviewer sees every number a result depends on
in one place. Defaults are orders of magnitude for a current x86-64 server, not measurements
of any machine: will-it-scale's page_fault1 does roughly 0.5-1 M faults/s per task, zeroing
runs at tens of GB/s, and a zone-lock hold is a few hundred ns plus tens of ns per page.
"""

from __future__ import annotations

import attrs

from pagehint.protocol.units import Nanos


@attrs.frozen
class Costs:
    """Virtual-time costs; every field is a duration ("250ns", "1.5us") or integer ns."""

    fault_4k: Nanos = Nanos(600)
    """Guest page-fault handling for one 4 KiB page (entry, page table, accounting)."""
    zero_4k: Nanos = Nanos(150)
    """Zero-filling a 4 KiB page on first touch."""
    copy_4k: Nanos = Nanos(300)
    """Copying a 4 KiB page (copy-on-write fault of a private file mapping)."""
    fault_2m: Nanos = Nanos(2_000)
    """Guest fault handling for one 2 MiB THP."""
    zero_2m: Nanos = Nanos(60_000)
    """Zero-filling a 2 MiB THP."""
    unmap_4k: Nanos = Nanos(80)
    """Unmapping one 4 KiB page (zap, TLB flush share, freeing to the per-CPU list)."""
    unmap_2m: Nanos = Nanos(1_000)
    """Unmapping one 2 MiB THP."""
    zone_lock_base: Nanos = Nanos(200)
    """Holding the zone lock for one request: acquire, release, cache-line transfer."""
    zone_lock_per_block: Nanos = Nanos(40)
    """Extra zone-lock hold per block taken or returned (list work, split or merge)."""
    host_fault_4k: Nanos = Nanos(1_500)
    """Host side of a guest's first touch of a 4 KiB page: EPT violation exit, host allocation
    and zeroing. Also charged for a refault of a discarded page."""
    host_fault_2m: Nanos = Nanos(80_000)
    """Host side of a first touch of a 2 MiB range backed by a host huge page."""
    swap_in_4k: Nanos = Nanos(60_000)
    """A guest touch of a page the host swapped out: a major fault on the host (SSD read)."""
    kick: Nanos = Nanos(5_000)
    """A virtqueue kick: VM exit, ioeventfd, waking the device thread."""
    interrupt: Nanos = Nanos(3_000)
    """A used-buffer interrupt: injection, the guest's handler."""
    madvise_call: Nanos = Nanos(1_000)
    """Host madvise() system call overhead, per discarded range."""
    dontneed_4k: Nanos = Nanos(80)
    """MADV_DONTNEED per 4 KiB page: zap the mapping, free the page at once."""
    free_4k: Nanos = Nanos(30)
    """MADV_FREE per 4 KiB page: mark lazily freeable (cheaper; freed under pressure)."""

    def discard_ns(self, pages: int, lazy: bool) -> int:
        """Host cost of discarding a range of ``pages`` pages (one madvise call)."""
        return self.madvise_call + pages * (self.free_4k if lazy else self.dontneed_4k)

    def lock_hold_ns(self, blocks: int) -> int:
        return self.zone_lock_base + self.zone_lock_per_block * blocks

    def touch_ns(self, order: int, copy: bool = False) -> int:
        """Guest cost of faulting in one block of ``order`` (0: 4 KiB; 9: THP)."""
        if order == 0:
            return self.fault_4k + (self.copy_4k if copy else self.zero_4k)
        return self.fault_2m + self.zero_2m * (1 << order) // 512

    def unmap_ns(self, order: int) -> int:
        return self.unmap_4k if order == 0 else self.unmap_2m

    def host_fault_ns(self, pages: int) -> int:
        """Host cost of backing ``pages`` guest pages (huge pages where the range allows)."""
        huge, small = divmod(pages, 512)
        return huge * self.host_fault_2m + small * self.host_fault_4k
