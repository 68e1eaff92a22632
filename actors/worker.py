"""The hinting worker: one per guest, asleep until its policy's trigger fires.

Woken like a NIC's Rx softirq: the free path sends one ``WakeWorker`` (the interrupt); the
worker then polls, each poll isolating one report's worth of blocks under the zone lock, handing
them to the virtio device without allocating per hint (unless the design does), and putting
them back when the host has used them. When a poll cannot fill a report, or its budget of polls
is spent, the pass ends and the worker sleeps until re-armed. Every wake-up, poll and sleep is a
log line, so polling behaviour under load can be counted.

Its CPU work runs on a vCPU and is charged to it (``CpuTime.charge``, kind hinting): the zone
requests (spinning and holding), building and adding the report's descriptors, the kick's exit,
the scratch allocations of designs that allocate, and the putback. That is the vCPU whose free
queued the work (the system workqueue runs delayed work on the queuing CPU), or
``guest.hinting_vcpu``; a design that hints inline (``Policy.runs_inline``) always runs on the
freeing vCPU. Waiting for the host (and the design's delay) is not CPU time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio

from pagehint.protocol.messages import (
    ReportDone,
    SubmitReport,
    WakeWorker,
    ZoneAlloc,
    ZoneFree,
    ZoneWork,
)
from pagehint.runtime import Actor, handles

from .cputime import HINTING, CpuTime
from .designs import Batch, Policy
from .mm.buddy import BuddyAllocator
from .mm.costs import Costs
from .zone import Zone


@attrs.define
class WorkerCounters:
    wakeups: int = 0
    polls: int = 0
    batches: int = 0  # reports sent
    blocks: int = 0
    pages: int = 0
    acked: int = 0
    dropped: int = 0  # reports lost to a device reset: their pages were put back unreported
    queue_full: int = 0
    budget_exhausted: int = 0
    failed_allocations: int = 0  # the design's own allocations the zone could not serve
    fill_total: float = 0.0  # sum of each report's fill ratio

    @property
    def mean_batch_fill(self) -> float:
        """How full reports were on average, by the design's own limit: 1.0 is always full."""
        return self.fill_total / self.batches if self.batches else 0.0


@attrs.define
class _InFlight:
    batch: Batch
    scratch: tuple[int, ...]  # pages allocated for this report (designs that allocate per hint)
    done: trio.Event


class HintingWorker(Actor):
    def __init__(
        self,
        name: str,
        zone: Zone,
        device: Actor,
        policy: Policy,
        poll_budget: int,
        *,
        cpus: dict[str, CpuTime],
        costs: Costs,
        pinned: str | None = None,
    ) -> None:
        super().__init__(name)
        self.zone = zone
        self.device = device
        self.policy = policy
        self.poll_budget = poll_budget
        self.cpus = cpus  # by vCPU name: where the work can run
        self.costs = costs
        self._pinned = None if pinned is None or policy.runs_inline else cpus[pinned]
        self._queued_on = next(iter(cpus.values()))  # the boot CPU registered the driver
        self._cpu = self._queued_on
        self.counters = WorkerCounters()
        self.in_flight: dict[int, _InFlight] = {}
        self._next_token = 0
        self._building: int | None = None  # a report filled over several lock holds
        self._wake_requested = False
        self._wake = trio.Event()
        self._completion = trio.Event()  # set on every completion: a full queue may have room
        zone.add_free_hook(self._on_free)

    # -- the trigger ---------------------------------------------------------------------
    def _on_free(self, pfn: int, order: int, requester: str) -> None:
        # Runs inside the zone's handler, under the lock, on the freeing path: record only.
        if self.policy.on_free(pfn, order, requester):
            self._queued_on = self.cpus.get(requester, self._queued_on)
            self.try_tell(WakeWorker())

    @handles(WakeWorker)
    def wake(self, _: WakeWorker) -> None:
        self._wake_requested = True
        self._wake.set()

    # -- the passes ----------------------------------------------------------------------
    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.serve)
            while True:
                await self._sleep_until_woken()
                await self._pass()

    async def _sleep_until_woken(self) -> None:
        if not self._wake_requested:
            await self._wake.wait()
        self._wake_requested = False
        self._wake = trio.Event()
        self._cpu = self._pinned or self._queued_on
        self.counters.wakeups += 1
        self.log.info("worker_wake", in_flight=len(self.in_flight))

    def _ran(self, since: int) -> None:
        """The worker ran on its vCPU from ``since`` until now."""
        self._cpu.charge(HINTING, self.now_ns - since, since)

    async def _zone_work(self, work: Callable[[BuddyAllocator], tuple[Any, int]]) -> Any:
        return await self._zone_ask(ZoneWork(self.name, work, self.now_ns))

    async def _zone_ask(self, request: ZoneAlloc | ZoneFree | ZoneWork) -> Any:
        """A zone request, on the worker's vCPU: it takes the zone lock itself, as a vCPU
        does, and holds it until the release; the spin and the hold are its CPU time."""
        since = self.now_ns
        result, release = await self.zone.request(request)
        await self.clock.sleep_until_ns(release)
        self._ran(since)
        return result

    async def _pass(self) -> None:
        policy, counters = self.policy, self.counters
        if policy.delay_ns:
            await self.sleep_ns(policy.delay_ns)  # delayed work (page_reporting: 2 s)
        await self._zone_work(self._begin)
        polls = 0
        while True:
            token, batch, whole = await self._zone_work(self._fill)
            if not whole:
                continue  # a report still being filled, one lock hold per entry
            polls += 1
            counters.polls += 1
            self.log.info(
                "worker_poll", blocks=len(batch.blocks), pages=batch.pages, examined=batch.examined
            )
            if batch.blocks:
                await self._report(token, batch)
            if batch.last:
                break
            if policy.budgeted and polls >= self.poll_budget:
                counters.budget_exhausted += 1
                self._wake_requested = True  # more work: poll again after yielding, as NAPI does
                break
        rearmed = policy.end_pass()
        self._wake_requested = self._wake_requested or rearmed
        self.log.info("worker_sleep", polls=polls, rearmed=self._wake_requested)

    async def _report(self, token: int, batch: Batch) -> None:
        policy, counters = self.policy, self.counters
        flight = self.in_flight[token]
        if policy.allocations_per_report:
            flight.scratch = await self._zone_ask(
                ZoneAlloc(self.name, 0, policy.allocations_per_report, self.now_ns)
            )
            if len(flight.scratch) < policy.allocations_per_report:
                counters.failed_allocations += 1
        per_entry = self.costs.report_per_entry + (
            self.costs.sort_per_entry if policy.sorts_reports else 0
        )
        since = self.now_ns
        await self.sleep_ns(len(batch.blocks) * per_entry)
        while True:
            # Armed before asking: a completion while the device answers "full" must count.
            self._completion = completion = trio.Event()
            if await self.device.ask(SubmitReport(batch.blocks, token, self)):
                break
            self._ran(since)
            counters.queue_full += 1
            await completion.wait()  # not CPU time: the worker sleeps until the host answers
            since = self.now_ns
        self._ran(since)  # the descriptors and the kick's exit
        counters.batches += 1
        counters.fill_total += policy.fill_ratio(batch)
        counters.blocks += len(batch.blocks)
        counters.pages += batch.pages
        self.log.info("report", token=token, pages=batch.pages, blocks=batch.blocks)
        if policy.synchronous:
            await flight.done.wait()  # virtio_balloon: wait_event(acked)

    # -- steps run by the zone, under the lock ---------------------------------------------
    # The in-flight ledger changes in the same step as the allocator, so at every instant the
    # zone's isolated pages are exactly those of the reports in flight.
    # Each returns (reply, blocks examined: the lock hold cost).
    def _begin(self, allocator: BuddyAllocator) -> tuple[None, int]:
        self.policy.begin_pass(allocator)
        return None, 1

    def _fill(self, allocator: BuddyAllocator) -> tuple[tuple[int, Batch, bool], int]:
        """One poll: the design isolates under this lock hold. A report it fills over several
        holds (``Batch.complete`` False) is in flight from its first entry, so the isolated
        pages are always those of the reports in flight; the reply says whether it is whole."""
        step = self.policy.fill(allocator)
        whole = step.complete or step.last
        token = self._building
        if step.blocks:
            if token is None:
                token = self._building = self._next_token
                self._next_token += 1
                self.in_flight[token] = _InFlight(step, (), trio.Event())
            else:
                flight = self.in_flight[token]
                blocks = flight.batch.blocks + step.blocks
                flight.batch = attrs.evolve(step, blocks=blocks)
        if token is None:
            return (self._next_token, step, whole), step.examined
        batch = attrs.evolve(self.in_flight[token].batch, last=step.last, complete=True)
        self.in_flight[token].batch = batch
        if whole:
            self._building = None
        return (token, batch, whole), step.examined

    def _drain(self, allocator: BuddyAllocator, done: ReportDone) -> tuple[None, int]:
        batch = self.in_flight[done.token].batch
        self.policy.drain(allocator, batch, done.acked)
        del self.in_flight[done.token]
        return None, len(batch.blocks)

    @property
    def isolated_pages(self) -> int:
        """Pages this worker holds isolated: those of every report not yet put back."""
        return sum(flight.batch.pages for flight in self.in_flight.values())

    @handles(ReportDone)
    async def report_done(self, message: ReportDone) -> None:
        flight = self.in_flight[message.token]
        await self._zone_work(lambda allocator: self._drain(allocator, message))
        if flight.scratch:
            await self._zone_ask(ZoneFree(self.name, 0, flight.scratch, self.now_ns))
        if message.acked:
            self.counters.acked += 1
        else:
            self.counters.dropped += 1
        self.log.info("report_done", token=message.token, acked=message.acked)
        flight.done.set()
        self._completion.set()
