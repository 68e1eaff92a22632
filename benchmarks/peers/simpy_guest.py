"""The reference guest written as a SimPy user would write it: the peer of pagehint's actors.

Same model as ``pagehint.actors`` (zone.py, vcpu.py), on SimPy instead of trio actors:

* the zone lock is a ``simpy.Resource(capacity=1)``; on acquisition the allocator change is
  made at once, then the lock is held for ``costs.lock_hold_ns(blocks)`` (as ``Zone`` does);
* each vCPU is a SimPy process running a workload generator from ``actors/workloads/``,
  sending it the current time after each operation;
* per-CPU lists, their refills and drains, THP blocks from the zone or (5.14+) the per-CPU
  lists, host first-touch cost, and the chunking of sleeps are those of ``VCpu``; vmstat's
  once-a-second ``decay_pcp_high`` is not modelled, so kernels that auto-tune (6.7+) are refused.

The pure parts are shared, not copied: ``Costs`` (the same values), ``PerCpuPages`` (the
kernel's per-CPU list rules), ``BuddyAllocator`` and ``GuestBacking``. A benchmark against this
peer therefore compares the simulation engine and the actor layer, not the allocator. The
monitor, the per-requester ledger and logging of the actor model have no counterpart here: they
are not part of what is simulated. Lock wait is the time from a request to its acquisition of
the lock, as the zone actor records it (from the request's ``sent_ns`` to the moment its
``TimedLock`` is acquired).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import simpy

from pagehint.actors.mm.buddy import BuddyAllocator
from pagehint.actors.mm.costs import Costs
from pagehint.actors.mm.host_memory import GuestBacking
from pagehint.actors.mm.pcp import Drain, PcpRules, PcpSizes, PerCpuPages
from pagehint.actors.workloads import Loop, Map, Think, Unmap, Workload

Process = Generator[simpy.Event, Any, Any]


@dataclass(frozen=True)
class GuestParams:
    """Everything the model depends on, in pages and ns."""

    total_pages: int
    vcpus: int
    boot_pages: int
    costs: Costs
    pcp_rules: PcpRules
    pcp_sizes: PcpSizes
    pcp_orders: tuple[int, ...] = (0,)
    host_pages: int = 512  # host THP backing
    max_order: int = 11
    pageblock_order: int = 9


class Zone:
    """The zone lock in front of the buddy allocator, with lock statistics."""

    def __init__(self, env: simpy.Environment, allocator: BuddyAllocator, costs: Costs) -> None:
        self.env = env
        self.allocator = allocator
        self.costs = costs
        self.lock = simpy.Resource(env, capacity=1)
        self.requests = 0
        self.wait_total_ns = 0
        self.wait_max_ns = 0
        self.hold_total_ns = 0
        self.failed_allocations = 0

    def take_at_boot(self, pages: int, order: int) -> list[int]:
        """Blocks the booted kernel already uses (no lock: before any vCPU runs)."""
        return self.allocator.alloc_blocks(pages, order)

    def _acquired(self, sent_ns: float) -> None:
        wait = int(self.env.now - sent_ns)  # SimPy's clock is int | float; here always int ns
        self.requests += 1
        self.wait_total_ns += wait
        self.wait_max_ns = max(self.wait_max_ns, wait)

    def _hold(self, blocks: int) -> simpy.Timeout:
        hold = self.costs.lock_hold_ns(blocks)
        self.hold_total_ns += hold
        return self.env.timeout(hold)

    def alloc(self, order: int, count: int) -> Process:
        """Take up to ``count`` blocks of ``order`` under one hold; returns their pfns."""
        sent = self.env.now
        with self.lock.request() as request:
            yield request
            self._acquired(sent)
            allocator = self.allocator
            gate = allocator.watermarks.min
            if count == 1:
                pfn = allocator.alloc(order, gate=gate)
                pfns = [] if pfn is None else [pfn]
            else:
                pfns = allocator.alloc_bulk(order, count, gate=gate)
            if not pfns:
                self.failed_allocations += 1
            yield self._hold(max(1, len(pfns)))
        return pfns

    def free(self, order: int, pfns: list[int]) -> Process:
        """Return blocks of ``order`` under one hold."""
        sent = self.env.now
        with self.lock.request() as request:
            yield request
            self._acquired(sent)
            self.allocator.free_bulk((pfn, order) for pfn in pfns)
            yield self._hold(len(pfns))


class Vcpu:
    """One vCPU: runs its workload's operations in order, with a per-CPU list of pages."""

    def __init__(
        self,
        env: simpy.Environment,
        zone: Zone,
        backing: GuestBacking,
        workload: Workload,
        params: GuestParams,
    ) -> None:
        self.env = env
        self.zone = zone
        self.backing = backing
        self.workload = workload
        self.costs = params.costs
        if params.pcp_rules == "auto":
            raise ValueError("the SimPy peer does not model vmstat's decay of pcp->high")
        self.pcp = PerCpuPages(params.pcp_rules, params.pcp_sizes, params.pcp_orders)
        self.regions: dict[int, tuple[int, list[int]]] = {}  # region -> (order, pfns)
        self.mapped_pages = 0
        self.faults = 0
        self.loops = 0
        self.ooms = 0

    def run(self) -> Process:
        op = next(self.workload)
        while True:
            if type(op) is Map:
                yield from self.map(op)
            elif type(op) is Unmap:
                yield from self.unmap(op.region)
            elif type(op) is Think:
                yield self.env.timeout(op.duration_ns)
            elif type(op) is Loop:
                self.loops += 1
            op = self.workload.send(int(self.env.now))

    def map(self, op: Map) -> Process:
        order, mapped = self.regions.setdefault(op.region, (op.order, []))
        if order != op.order:
            raise ValueError(f"region {op.region} holds order-{order} blocks, not {op.order}")
        if op.order == 0:
            yield from self.fault_small_pages(op, mapped)
        else:
            yield from self.fault_large_blocks(op, mapped)

    def refill(self, order: int) -> Process:
        """Refill the empty list of ``order``; the value is False when the zone had nothing."""
        pcp = self.pcp
        refill = yield from self.zone.alloc(order, pcp.refill_size(order, self.zone_below_high()))
        pcp.add(order, refill)
        return bool(refill)

    def zone_below_high(self) -> bool:
        allocator = self.zone.allocator
        return allocator.free_pages < allocator.watermarks.high

    def give_back(self, drains: list[Drain]) -> Process:
        for order, pfns in drains:
            yield from self.zone.free(order, pfns)

    def fault_small_pages(self, op: Map, mapped: list[int]) -> Process:
        pcp, costs = self.pcp, self.costs
        per_page = costs.touch_ns(0, op.copy)
        hot = pcp.lists[0]
        needed = op.pages
        while needed:
            if not hot and not (yield from self.refill(0)):
                yield from self.out_of_memory(op)
                return
            chunk = pcp.take(0, needed)
            take = len(chunk)
            mapped.extend(chunk)
            self.mapped_pages += take
            host_ns = self.host_cost(*self.backing.touch_pages(chunk))
            self.faults += take
            needed -= take
            yield self.env.timeout(take * per_page + host_ns)

    def fault_large_blocks(self, op: Map, mapped: list[int]) -> Process:
        costs, pcp = self.costs, self.pcp
        block_pages = 1 << op.order
        cached = pcp.holds(op.order)
        for _ in range(-(-op.pages // block_pages)):
            if cached:
                if not pcp.lists[op.order] and not (yield from self.refill(op.order)):
                    yield from self.out_of_memory(op)
                    return
                got = pcp.take(op.order, 1)
            else:
                got = yield from self.zone.alloc(op.order, 1)
                if not got:
                    yield from self.out_of_memory(op)
                    return
            mapped.append(got[0])
            self.mapped_pages += block_pages
            host_ns = self.host_cost(*self.backing.touch(got[0], block_pages))
            self.faults += block_pages
            yield self.env.timeout(costs.touch_ns(op.order, op.copy) + host_ns)

    def host_cost(self, first: int, refaults: int, swap_ins: int, remaps: int, huge: int) -> int:
        """What the host's side of a touch costs this vCPU: backing new or discarded pages,
        reading swapped ones back, mapping back pages it had MADV_FREEd."""
        costs = self.costs
        cost = costs.host_fault_ns(first + refaults, huge, self.backing.host_pages)
        cost += swap_ins * costs.swap_in_4k
        return cost + costs.host_remap_ns(remaps) if remaps else cost

    def unmap(self, region: int) -> Process:
        entry = self.regions.pop(region, None)
        if entry is None:
            return
        order, pfns = entry
        if order == 0:
            yield from self.free_small_pages(pfns)
            return
        pcp, cost = self.pcp, self.costs.unmap_ns(order)
        for pfn in pfns:
            self.mapped_pages -= 1 << order
            if pcp.holds(order):
                yield from self.give_back(pcp.free(order, [pfn], self.zone_below_high()))
            else:
                yield from self.zone.free(order, [pfn])
            yield self.env.timeout(cost)

    def free_small_pages(self, pfns: list[int]) -> Process:
        """Free to the per-CPU list a batch at a time, with the drains the frees bring."""
        pcp, batch = self.pcp, self.pcp.batch
        per_page = self.costs.unmap_ns(0)
        for start in range(0, len(pfns), batch):
            chunk = pfns[start : start + batch]
            self.mapped_pages -= len(chunk)
            yield from self.give_back(pcp.free(0, chunk, self.zone_below_high()))
            yield self.env.timeout(len(chunk) * per_page)

    def out_of_memory(self, op: Map) -> Process:
        """The OOM killer takes the task: its mapping goes."""
        self.ooms += 1
        yield from self.unmap(op.region)


@dataclass
class GuestRun:
    """What one run of the SimPy guest measured."""

    duration_ns: int
    wall_s: float  # building the guest (allocator boot included) and running it
    cpu_s: float  # the same span in this process's CPU time
    vcpus: list[Vcpu]
    zone: Zone
    backing: GuestBacking
    boot_pages: int  # pages the booted kernel holds (whole boot blocks)

    @property
    def faults(self) -> int:
        return sum(vcpu.faults for vcpu in self.vcpus)

    @property
    def freed_pages(self) -> int:
        """Pages the workload unmapped (to the per-CPU list or the zone)."""
        return sum(vcpu.faults - vcpu.mapped_pages for vcpu in self.vcpus)

    @property
    def faults_per_s_per_vcpu(self) -> float:
        return self.faults / len(self.vcpus) / (self.duration_ns / 1e9)

    @property
    def lock_wait_mean_ns(self) -> float:
        zone = self.zone
        return zone.wait_total_ns / zone.requests if zone.requests else 0.0


def run_guest(
    params: GuestParams, workload_for: Callable[[int], Workload], duration_ns: int
) -> GuestRun:
    """Boot the guest, run ``workload_for(i)`` on vCPU ``i`` for ``duration_ns`` of sim time."""
    started, started_cpu = time.perf_counter(), time.process_time()
    env = simpy.Environment()
    allocator = BuddyAllocator(params.total_pages, params.max_order, params.pageblock_order)
    backing = GuestBacking(params.total_pages, params.host_pages)
    zone = Zone(env, allocator, params.costs)
    boot_order = min(params.pageblock_order, params.max_order - 1)
    boot_blocks = zone.take_at_boot(params.boot_pages, boot_order)
    for pfn in boot_blocks:
        backing.touch(pfn, 1 << boot_order)
    vcpus = [Vcpu(env, zone, backing, workload_for(i), params) for i in range(params.vcpus)]
    for vcpu in vcpus:
        env.process(vcpu.run())
    env.run(until=duration_ns)
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    boot_pages = len(boot_blocks) << boot_order
    return GuestRun(duration_ns, wall, cpu, vcpus, zone, backing, boot_pages)
