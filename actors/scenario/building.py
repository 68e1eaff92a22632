"""How a scenario (``schema.py``) is built into actors: one or more guests (zone, vCPUs,
monitor, balloon device, hinting worker) on one host."""

from __future__ import annotations

import functools

import attrs
import trio

from pagehint.protocol.messages import WakeWorker
from pagehint.protocol.units import PAGE_SIZE, pages
from pagehint.protocol.virtqueue import VirtQueue
from pagehint.runtime import NS_PER_S, ActorSystem, stream_for
from pagehint.runtime.harness.config import ConfigError

from .. import workloads
from ..designs import Policy
from ..device import (
    VIRTIO_BALLOON_F_PAGE_POISON,
    VIRTIO_BALLOON_F_REPORTING,
    BalloonDevice,
    negotiate,
)
from ..host import Fault, Host, HostedGuest
from ..mm.buddy import BuddyAllocator, Watermarks
from ..mm.costs import Costs
from ..mm.host_memory import GuestBacking, HostMemory
from ..mm.kernels import KERNELS
from ..mm.pcp import PerCpuPages
from ..monitor import Monitor
from ..vcpu import VCpu
from ..worker import HintingWorker
from ..workloads import Trace, TraceError, TraceEvent, parse_trace
from ..zone import Zone
from .effective import Hinting, pcp_sizes, resolve
from .schema import (
    HOST_BACKINGS,
    Churn,
    Idle,
    Memhog,
    PageFault1,
    PageFault2,
    Phases,
    Scenario,
    SingleWorkload,
)


def _workload_for(scenario: Scenario, guest_index: int, cpu: int) -> workloads.Workload:
    """What vCPU ``cpu`` of guest ``guest_index`` runs: its workload, or its phases, then idle."""
    workload = scenario.workload
    if not isinstance(workload, Phases):
        return workloads.then_idle(_single(workload, scenario, guest_index, cpu))
    phases: list[tuple[str, workloads.Workload, int, bool]] = []
    for phase in workload.phases:
        task = phase.tasks is None or cpu < phase.tasks
        if task:
            steps = _single(phase.workload, scenario, guest_index, cpu)
        else:  # no task here: idle through the phase, or skip one that has no duration
            steps = workloads.idle() if phase.duration else workloads.nothing()
        phases.append((phase.workload.name, steps, phase.duration, task))
    return workloads.phased(phases)


def _single(
    workload: SingleWorkload, scenario: Scenario, guest_index: int, cpu: int
) -> workloads.Workload:
    if isinstance(workload, PageFault1):
        return workloads.page_fault1(pages(workload.mapping), workload.thp)
    if isinstance(workload, PageFault2):
        return workloads.page_fault2(pages(workload.mapping))
    if isinstance(workload, Memhog):
        return workloads.memhog(pages(workload.size), workload.thp, workload.pause, workload.loops)
    if isinstance(workload, Idle):
        return workloads.idle()
    if isinstance(workload, Churn):
        return workloads.churn(
            stream_for(scenario.run.seed, "workload", guest_index, cpu),
            mean_pages=max(1, pages(workload.mean_size)),
            mean_lifetime_ns=max(1, workload.mean_lifetime),
            max_live_pages=max(1, pages(workload.max_live)),
            thp_fraction=workload.thp_fraction,
            think_ns=workload.mean_think,
        )
    guest = scenario.guest
    trace = read_trace(workload.path, guest.max_order)
    share = _trace_shares(workload.path, guest.max_order, guest.vcpus)[cpu]
    return workloads.replay(share, trace.start_ns, workload.time_scale)


@functools.lru_cache(maxsize=4)
def _trace_shares(path: str, max_order: int, vcpus: int) -> list[list[TraceEvent]]:
    return workloads.split_by_cpu(read_trace(path, max_order).events, vcpus)


def start_delay(scenario: Scenario, costs: Costs, guest_index: int, cpu: int) -> int:
    """How late vCPU ``cpu`` of guest ``guest_index`` starts: the guest's stagger, plus a seeded
    jitter, uniform in [0, guest.start_jitter) (unset: one 4 KiB fault's time)."""
    set_jitter = scenario.guest.start_jitter
    jitter = costs.fault_4k + costs.zero_4k if set_jitter is None else int(set_jitter)
    stream = stream_for(scenario.run.seed, "start", guest_index, cpu)
    offset = stream.randrange(jitter) if jitter else 0
    return guest_index * scenario.host.stagger + offset


@functools.lru_cache(maxsize=4)
def read_trace(path: str, max_order: int) -> Trace:
    """Parse a trace file once per process for a guest of ``max_order``: checked when the
    scenario loads (bad input, before any run directory is written), replayed at build time."""
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            return parse_trace(lines, path, max_order=max_order)
    except OSError as error:
        raise ConfigError(
            "workload.path", [f"cannot read trace {path}: {error.strerror}"]
        ) from None
    except TraceError as error:
        raise ConfigError("workload.path", [str(error)]) from None


@attrs.define
class Guest:
    """One built guest: its actors and the pure state they share."""

    name: str
    zone: Zone
    vcpus: list[VCpu]
    backing: GuestBacking
    monitor: Monitor
    worker: HintingWorker | None
    device: BalloonDevice
    policy: Policy


@attrs.define
class Machine:
    """Everything a scenario built: the guests and the host they share."""

    guests: list[Guest]
    host: Host


def make_policy(hinting: Hinting) -> Policy:
    """A fresh decision object of the configured design for one guest."""
    return hinting.design(hinting.limits, hinting.config)


def _build_guest(
    system: ActorSystem,
    scenario: Scenario,
    costs: Costs,
    host_memory: HostMemory,
    hinting: Hinting,
    index: int,
    prefix: str,
) -> Guest:
    guest, run = scenario.guest, scenario.run
    total = pages(guest.memory)
    allocator = BuddyAllocator(
        total,
        guest.max_order,
        guest.pageblock_order,
        shuffle=guest.shuffle,
        rng=stream_for(run.seed, "shuffle", index) if guest.shuffle else None,
    )
    host_pages, hugetlb = HOST_BACKINGS[scenario.host.backing]
    backing = GuestBacking(total, host_pages, hugetlb=hugetlb)
    host_memory.add(backing)
    if scenario.host.prealloc:  # QEMU's qemu_prealloc_mem touches every page of the RAM block
        backing.prefault()
    zone = system.spawn(Zone(f"{prefix}zone", allocator, costs))
    boot_order = min(guest.pageblock_order, guest.max_order - 1)
    for pfn in zone.take_at_boot(pages(guest.boot_memory), boot_order):
        backing.touch(pfn, 1 << boot_order)
    kernel, sizes = KERNELS[guest.kernel], pcp_sizes(scenario)
    pcp_orders = kernel.pcp_orders(guest.pageblock_order)
    vcpus = [
        system.spawn(
            VCpu(
                f"{prefix}vcpu{cpu}",
                zone,
                backing,
                workloads.delayed(
                    _workload_for(scenario, index, cpu),
                    start_delay(scenario, costs, index, cpu),
                ),
                costs,
                PerCpuPages(kernel.pcp_rules, sizes, pcp_orders),
                host_memory if host_memory.limit_pages else None,
            )
        )
        for cpu in range(guest.vcpus)
    ]
    oom_lock = trio.Lock()  # one OOM kill at a time in the guest
    for vcpu in vcpus:
        vcpu.siblings, vcpu.oom_lock = vcpus, oom_lock
    host_features = {VIRTIO_BALLOON_F_PAGE_POISON} if scenario.host.page_poison else set()
    if scenario.host.reporting:
        host_features.add(VIRTIO_BALLOON_F_REPORTING)
    device = system.spawn(
        BalloonDevice(
            f"{prefix}balloon",
            f"{prefix}guest",
            VirtQueue(hinting.queue_size, event_idx=scenario.virtio.event_idx),
            negotiate(host_features, guest.page_poison),
            costs.kick,
            costs.interrupt,
            vcpus[guest.interrupt_vcpu].cpu,
        )
    )
    policy = make_policy(hinting)
    worker = None
    if hinting.hints and device.reporting:
        pinned = None if guest.hinting_vcpu is None else vcpus[guest.hinting_vcpu].name
        worker = system.spawn(
            HintingWorker(
                f"{prefix}worker",
                zone,
                device,
                policy,
                scenario.policy.poll_budget,
                cpus={vcpu.name: vcpu.cpu for vcpu in vcpus},
                costs=costs,
                pinned=pinned,
            )
        )
        if policy.on_register():  # e.g. page_reporting_register() requests a first pass
            worker.try_tell(WakeWorker())
    elif hinting.hints:
        system.log.warning("reporting_disabled", guest=f"{prefix}guest", policy=policy.name)
    monitor = system.spawn(
        Monitor(
            f"{prefix}monitor",
            zone,
            vcpus,
            backing,
            run.sample_interval,
            run.full_check_every,
            worker,
        )
    )
    return Guest(f"{prefix}guest", zone, vcpus, backing, monitor, worker, device, policy)


def build(system: ActorSystem, scenario: Scenario) -> Machine:
    """Spawn every guest's actors and the host."""
    hinting, costs = resolve(scenario), scenario.costs.resolve()
    host_memory = _host_memory(scenario, costs)
    count = scenario.host.guests
    guests = [
        _build_guest(
            system, scenario, costs, host_memory, hinting, index, f"g{index}." if count > 1 else ""
        )
        for index in range(count)
    ]
    hosted = [
        HostedGuest(
            guest.device.guest,
            guest.device.queue,
            guest.device,
            guest.backing,
            guest.zone.allocator,
            cpus=[vcpu.cpu for vcpu in guest.vcpus],
            poison_value=scenario.guest.poison_value if scenario.guest.page_poison else 0,
        )
        for guest in guests
    ]
    faults = [
        Fault(
            fault.kind,
            fault.at,
            fault.duration,
            fault.factor,
            None if fault.guest is None else guests[fault.guest].device.guest,
        )
        for fault in scenario.faults
    ]
    host = system.spawn(
        Host(
            "host",
            hosted,
            costs,
            memory=host_memory,
            lazy_free=scenario.host.discard == "free",
            inhibited=scenario.host.inhibit_discards,
            reclaim_interval_ns=scenario.host.reclaim_interval,
            faults=faults,
        )
    )
    for guest in guests:
        guest.device.host = host
    return Machine(guests, host)


def _host_memory(scenario: Scenario, costs: Costs) -> HostMemory:
    """The host's memory: its limit, Linux's watermarks on it, and its swap device's speed."""
    host = scenario.host
    limit = pages(host.memory)
    if not limit:
        return HostMemory.unlimited()
    marks = Watermarks.linux_default(limit, host.watermark_scale_factor)
    swap_ns: int = costs.swap_out_4k
    if host.swap_bandwidth is not None:
        swap_ns = -(-PAGE_SIZE * NS_PER_S // host.swap_bandwidth)
    return HostMemory(limit, (marks.min, marks.low, marks.high), swap_ns)


def build_guest(system: ActorSystem, scenario: Scenario) -> Guest:
    """Build a one-guest scenario and return its guest (for tests and notebooks)."""
    return build(system, scenario).guests[0]
