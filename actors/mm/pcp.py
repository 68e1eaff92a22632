"""One CPU's per-CPU free lists (``struct per_cpu_pages``) and each kernel's rules for them.

Pure: a vCPU asks what the lists do on an allocation or a free and makes the zone requests
itself. The rules are ``mm/page_alloc.c``'s, per kernel (``docs/kernels.md`` quotes them):

- ``fixed`` (5.7, 5.10): order-0 pages only; ``high = 6 * batch`` (``pageset_set_batch``); a
  refill takes ``batch`` pages (``rmqueue_bulk``); a free that brings ``count`` to ``high``
  drains ``batch`` pages (``free_unref_page_commit``, ``free_pcppages_bulk``).
- ``scaled`` (5.14): also THP-order blocks (44042b449872, ``pcp_allowed_order``); ``high`` from
  the zone's low watermark split over the CPUs, at least ``4 * batch`` (``zone_highsize``); a
  high-order refill takes ``max(batch >> order, 2)`` blocks; a drain frees ``batch <<
  free_factor`` pages, clamped to ``[batch, high - batch]``, doubling while frees follow frees
  (3b12e7e97938, ``nr_pcp_free``), halved by each allocation.
- ``auto`` (6.7 and later): ``high`` moves between ``high_min`` (the 5.14 value) and
  ``high_max`` (an eighth of the zone split over the CPUs): a refill raises it by ``batch``
  (``nr_pcp_alloc``), a free finding the list full raises it to hold the pages freed in a row
  (``nr_pcp_high``), a zone below its high watermark lowers it, and once a second
  ``decay_pcp_high`` lowers it by an eighth and drains what is above it. A drain frees the
  pages freed in a row (``free_count``), clamped to ``[batch, high - batch]``.

Simplifications, said where users read them (``docs/kernels.md``): one migratetype (the
workloads' anonymous memory is movable); a drain goes through the list of the order just freed
first, then the others (6.0's order; 5.14 went round-robin); the pages a refill brings are
taken hot end first as they were added.
"""

from __future__ import annotations

from typing import Literal

import attrs

PcpRules = Literal["fixed", "scaled", "auto"]
BATCH_SCALE_MAX = 5  # CONFIG_PCP_BATCH_SCALE_MAX default (6.7, mm/Kconfig)
HIGH_FRACTION_MAX = 8  # MIN_PERCPU_PAGELIST_HIGH_FRACTION: high_max's share of the zone
COSTLY_ORDER = 3  # PAGE_ALLOC_COSTLY_ORDER


def zone_batchsize(managed_pages: int, page_size: int = 4096) -> int:
    """``zone_batchsize()``: ~0.1% of the zone or 1 MiB, whichever is smaller, quartered, as
    2^n - 1 (d8a759b57035 doubled the 512 KiB cap to 1 MiB); at least 1
    (``zone_set_pageset_high_and_batch``). 63 for zones of 1 GiB and more."""
    batch = min(managed_pages >> 10, (1 << 20) // page_size) // 4
    batch = max(batch, 1)
    return max(1, (1 << ((batch + batch // 2).bit_length() - 1)) - 1)


def zone_highsize(total_pages: int, batch: int, cpus: int) -> int:
    """``zone_highsize()``: ``total_pages`` split over the zone's CPUs, at least ``4 * batch``."""
    return max(total_pages // max(cpus, 1), batch << 2)


@attrs.frozen
class PcpSizes:
    """A zone's per-CPU list sizing: ``pcp->batch``, ``pcp->high_min`` and ``pcp->high_max``."""

    batch: int
    high_min: int
    high_max: int

    @classmethod
    def for_kernel(
        cls, rules: PcpRules, batch: int, low_wmark: int, managed_pages: int, cpus: int
    ) -> PcpSizes:
        if rules == "fixed":
            return cls(batch, 6 * batch, 6 * batch)
        high_min = zone_highsize(low_wmark, batch, cpus)
        if rules == "scaled":
            return cls(batch, high_min, high_min)
        return cls(batch, high_min, zone_highsize(managed_pages // HIGH_FRACTION_MAX, batch, cpus))


Drain = tuple[int, list[int]]  # (order, pfns) to give back to the zone under one lock hold


class PerCpuPages:
    """One CPU's lists: pfns per order, the hot end last; ``count`` in pages."""

    def __init__(self, rules: PcpRules, sizes: PcpSizes, orders: tuple[int, ...] = (0,)) -> None:
        self.rules = rules
        self.batch = sizes.batch
        self.high_min, self.high_max = sizes.high_min, sizes.high_max
        self.high = sizes.high_min
        self.lists: dict[int, list[int]] = {order: [] for order in orders}
        self.count = 0
        self.free_factor = 0  # 5.14: drains double while frees follow frees
        self.free_count = 0  # 6.7: pages freed in a row, halved by each allocation
        self.alloc_factor = 0  # 6.7: refills double while allocations follow allocations
        self.tuned = rules == "auto" and self.high_min != self.high_max

    def holds(self, order: int) -> bool:
        """``pcp_allowed_order``: whether blocks of ``order`` live on these lists."""
        return order in self.lists

    # -- allocation ----------------------------------------------------------------------
    def refill_size(self, order: int, zone_below_high: bool) -> int:
        """Blocks of ``order`` to take from the zone when that list is empty
        (``rmqueue_bulk``'s count: ``nr_pcp_alloc`` in 6.7, ``pcp->batch`` before)."""
        batch = self.batch
        if self.rules == "fixed":
            return batch
        if self.rules == "auto":
            high = self.high = min(max(self.high, self.high_min), self.high_max)
            if high < batch:
                return 1
            if order == 0:
                batch <<= self.alloc_factor
            if self.tuned and not zone_below_high:
                high = self.high = min(high + batch, self.high_max)
            if order == 0:
                max_nr_alloc = max(high - self.count - self.batch, self.batch)
                if batch <= max_nr_alloc and self.alloc_factor < BATCH_SCALE_MAX:
                    self.alloc_factor += 1
                batch = min(batch, max_nr_alloc)
        return max(batch >> order, 2) if batch > 1 and order else batch

    def add(self, order: int, pfns: list[int] | tuple[int, ...]) -> None:
        """Blocks a refill brought from the zone."""
        self.lists[order].extend(pfns)
        self.count += len(pfns) << order

    def take(self, order: int, wanted: int) -> list[int]:
        """Up to ``wanted`` blocks from the hot end, one allocation each (``rmqueue_pcplist``)."""
        pfns = self.lists[order]
        taken = min(wanted, len(pfns))
        if not taken:
            return []
        chunk = pfns[-taken:]
        del pfns[-taken:]
        self.count -= taken << order
        self.free_factor >>= min(taken, 63)
        self.free_count >>= min(taken, 63)
        return chunk

    def take_all(self) -> list[Drain]:
        """Empty every list (``drain_all_pages``): what goes back to the zone, by order."""
        drains: list[Drain] = []
        for order, pfns in self.lists.items():
            if pfns:
                drains.append((order, pfns[:]))
                self.count -= len(pfns) << order
                del pfns[:]  # in place: a caller may hold the list
        return drains

    # -- freeing -------------------------------------------------------------------------
    def free(self, order: int, pfns: list[int], zone_below_high: bool = False) -> list[Drain]:
        """Free blocks of ``order`` to the hot end, one ``free_unref_page_commit`` each;
        return what they drained to the zone, in order."""
        drains: list[Drain] = []
        size = 1 << order
        index, total = 0, len(pfns)
        lst = self.lists[order]
        while index < total:
            if self.rules == "auto":
                self.high = min(max(self.high, self.high_min), self.high_max)
            high = self.high
            # Frees before the one that reaches ``high`` change nothing else: add them at once.
            step = 1
            if not (self.tuned and zone_below_high):
                step = max(1, -(-(high - self.count) // size))
            step = min(step, total - index)
            lst.extend(pfns[index : index + step])
            index += step
            self.count += step * size
            self.alloc_factor >>= min(step, 63)
            cap = self.batch << BATCH_SCALE_MAX  # each free counts while below the cap
            if self.rules == "auto" and self.free_count < cap:
                self.free_count += min(step, -(-(cap - self.free_count) // size)) * size
            high = self._high_after_free(high, zone_below_high)
            if self.count >= high:
                drains += self._drain(self._nr_to_free(high), order)
        return drains

    def _high_after_free(self, high: int, zone_below_high: bool) -> int:
        """``nr_pcp_high`` (6.7) for the free just made: the ``high`` it is checked against,
        after raising or lowering ``pcp->high`` for the frees to come."""
        if not self.tuned:
            return high
        if zone_below_high:
            self.high = max(high - max(self.free_count, self.batch), self.high_min)
            return max(self.count, self.high_min)
        if self.count >= high:
            need_high = self.free_count + self.batch
            if self.high < need_high:
                self.high = min(max(need_high, self.high_min), self.high_max)
        return high

    def _nr_to_free(self, high: int) -> int:
        """``nr_pcp_free``: pages one drain frees."""
        batch = self.batch
        if self.rules == "fixed":
            return batch
        if high < batch:
            return 1
        low, top = batch, high - batch
        if self.rules == "scaled":
            scaled = batch << self.free_factor
            if scaled < top:
                self.free_factor += 1
            return min(max(scaled, low), top)
        return min(max(self.free_count, low), top)

    def _drain(self, pages: int, first: int) -> list[Drain]:
        """``free_pcppages_bulk``: cold ends first, the list of ``first`` order first."""
        drains: list[Drain] = []
        orders = [first, *(order for order in self.lists if order != first)]
        for order in orders:
            lst = self.lists[order]
            if pages <= 0 or not lst:
                continue
            blocks = min(len(lst), -(-pages >> order))  # whole blocks: a THP counts 512
            cold = lst[:blocks]
            del lst[:blocks]
            self.count -= blocks << order
            pages -= blocks << order
            drains.append((order, cold))
        return drains

    def decay(self) -> list[Drain]:
        """``decay_pcp_high`` (6.7), run once a second by vmstat on each CPU: lower ``high``
        by an eighth, towards ``high_min``, and drain what is above it."""
        if self.rules != "auto":
            return []
        batch = self.batch
        if self.high > self.high_min:
            self.high = max(
                self.count - (batch << BATCH_SCALE_MAX),
                self.high - (self.high >> 3),
                self.high_min,
            )
        excess = self.count - self.high
        return self._drain(excess, 0) if excess > 0 else []
