"""The cost model: virtual time charged for each thing the guest and host do.

Pure data with the arithmetic next to it. The values come from a hardware profile
(``profiles.py``; every number, its source and its arithmetic in ``cost_profiles.toml`` and
``docs/costs.md``); a scenario picks the profile with ``costs.profile`` and may override any
single cost.
"""

from __future__ import annotations

import attrs

from pagehint.protocol.units import Nanos


@attrs.frozen
class Costs:
    """Virtual-time costs in ns, one field per cost of ``cost_profiles.toml`` (documented there)."""

    fault_4k: Nanos
    zero_4k: Nanos
    copy_4k: Nanos
    fault_2m: Nanos
    zero_2m: Nanos
    unmap_4k: Nanos
    unmap_2m: Nanos
    zone_lock_base: Nanos
    zone_lock_per_block: Nanos
    host_fault_4k: Nanos
    host_fault_2m: Nanos
    swap_in_4k: Nanos
    kick: Nanos
    interrupt: Nanos
    madvise_call: Nanos
    dontneed_4k: Nanos
    free_4k: Nanos
    host_remap_4k: Nanos
    shootdown: Nanos
    report_per_entry: Nanos
    sort_per_entry: Nanos
    swap_out_4k: Nanos

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

    def host_fault_ns(self, pages: int, huge_faults: int = 0, huge_pages: int = 512) -> int:
        """Host cost of backing ``pages`` 4 KiB pages one by one and ``huge_faults`` host huge
        pages of ``huge_pages`` pages each (a 1 GiB page clears as 512 of 2 MiB)."""
        huge = huge_faults * self.host_fault_2m * (huge_pages // 512) if huge_faults else 0
        return pages * self.host_fault_4k + huge

    def host_remap_ns(self, pages: int) -> int:
        """Host cost of mapping back ``pages`` pages it still backs: an exit per 4 KiB page,
        or per 2 MiB where the range allows (simplified as ``host_fault_ns`` is)."""
        huge, small = divmod(pages, 512)
        return (huge + small) * self.host_remap_4k
