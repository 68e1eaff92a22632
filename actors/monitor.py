"""The monitor: samples the guest over virtual time and checks page conservation as it goes.

Sampling is an actor of its own so it costs the model nothing it would not otherwise do, and
so every sample is a log line (``sample``) that analysis can plot: host RSS, free, isolated and
per-CPU pages over time.
"""

from __future__ import annotations

from collections.abc import Sequence

from pagehint.runtime import Actor, TimeSeries

from .mm.buddy import InvariantViolation
from .mm.host_memory import GuestBacking
from .vcpu import VCpu
from .worker import HintingWorker
from .zone import Zone


class Monitor(Actor):
    def __init__(
        self,
        name: str,
        zone: Zone,
        vcpus: Sequence[VCpu],
        backing: GuestBacking,
        interval_ns: int,
        full_check_every: int,
        worker: HintingWorker | None = None,
    ) -> None:
        super().__init__(name)
        self.worker = worker
        self.zone = zone
        self.vcpus = vcpus
        self.backing = backing
        self.interval_ns = interval_ns
        self.full_check_every = full_check_every
        self.rss_pages = TimeSeries(interval_ns)
        # free in the guest, yet held by the host, resident or swapped: what hinting can return
        self.returnable_pages = TimeSeries(interval_ns)
        self.samples = 0

    async def run(self) -> None:
        while True:
            self.sample()
            await self.sleep_ns(self.interval_ns)

    def sample(self) -> None:
        allocator = self.zone.allocator
        self.check_conservation()
        if self.full_check_every and self.samples % self.full_check_every == 0:
            # The next slice of the zone, round-robin: a whole check costs as much as the zone
            # is large (0.33 s at 1 TiB); the model checks it whole at the end of the run.
            allocator.check_slice()
        self.samples += 1
        now = self.now_ns
        rss = self.backing.rss_pages
        wasted = self.wasted_now()
        self.rss_pages.record(now, rss)
        self.returnable_pages.record(now, wasted + self.backing.swapped_pages)
        self.log.info(
            "sample",
            rss_pages=rss,
            free_pages=allocator.free_pages,
            isolated_pages=allocator.isolated_pages,
            reported_pages=allocator.reported_pages,
            wasted_pages=wasted,
            returned_pages=self.backing.discarded_pages,
            swapped_pages=self.backing.swapped_pages,
            pcp_pages=sum(vcpu.pcp.count for vcpu in self.vcpus),
            lent_pages=sum(self.zone.held_by.values()),
            total_pages=allocator.total_pages,
            lock_queue=self.zone.queued,
        )
        self.system.report_progress()

    def wasted_now(self) -> int:
        """Pages the host backs that the guest is not using: what hinting could give back.

        Everything the zone has lent out is in use and backed (mapped pages were touched), except
        per-CPU list pages never touched; whatever else the host backs is free in the guest,
        on a free list or isolated in a report the host has not yet discarded.
        """
        backing = self.backing
        untouched = 0
        for vcpu in self.vcpus:
            for order, pfns in vcpu.pcp.lists.items():
                if order == 0:
                    untouched += sum(1 for pfn in pfns if not backing.is_backed(pfn))
                else:
                    untouched += sum(
                        (1 << order) - backing.backed_pages(p, 1 << order) for p in pfns
                    )
        in_use = sum(self.zone.held_by.values()) - untouched
        return backing.rss_pages - in_use

    def check_conservation(self) -> None:
        """free + isolated + lent out (to vCPUs: mapped or on pcp lists, and boot) = all pages,
        and every isolated page belongs to a report the worker has not yet put back."""
        allocator = self.zone.allocator
        reported = self.worker.isolated_pages if self.worker is not None else 0
        if allocator.isolated_pages != reported:
            raise InvariantViolation(
                f"{allocator.isolated_pages} pages are isolated but reports in flight hold "
                f"{reported}: isolated memory was lost or leaked"
            )
        lent = sum(self.zone.held_by.values())
        accounted = allocator.free_pages + allocator.isolated_pages + lent
        if accounted != allocator.total_pages or allocator.allocated_pages != lent:
            raise InvariantViolation(
                f"page conservation broken: free {allocator.free_pages} + isolated "
                f"{allocator.isolated_pages} + lent {lent} = {accounted} of "
                f"{allocator.total_pages} pages (allocator says {allocator.allocated_pages} "
                "allocated)"
            )
