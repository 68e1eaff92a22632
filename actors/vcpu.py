"""A vCPU: runs one workload and spends virtual time doing it.

Order-0 pages, and THP-order blocks on kernels that keep them there (5.14+), come from the
vCPU's own per-CPU lists (``PerCpuPages``), with no zone lock; an empty list is refilled in one
zone request (``rmqueue_bulk``) and a full one drained in one (``free_pcppages_bulk``), by the
guest kernel's rules. Other orders go to the zone directly. On a kernel that auto-tunes the
lists' ``high`` (6.7+), the vCPU runs vmstat's ``decay_pcp_high`` once a second of its own time,
between operations or during a think, as the per-CPU vmstat work does. Touching a page the host
has not backed costs the host's fault time too; the host's view of guest memory records it.

A vCPU takes the zone lock itself (``Zone.request``), as a CPU does, and spends the lock's hold
in the same sleep as the work that follows it (``_spend``): one scheduler pass per fault.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import attrs
import trio

from pagehint.runtime import Actor

from .cputime import FAULT, IDLE, LOCK_WAIT, WORK, CpuTime
from .mm.buddy import InvariantViolation
from .mm.costs import Costs
from .mm.host_memory import UNTOUCHED, GuestBacking, HostMemory
from .mm.pcp import Drain, PerCpuPages
from .workloads import Done, Loop, Map, Op, Phase, Think, Unmap, Workload, idle
from .zone import Zone

VMSTAT_INTERVAL_NS = 1_000_000_000  # sysctl_stat_interval = HZ: vmstat_update once a second


@attrs.define
class VcpuCounters:
    faults: int = 0  # pages touched (will-it-scale counts one iteration per page)
    loops: int = 0
    ooms: int = 0
    host_first_touches: int = 0
    host_refaults: int = 0
    host_swap_ins: int = 0
    host_remaps: int = 0  # touches of pages the host had MADV_FREEd (and not yet reclaimed)
    thp_fallbacks: int = 0  # THP faults served with 4 KiB pages (THP_FAULT_FALLBACK)
    false_ooms: int = 0  # OOM kills its faults caused that isolated memory would have spared
    lost_faults: int = 0  # faults of mappings the OOM killer took: not work done


@attrs.frozen
class PhaseMark:
    """Where a phase of a phased workload began on this vCPU, and the counters then."""

    index: int
    name: str
    task: bool  # the vCPU runs the phase's workload (False: it halts through the phase)
    start_ns: int
    faults: int
    loops: int
    cpu: tuple[int, ...]  # the vCPU's time by kind then


class VCpu(Actor):
    """One guest vCPU executing a workload's operations in order."""

    def __init__(
        self,
        name: str,
        zone: Zone,
        backing: GuestBacking,
        workload: Workload,
        costs: Costs,
        pcp: PerCpuPages,
        host: HostMemory | None = None,
    ) -> None:
        super().__init__(name)
        self.zone = zone
        self.backing = backing
        self.workload = workload
        self.costs = costs
        self.pcp = pcp
        self.host = host  # the host's memory, when it has a limit (direct reclaim)
        self._next_vmstat_ns = VMSTAT_INTERVAL_NS if pcp.rules == "auto" else None
        self.regions: dict[int, tuple[int, list[int]]] = {}  # region -> (order, pfns)
        self.fallbacks: dict[int, list[int]] = {}  # region -> its THP faults' 4 KiB fallbacks
        self.counters = VcpuCounters()
        self.mapped_pages = 0
        self.cpu = CpuTime()  # where this vCPU's time goes; other actors charge it too
        self.siblings: list[VCpu] = [self]  # the guest's vCPUs (set when the guest is built)
        self.oom_lock = trio.Lock()  # the guest's oom_lock (shared, set when it is built)
        self.oom_killed = False  # chosen by the OOM killer: its workload ends
        self.reaped = trio.Event()  # its memory is freed
        self.work_start_ns: int | None = None  # its first operation (after its start delay)
        self.work_end_ns: int | None = None  # its workload ended (or it was killed)
        self.phases: list[PhaseMark] = []
        self._lock_release_ns = 0  # until then this vCPU still holds the zone lock
        self._hold_kind = FAULT  # what that hold was for

    def check_ledger(self) -> None:
        """Between operations every page the zone lent this vCPU is mapped or on its pcp list,
        and its time by kind sums to the time elapsed."""
        lent = self.zone.held_by.get(self.name, 0)
        if lent != self.pcp.count + self.mapped_pages:
            raise InvariantViolation(
                f"{self.name}: the zone lent {lent} pages but {self.pcp.count} are on the pcp "
                f"lists and {self.mapped_pages} mapped"
            )
        accounted = sum(self.cpu.totals)
        if accounted != self.clock.now_ns():
            raise InvariantViolation(
                f"{self.name}: its time by kind sums to {accounted} ns, not the {self.now_ns} ns "
                "elapsed"
            )

    async def run(self) -> None:
        op: Op = next(self.workload)
        while True:
            if self.work_start_ns is None and (type(op) is not Think or not op.idle):
                self.work_start_ns = self.clock.now_ns()
            if type(op) is Map:  # faults sleep straight from here: no level between
                if op.order == 0:
                    await self._fault_small_pages(op, self._region(op))
                else:
                    await self._fault_large_blocks(op, self._region(op))
            elif type(op) is Unmap:
                await self._unmap(op.region)
            elif type(op) is Think:
                await self._think(op.duration_ns, op.idle)
            elif type(op) is Loop:
                self.counters.loops += 1
            elif type(op) is Done:
                self.work_end_ns = self.clock.now_ns()
            elif type(op) is Phase:
                counters = self.counters
                now, totals = self.now_ns, tuple(self.cpu.totals)
                mark = PhaseMark(
                    op.index, op.name, op.task, now, counters.faults, counters.loops, totals
                )
                self.phases.append(mark)
                self.log.info("phase", index=op.index, name=op.name, task=op.task)
            if self._next_vmstat_ns is not None and self.now_ns >= self._next_vmstat_ns:
                await self._vmstat()
            if self.oom_killed and not self.reaped.is_set():
                await self._reap()
                self.check_ledger()
                op = next(self.workload)
                continue
            self.check_ledger()
            op = self.workload.send(self.clock.now_ns())

    # -- zone requests and time -----------------------------------------------------------
    async def _spend(self, duration_ns: int, kind: int) -> None:
        """Spend ``duration_ns`` of ``kind`` (an index of ``cputime.KINDS``), after the rest of
        any zone-lock hold and what other actors charged this vCPU meanwhile."""
        clock, cpu = self.clock, self.cpu
        if kind != IDLE:
            await self._sleep_until(self._busy_until(duration_ns, kind))
            return
        now = clock.now_ns()
        hold = self._lock_release_ns - now
        held = ((self._hold_kind, hold),) if hold > 0 else ()
        await self._sleep_until(cpu.plan_idle(now, held, duration_ns))
        cpu.woke()

    @functools.cached_property
    def _sleep_until(self) -> Callable[[int], Awaitable[None]]:
        """This vCPU's sleeps, all in its own task: the clock's cheapest way to take them."""
        return self.clock.sleeper()

    def _busy_until(self, duration_ns: int, kind: int) -> int:
        """When a busy ``_spend`` ends, its time recorded: the faults' and unmaps' loops sleep
        until it themselves, one coroutine level fewer on the path every fault takes."""
        now = self.clock.now_ns()
        return self.cpu.busy(now, self._hold_kind, self._lock_release_ns - now, kind, duration_ns)

    async def _think(self, duration_ns: int, idle: bool) -> None:
        """Compute (or, ``idle``, halt) for ``duration_ns``; vmstat's work runs when it falls
        due meanwhile."""
        kind = IDLE if idle else WORK
        end = max(self.clock.now_ns(), self._lock_release_ns) + duration_ns
        while self._next_vmstat_ns is not None and self._next_vmstat_ns < end:
            due = max(self._next_vmstat_ns, self.now_ns)
            await self._spend(max(0, due - max(self.now_ns, self._lock_release_ns)), kind)
            await self._vmstat()
        await self._spend(max(0, end - max(self.now_ns, self._lock_release_ns)), kind)

    async def _vmstat(self) -> None:
        """``refresh_cpu_vm_stats``' ``decay_pcp_high`` on this CPU, and its drain."""
        assert self._next_vmstat_ns is not None
        while self._next_vmstat_ns <= self.now_ns:
            self._next_vmstat_ns += VMSTAT_INTERVAL_NS
        await self._give_back(self.pcp.decay(), FAULT)

    async def _give_back(self, drains: list[Drain], kind: int) -> None:
        for order, pfns in drains:
            await self._zone_free(order, pfns, kind)

    def _zone_below_high(self) -> bool:
        """``ZONE_BELOW_HIGH``, as the free pages stand now (Linux sets the flag when an
        allocation sees the zone below its high watermark and clears it once above)."""
        allocator = self.zone.allocator
        return allocator.free_pages < allocator.watermarks.high

    async def _zone_alloc(self, order: int, count: int, kind: int) -> tuple[int, ...]:
        since = self._zone_lock_at_once()
        if since is None:
            since = await self._take_zone_lock()
        pfns, self._lock_release_ns = self.zone.alloc_held(self.name, order, count, since)
        self._hold_kind = kind  # the hold is spent, as ``kind``, by the next sleep
        return pfns

    async def _zone_free(self, order: int, pfns: list[int], kind: int) -> None:
        since = self._zone_lock_at_once()
        if since is None:
            since = await self._take_zone_lock()
        self._lock_release_ns = self.zone.free_held(self.name, order, pfns, since)
        self._hold_kind = kind

    def _zone_lock_at_once(self) -> int | None:
        """The zone lock taken now, without a coroutine, when this vCPU's own hold is over and
        the lock is free (most requests): the time, and no wait to count; else None, and
        ``_take_zone_lock``."""
        now = self.clock.now_ns()
        if self._lock_release_ns <= now and self.zone.lock.try_acquire():
            return now
        return None

    async def _take_zone_lock(self) -> int:
        """Queue for the zone lock (after the rest of any hold of this vCPU's own: a CPU cannot
        queue for a lock it holds); return when the spin for it began, counted as lock wait.
        The request is then made under it (``Zone.alloc_held``, ``free_held``), as a CPU does
        the allocator's work itself."""
        clock, cpu = self.clock, self.cpu
        if self._lock_release_ns > clock.now_ns():
            await self._spend(0, self._hold_kind)
        cpu.waiting_since = since = clock.now_ns()  # spinning for the lock from now
        await self.zone.lock.acquire()  # at once if free, with no trip through the scheduler
        cpu.totals[LOCK_WAIT] += clock.now_ns() - since
        cpu.waiting_since = None
        return since

    # -- operations ----------------------------------------------------------------------
    def _region(self, op: Map) -> list[int]:
        """The blocks mapped in ``op``'s region so far (a new region: none)."""
        order, mapped = self.regions.setdefault(op.region, (op.order, []))
        if order != op.order:
            raise ValueError(f"region {op.region} holds order-{order} blocks, not order {op.order}")
        return mapped

    async def _refill(self, order: int, fault: Map | None = None) -> bool:
        """Refill the empty list of ``order`` from the zone. For order 0, when the zone has
        nothing, as the allocator's slow path does: drain every CPU's lists into the zone
        (``drain_all_pages``) and retry, then the OOM killer (``__alloc_pages_may_oom``). The
        guest has no reclaimable memory (anonymous only), so ``should_reclaim_retry`` gives up
        after the drain. False: no page (a THP falls back; a 4 KiB fault ends, its task killed)."""
        pcp = self.pcp
        drained = False
        while True:
            wanted = pcp.refill_size(order, self._zone_below_high())
            refill = await self._zone_alloc(order, wanted, FAULT)
            if refill:
                pcp.add(order, refill)
                return True
            if order or self.oom_killed:  # a THP does not OOM; a victim exits (ALLOC_OOM)
                return False
            if not drained:
                drained = True
                await self._drain_all_pages()
                continue
            if not await self._oom_kill(fault):
                return False
            drained = False

    async def _drain_all_pages(self) -> None:
        """``drain_all_pages``: every vCPU's per-CPU lists go back to the zone. The work runs
        on each CPU (charged to it) while this one waits for it."""
        held = self.zone.held_by
        for vcpu in self.siblings:
            drains = vcpu.pcp.take_all()
            pages = sum(len(pfns) << order for order, pfns in drains)
            if not pages:
                continue
            held[vcpu.name] -= pages  # the pages change hands at once: both ledgers stay true
            held[self.name] = held.get(self.name, 0) + pages
            since = self.now_ns
            await self._give_back(drains, FAULT)
            if vcpu is not self:
                vcpu.cpu.charge(FAULT, self.now_ns - since, since)

    async def _oom_kill(self, fault: Map | None) -> bool:
        """``out_of_memory``, one at a time in the guest (``oom_lock``): the victim is the task
        with the largest footprint among those running (oom_badness). True: a victim's memory
        was freed, retry; False: this task was the victim."""
        cpu = self.cpu
        cpu.waiting_since, cpu.waiting_kind = self.now_ns, FAULT  # blocked in the allocator
        try:
            return await self._choose_victim(fault)
        finally:
            cpu.totals[FAULT] += self.now_ns - cpu.waiting_since
            cpu.waiting_since, cpu.waiting_kind = None, LOCK_WAIT

    async def _choose_victim(self, fault: Map | None) -> bool:
        async with self.oom_lock:
            if self.oom_killed:
                return False
            allocator = self.zone.allocator
            spare = allocator.free_pages + allocator.isolated_pages - 1
            false_oom = allocator.isolated_pages >= 1 and spare >= allocator.watermarks.min
            self.counters.false_ooms += false_oom
            now = self.now_ns
            candidates = [
                vcpu
                for vcpu in self.siblings
                if not vcpu.oom_killed and (vcpu is self or vcpu.cpu.in_guest_mode(now))
            ]
            victim = max(candidates, key=lambda vcpu: vcpu.mapped_pages)
            victim.oom_killed = True
            victim.counters.ooms += 1
            self.log.warning(
                "oom_kill",
                region=-1 if fault is None else fault.region,
                order=0,
                pages=0 if fault is None else fault.pages,
                victim=victim.name,
                false_oom=false_oom,
            )
            if victim is self:
                return False
            await victim.reaped.wait()  # the victim exits at its next operation
            return True

    async def _reap(self) -> None:
        """The OOM victim exits: every mapping and its per-CPU lists go back to the zone, its
        workload ends and its vCPU halts."""
        self.counters.lost_faults += self.mapped_pages
        self.work_end_ns = self.now_ns
        for region in list(self.regions):
            await self._unmap(region)
        await self._give_back(self.pcp.take_all(), WORK)
        self.workload = idle()
        self.reaped.set()

    async def _fault_small_pages(self, op: Map, mapped: list[int]) -> None:
        pcp, counters, costs = self.pcp, self.counters, self.costs
        per_page = costs.touch_ns(0, op.copy)
        hot = pcp.lists[0]
        needed = op.pages
        while needed:
            if not hot and not await self._refill(0, op):
                return  # the OOM killer took this task: it exits after the operation
            chunk = pcp.take(0, needed)
            take = len(chunk)
            mapped.extend(chunk)
            self.mapped_pages += take
            touched = self.backing.touch_pages(chunk)
            host_ns = self._host_faults(*touched) if touched != UNTOUCHED else 0
            counters.faults += take
            needed -= take
            await self._spend(take * per_page + host_ns, FAULT)

    async def _fault_large_blocks(self, op: Map, mapped: list[int]) -> None:
        counters, pcp, backing = self.counters, self.pcp, self.backing
        block_pages = 1 << op.order
        cached = pcp.holds(op.order)
        per_block = self.costs.touch_ns(op.order, op.copy)
        for _ in range(-(-op.pages // block_pages)):
            got: tuple[int, ...] | list[int] = ()
            if cached:
                if pcp.lists[op.order] or await self._refill(op.order):
                    got = pcp.take(op.order, 1)
            else:
                got = await self._zone_alloc(op.order, 1, FAULT)
            if not got:  # VM_FAULT_FALLBACK: do_huge_pmd_anonymous_page found no huge page
                if not await self._fall_back(op, block_pages):
                    return  # not even 4 KiB pages: the OOM killer took the task
                continue
            mapped.append(got[0])
            self.mapped_pages += block_pages
            touched = backing.touch(got[0], block_pages)
            host_ns = self._host_faults(*touched) if touched != UNTOUCHED else 0
            counters.faults += block_pages
            await self._sleep_until(self._busy_until(per_block + host_ns, FAULT))

    async def _fall_back(self, op: Map, pages: int) -> bool:
        """A THP fault that got no huge page is served with ``pages`` 4 KiB pages, as
        ``handle_pte_fault`` does after ``VM_FAULT_FALLBACK``; False: those failed too."""
        self.counters.thp_fallbacks += 1
        small = self.fallbacks.setdefault(op.region, [])
        await self._fault_small_pages(Map(op.region, pages, 0, op.copy), small)
        return not self.oom_killed

    def _host_faults(self, first: int, refaults: int, swap_ins: int, remaps: int, huge: int) -> int:
        """Count what the host had to do for a touch, and return its cost to this vCPU (and,
        on a host over its memory limit, the direct reclaim the fault enters)."""
        counters, costs, backing = self.counters, self.costs, self.backing
        counters.host_first_touches += first + (huge * backing.host_pages if huge else 0)
        counters.host_refaults += refaults
        counters.host_swap_ins += swap_ins
        counters.host_remaps += remaps
        cost = costs.host_fault_ns(first + refaults, huge, backing.host_pages)
        cost += swap_ins * costs.swap_in_4k
        if remaps:
            cost += costs.host_remap_ns(remaps)
        if self.host is not None and (first or refaults or swap_ins or huge):
            cost += self.host.direct_reclaim()
        return cost

    async def _unmap(self, region: int) -> None:
        entry = self.regions.pop(region, None)
        if entry is None:
            return
        fallen_back = self.fallbacks.pop(region, None)
        if fallen_back:
            await self._free_small_pages(fallen_back)
        order, pfns = entry
        if order == 0:
            await self._free_small_pages(pfns)
            return
        pcp, cost = self.pcp, self.costs.unmap_ns(order)
        cached = pcp.holds(order)
        for pfn in pfns:
            self.mapped_pages -= 1 << order
            if cached:
                await self._give_back(pcp.free(order, [pfn], self._zone_below_high()), WORK)
            else:
                await self._zone_free(order, [pfn], WORK)
            await self._sleep_until(self._busy_until(cost, WORK))

    async def _free_small_pages(self, pfns: list[int]) -> None:
        """Free to the per-CPU list a batch at a time, with the drains the frees bring."""
        pcp, batch = self.pcp, self.pcp.batch
        per_page = self.costs.unmap_ns(0)
        for start in range(0, len(pfns), batch):
            chunk = pfns[start : start + batch]
            self.mapped_pages -= len(chunk)
            await self._give_back(pcp.free(0, chunk, self._zone_below_high()), WORK)
            await self._spend(len(chunk) * per_page, WORK)
