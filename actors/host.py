"""The host: serves each guest's reporting queue, holds their memory, and misbehaves on cue.

For each descriptor it discards the range (``MADV_DONTNEED``, or ``MADV_FREE`` as an option,
each with its cost model), pushes it to the used ring and interrupts the guest, as QEMU's
``virtio_balloon_handle_report`` does (which skips the discard when the guest poisons pages
with a non-zero value). It tracks every guest's RSS, can hold several guests under a memory
limit (reclaiming by swap-out, so overcommit shows as swap-ins), supplies the batch size when
configured to, and stalls, slows down or resets a device on a schedule.

It also holds the oracle for the invariant that matters most: at the moment of a discard, every
page of the range must be isolated in the guest (the driver must not use reported pages before
the ack). A violation is guest data loss and fails the run.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import trio

from pagehint.protocol.messages import DeviceReset, HostNotify, UsedInterrupt
from pagehint.protocol.units import PAGE_SHIFT
from pagehint.protocol.virtqueue import VirtQueue
from pagehint.runtime import Actor, PagehintError, handles

from .cputime import SHOOTDOWN, CpuTime
from .device import BalloonDevice
from .mm.buddy import BlockState, BuddyAllocator
from .mm.costs import Costs
from .mm.host_memory import GuestBacking, HostMemory


class DiscardedPageInUse(PagehintError):
    """The host was about to discard guest memory that the guest is using: data loss."""


@attrs.frozen
class Fault:
    """A scheduled misbehaviour: ``stall`` (stop serving), ``slowdown`` (costs x factor), or
    ``reset`` (reset the device, dropping every outstanding report)."""

    kind: str
    at_ns: int
    duration_ns: int = 0
    factor: float = 1.0
    guest: str | None = None  # None: every guest


@attrs.define
class HostedGuest:
    """What the host knows of one guest: its queue, device, memory, and the oracle."""

    name: str
    queue: VirtQueue
    device: BalloonDevice
    backing: GuestBacking
    allocator: BuddyAllocator  # only for the invariant check, never for decisions
    cpus: Sequence[CpuTime] = ()  # its vCPUs' time: a discard that unmaps flushes their TLBs
    poison_value: int = 0
    generation: int = 0  # bumped by a reset: work in progress for an older one is abandoned
    discards: int = 0
    reports: int = 0
    tlb_flushes: int = 0  # discards that removed guest mappings (kvm_flush_remote_tlbs)
    shootdowns: int = 0  # vCPUs interrupted by those flushes (those in guest mode)


class Host(Actor):
    def __init__(
        self,
        name: str,
        guests: Sequence[HostedGuest],
        costs: Costs,
        *,
        memory: HostMemory | None = None,
        lazy_free: bool = False,
        inhibited: bool = False,
        reclaim_interval_ns: int = 1_000_000,
        faults: Sequence[Fault] = (),
    ) -> None:
        super().__init__(name)
        self.guests = {guest.name: guest for guest in guests}
        self.costs = costs
        self.memory = memory or HostMemory.unlimited()
        self.lazy_free = lazy_free
        self.inhibited = inhibited  # a VFIO device: QEMU acknowledges reports, discards nothing
        self.reclaim_interval_ns = reclaim_interval_ns
        self.faults = sorted(faults, key=lambda fault: fault.at_ns)
        self._stalled_until = 0
        self._slow_until = 0
        self._slow_factor = 1.0

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.serve)
            if self.faults:
                nursery.start_soon(self._inject_faults)
            if self.memory.limit_pages:
                nursery.start_soon(self._kswapd)

    # -- serving reports -----------------------------------------------------------------
    @handles(HostNotify)
    async def serve_queue(self, notify: HostNotify) -> None:
        guest = self.guests[notify.guest]
        generation = guest.generation
        while (chain := guest.queue.pop()) is not None:
            for address, length in chain.buffers:
                pfn, pages = address >> PAGE_SHIFT, length >> PAGE_SHIFT
                await self._wait_out_stall()
                await self.sleep_ns(self._slowed(self.costs.discard_ns(pages, self.lazy_free)))
                if guest.generation != generation:
                    return  # the device was reset meanwhile: these buffers are gone
                # QEMU skips the discard for a poison value, or while discards are inhibited
                # (virtio_balloon_inhibited(): a device assigned through VFIO).
                if guest.poison_value == 0 and not self.inhibited:
                    self._check_isolated(guest, pfn, pages)
                    backing = guest.backing
                    discardable = backing.discardable(pfn, pages)  # else counted as skipped
                    if backing.discard(pfn, pages, lazy=self.lazy_free):
                        self._flush_tlbs(guest)
                    if discardable:
                        guest.discards += 1
                        self.log.debug("discard", guest=guest.name, pfn=pfn, pages=pages)
            guest.queue.push_used(chain.head, 0)
            guest.reports += 1
        if guest.queue.interrupt_needed():
            await guest.device.tell(UsedInterrupt())

    def _flush_tlbs(self, guest: HostedGuest) -> None:
        """The discard removed guest mappings: the mmu notifier's ``kvm_flush_remote_tlbs``
        IPIs every vCPU in guest mode (a halted one flushes on its next entry, for nothing),
        one flush per madvise call, i.e. per report entry. Each pays at its next sleep."""
        now, cost = self.now_ns, self.costs.shootdown
        guest.tlb_flushes += 1
        for cpu in guest.cpus:
            if cpu.in_guest_mode(now):
                cpu.charge(SHOOTDOWN, cost, now)
                guest.shootdowns += 1

    def _check_isolated(self, guest: HostedGuest, pfn: int, pages: int) -> None:
        block = guest.allocator.block_at(pfn)
        if block.state is not BlockState.ISOLATED or block.pfn + block.nr_pages < pfn + pages:
            raise DiscardedPageInUse(
                f"host discarding pages {pfn}..{pfn + pages - 1} of guest {guest.name!r}, but "
                f"pfn {pfn} is in a {block.state.value} block (pfn {block.pfn}, order "
                f"{block.order}): the guest may be using it"
            )

    # -- misbehaviour on a schedule ------------------------------------------------------
    def _slowed(self, cost_ns: int) -> int:
        if self.now_ns < self._slow_until:
            return round(cost_ns * self._slow_factor)
        return cost_ns

    async def _wait_out_stall(self) -> None:
        if self.now_ns < self._stalled_until:
            await self.clock.sleep_until_ns(self._stalled_until)

    async def _inject_faults(self) -> None:
        for fault in self.faults:
            await self.clock.sleep_until_ns(fault.at_ns)
            self.log.warning(
                "host_fault",
                kind=fault.kind,
                duration_ns=fault.duration_ns,
                factor=fault.factor,
                guest=fault.guest,
            )
            if fault.kind == "stall":
                self._stalled_until = max(self._stalled_until, self.now_ns + fault.duration_ns)
            elif fault.kind == "slowdown":
                self._slow_until = self.now_ns + fault.duration_ns
                self._slow_factor = fault.factor
            else:
                for guest in self.guests.values():
                    if fault.guest in (None, guest.name):
                        guest.generation += 1
                        await guest.device.tell(DeviceReset())

    # -- memory pressure -----------------------------------------------------------------
    async def _kswapd(self) -> None:
        """The host's background reclaim, woken every interval: below the low watermark it
        reclaims up to the high one, as fast as the swap device writes."""
        memory, interval = self.memory, self.reclaim_interval_ns
        budget = max(1, interval // max(1, memory.swap_ns_per_page))
        while True:
            memory.kswapd(budget)
            await self.sleep_ns(interval)
