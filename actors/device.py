"""The virtio-balloon device with free page reporting, as the guest driver sees it.

It owns the guest side of the reporting virtqueue (``protocol/virtqueue.py``, shared with the
host as the real vring is shared memory): a report becomes one descriptor per block
(``virtqueue_add_inbuf``), then a kick, which is a VM exit and costs virtual time; the host's
used-buffer interrupt costs injection time, charged to the vCPU that takes it, and completes
reports. Features are negotiated as
``virtballoon_validate`` does: a guest that poisons freed pages may report only if the host
offers PAGE_POISON.
"""

from __future__ import annotations

import attrs

from pagehint.protocol.messages import (
    DeviceReset,
    HostNotify,
    ReportDone,
    SubmitReport,
    UsedInterrupt,
)
from pagehint.protocol.units import PAGE_SHIFT
from pagehint.protocol.virtqueue import QueueFull, VirtQueue
from pagehint.runtime import Actor, handles

from .cputime import INTERRUPT, CpuTime

VIRTIO_BALLOON_F_PAGE_POISON = 4
VIRTIO_BALLOON_F_REPORTING = 5


def negotiate(host_features: set[int], guest_poisons_pages: bool) -> set[int]:
    """The features both sides use. Reporting is dropped when the guest poisons (or
    initialises) freed pages and the host does not offer PAGE_POISON."""
    features = set(host_features) & {VIRTIO_BALLOON_F_PAGE_POISON, VIRTIO_BALLOON_F_REPORTING}
    if guest_poisons_pages and VIRTIO_BALLOON_F_PAGE_POISON not in features:
        features.discard(VIRTIO_BALLOON_F_REPORTING)
    return features


@attrs.define
class DeviceCounters:
    reports: int = 0
    kicks: int = 0
    interrupts: int = 0
    resets: int = 0


class BalloonDevice(Actor):
    def __init__(
        self,
        name: str,
        guest: str,
        queue: VirtQueue,
        features: set[int],
        kick_ns: int,
        interrupt_ns: int,
        interrupt_cpu: CpuTime,
    ) -> None:
        super().__init__(name)
        self.guest = guest
        self.queue = queue
        self.features = features
        self.kick_ns = kick_ns
        self.interrupt_ns = interrupt_ns
        self.interrupt_cpu = interrupt_cpu  # the vCPU that takes the used-buffer interrupt
        self.counters = DeviceCounters()
        self.host: Actor  # set when the host is built

    @property
    def reporting(self) -> bool:
        return VIRTIO_BALLOON_F_REPORTING in self.features

    @handles(SubmitReport)
    async def submit(self, report: SubmitReport) -> bool:
        buffers = [(pfn << PAGE_SHIFT, 1 << (order + PAGE_SHIFT)) for pfn, order in report.blocks]
        try:
            self.queue.add(buffers, (report.token, report.reply_to))
        except QueueFull:
            return False
        self.counters.reports += 1
        if self.queue.kick_prepare():
            self.counters.kicks += 1
            await self.sleep_ns(self.kick_ns)  # the VM exit
            await self.host.tell(HostNotify(self.guest))
        return True

    @handles(UsedInterrupt)
    async def interrupt(self, _: UsedInterrupt) -> None:
        self.counters.interrupts += 1
        self.interrupt_cpu.charge(INTERRUPT, self.interrupt_ns, self.now_ns)
        await self.sleep_ns(self.interrupt_ns)  # injection and the guest's handler
        while (used := self.queue.get_used()) is not None:
            token, reply_to = _report_of(used[0])
            await reply_to.tell(ReportDone(token, acked=True))

    @handles(DeviceReset)
    async def reset(self, _: DeviceReset) -> None:
        self.counters.resets += 1
        lost = self.queue.reset()
        self.log.warning("device_reset", reports_lost=len(lost))
        for lost_report in lost:
            token, reply_to = _report_of(lost_report)
            await reply_to.tell(ReportDone(token, acked=False))


def _report_of(queue_token: object) -> tuple[int, Actor]:
    """The (report token, worker) this device stored as the virtqueue token."""
    assert isinstance(queue_token, tuple)
    token, reply_to = queue_token
    return token, reply_to
