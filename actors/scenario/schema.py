"""The scenario schema: every table of a scenario file, as attrs classes structured by cattrs.

An unknown key, a wrong type or an impossible size is reported with its key path. Sizes accept
units ("32GiB", "64MiB") and durations too ("2s", "500us"). Defaults are the kernel's where the
kernel has one. Each field's docstring is its documentation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs
import cattrs

from pagehint.protocol.units import (
    PAGE_SIZE,
    Bytes,
    Nanos,
    format_size,
    parse_duration,
    parse_size,
)
from pagehint.runtime import NS_PER_S
from pagehint.runtime.harness.config import make_converter

from ..mm.buddy import Watermarks
from ..mm.costs import Costs

# -- the schema ------------------------------------------------------------------------------


@attrs.frozen
class RunSection:
    duration: Nanos = Nanos(NS_PER_S // 2)
    """Virtual time to simulate."""
    seed: int = 0
    """Seed of every random stream in the run: same seed, same log."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Level of log.jsonl; debug adds a line per zone request."""
    sample_interval: Nanos = Nanos(10_000_000)
    """How often the monitor samples RSS and free memory (and checks conservation)."""
    full_check_every: int = 10
    """Run the allocator's full invariant check every N samples (0: never during the run)."""
    baseline: bool = True
    """Also run the same scenario and seed with policy none, for throughput_rel_to_none."""


@attrs.frozen
class GuestSection:
    memory: Bytes = Bytes(4 << 30)
    """Guest memory: one zone of this size."""
    vcpus: int = 4
    """Number of vCPUs, each running the workload."""
    boot_memory: Bytes = Bytes(64 << 20)
    """Memory the booted kernel already uses (allocated before the workload starts)."""
    max_order: int = 11
    """Buddy orders are 0..max_order-1 (x86-64: 11, so 4 MiB blocks)."""
    pageblock_order: int = 9
    """Pageblock order (x86-64: 9, 2 MiB)."""
    shuffle: bool = False
    """CONFIG_SHUFFLE_PAGE_ALLOCATOR: randomise free-list placement at the top order."""
    pcp_batch: int = 63
    """Per-CPU list refill and drain size (pcp->batch)."""
    pcp_high: int = 378
    """Per-CPU list size above which it is drained (pcp->high)."""
    page_poison: bool = False
    """The guest poisons or initialises freed pages (page_poison=1, init_on_free=1): free page
    reporting is then used only if the host offers PAGE_POISON."""
    poison_value: int = 0
    """The poison byte; QEMU skips discarding reports from a guest with a non-zero value."""


@attrs.frozen
class PageFault1:
    name: Literal["page_fault1"] = "page_fault1"
    mapping: Bytes = Bytes(128 << 20)
    """Size each task maps, touches and unmaps per loop (will-it-scale: 128 MiB)."""
    thp: bool = False
    """Fault 2 MiB THPs instead of 4 KiB pages."""


@attrs.frozen
class PageFault2:
    name: Literal["page_fault2"] = "page_fault2"
    mapping: Bytes = Bytes(128 << 20)
    """Size of the private file mapping written per loop (its page cache stays)."""


@attrs.frozen
class Memhog:
    name: Literal["memhog"] = "memhog"
    size: Bytes = Bytes(1 << 30)
    """Memory each vCPU allocates and touches per loop."""
    thp: bool = True
    """Use THPs (what a THP-enabled guest gives memhog's large anonymous mapping)."""
    pause: Nanos = Nanos(50_000_000)
    """Pause after freeing, before the next loop."""
    loops: int = 0
    """Loops to run, then idle (0: loop until the run ends)."""


@attrs.frozen
class Idle:
    name: Literal["idle"] = "idle"


@attrs.frozen
class Churn:
    name: Literal["churn"] = "churn"
    mean_size: Bytes = Bytes(1 << 20)
    """Mean allocation size (exponentially distributed)."""
    mean_lifetime: Nanos = Nanos(20_000_000)
    """Mean allocation lifetime (exponentially distributed)."""
    max_live: Bytes = Bytes(256 << 20)
    """Most memory one vCPU holds at once; older allocations are freed early past it."""
    thp_fraction: float = 0.1
    """Fraction of allocations made of 2 MiB THPs."""
    mean_think: Nanos = Nanos(100_000)
    """Mean computation between allocations."""


@attrs.frozen
class TraceReplay:
    name: Literal["trace"] = "trace"
    path: str = ""
    """perf script output of kmem:mm_page_alloc/mm_page_free (see docs in actors/trace.py);
    relative paths are relative to the scenario file."""
    time_scale: float = 1.0
    """Multiply recorded gaps by this (0.5 replays twice as fast)."""


WorkloadSection = PageFault1 | PageFault2 | Memhog | Idle | Churn | TraceReplay
WORKLOADS: dict[str, type[WorkloadSection]] = {
    attrs.fields(cls).name.default: cls
    for cls in (PageFault1, PageFault2, Memhog, Idle, Churn, TraceReplay)
}


PolicyName = Literal["none", "scanner", "page_reporting", "percpu_capture", "bitmap"]


@attrs.frozen
class PolicySection:
    """The hinting design and its knobs; unset knobs take the design's own (kernel) values."""

    name: PolicyName = "page_reporting"
    """none, scanner (the seed's proposal), page_reporting (Linux 5.7+), percpu_capture
    (Nitesh v9), bitmap (Nitesh v11/v12)."""
    capacity: int | None = None
    """Blocks per report: page_reporting 32 (PAGE_REPORTING_CAPACITY), scanner 32, percpu_capture
    128, bitmap 16 (PAGE_REPORTING_MAX_PAGES)."""
    min_order: int | None = None
    """Smallest order hinted: page_reporting pageblock_order; scanner and bitmap MAX_ORDER-2;
    percpu_capture MAX_ORDER-1."""
    delay: Nanos | None = None
    """Delay from trigger to pass: page_reporting 2s (PAGE_REPORTING_DELAY); others 0."""
    tail_placement: bool = False
    """page_reporting: put reported pages back at the tail (5.10 FPI_TO_TAIL)."""
    batch: Bytes = Bytes(64 << 20)
    """scanner: most memory isolated at once (the seed's 64 MiB); it wakes at twice this."""
    threshold: int | None = None
    """percpu_capture: captured entries that start hinting (128); bitmap: set bits (16)."""
    array_size: int = 256
    """percpu_capture: entries per CPU array (MAX_FGPT_ENTRIES); frees beyond are lost hints."""
    poll_budget: int = 64
    """Reports per wake-up before the worker yields and polls again (NAPI budget)."""


@attrs.frozen
class VirtioSection:
    queue_size: int | None = None
    """Reporting virtqueue size; unset: 32 as QEMU creates it (at least the capacity)."""
    event_idx: bool = False
    """VIRTIO_RING_F_EVENT_IDX notification suppression."""


@attrs.frozen
class HostSection:
    guests: int = 1
    """Identical guests on this host (each with its own seed streams)."""
    memory: Bytes = Bytes(0)
    """Host memory for guests; 0 is unlimited. Over it, the host swaps guest pages out."""
    discard: Literal["dontneed", "free"] = "dontneed"
    """How reported ranges are discarded: MADV_DONTNEED (freed at once) or MADV_FREE (lazily,
    under memory pressure; a guest write first cancels it)."""
    batch_size: Bytes = Bytes(0)
    """Batch size the host supplies to the guest (0: not supplied; Tsirkin's suggestion)."""
    reporting: bool = True
    """The host offers VIRTIO_BALLOON_F_REPORTING (QEMU free-page-reporting=on)."""
    page_poison: bool = True
    """The host offers VIRTIO_BALLOON_F_PAGE_POISON (QEMU page-poison, default on)."""
    reclaim_interval: Nanos = Nanos(1_000_000)
    """How often the host checks its memory limit."""
    stagger: Nanos = Nanos(0)
    """Guest i starts its workload i x stagger late, so guests do not run in lockstep."""


@attrs.frozen
class FaultSection:
    kind: Literal["stall", "slowdown", "reset"]
    """stall: the host stops serving reports; slowdown: its costs x factor; reset: the device
    is reset, dropping every outstanding report."""
    at: Nanos
    """Virtual time the fault starts."""
    duration: Nanos = Nanos(0)
    """How long a stall or slowdown lasts."""
    factor: float = 4.0
    """Cost multiplier of a slowdown."""
    guest: int | None = None
    """Guest index a reset applies to (unset: every guest)."""


@attrs.frozen
class Scenario:
    run: RunSection = RunSection()
    guest: GuestSection = GuestSection()
    workload: WorkloadSection = PageFault1()
    policy: PolicySection = PolicySection()
    virtio: VirtioSection = VirtioSection()
    host: HostSection = HostSection()
    faults: tuple[FaultSection, ...] = ()
    costs: Costs = attrs.Factory(Costs)


# -- structuring and checks ------------------------------------------------------------------


def _size_text(size: int) -> str | int:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size and size % scale == 0:
            return f"{size // scale}{unit}"
    return size


def _duration_text(ns: int) -> str | int:
    for unit, scale in (("s", NS_PER_S), ("ms", 1_000_000), ("us", 1_000)):
        if ns and ns % scale == 0:
            return f"{ns // scale}{unit}"
    return f"{ns}ns"


def _structure_workload(document: Any, _: Any) -> WorkloadSection:
    if not isinstance(document, Mapping):
        raise ValueError(f"expected a table with a name (one of {', '.join(WORKLOADS)})")
    name = document.get("name", "page_fault1")
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload name {name!r}; choose one of {', '.join(WORKLOADS)}")
    return CONVERTER.structure(document, WORKLOADS[name])


def _make_converter() -> cattrs.Converter:
    converter = make_converter()
    converter.register_structure_hook(Bytes, lambda value, _: parse_size(value))
    converter.register_structure_hook(Nanos, lambda value, _: parse_duration(value))
    converter.register_unstructure_hook(Bytes, _size_text)
    converter.register_unstructure_hook(Nanos, _duration_text)
    converter.register_structure_hook(WorkloadSection, _structure_workload)
    return converter


CONVERTER = _make_converter()


def check_scenario(scenario: Scenario) -> list[str]:
    """Values that are each well-typed but impossible, alone or together."""
    guest, run = scenario.guest, scenario.run
    problems = []
    if run.duration <= 0:
        problems.append("run.duration: must be positive")
    if run.sample_interval <= 0:
        problems.append("run.sample_interval: must be positive")
    if run.full_check_every < 0:
        problems.append("run.full_check_every: must be 0 (never) or positive")
    if not 1 <= guest.vcpus <= 4096:
        problems.append(f"guest.vcpus: must be within 1..4096, got {guest.vcpus}")
    if not 2 <= guest.max_order <= 20:
        problems.append(f"guest.max_order: must be within 2..20, got {guest.max_order}")
    if not 0 <= guest.pageblock_order < guest.max_order:
        problems.append(
            f"guest.pageblock_order: must be within 0..max_order-1 ({guest.max_order - 1}), "
            f"got {guest.pageblock_order}"
        )
    if guest.memory % PAGE_SIZE or guest.memory < 16 << 20:
        problems.append(
            f"guest.memory: must be a whole number of 4KiB pages and at least 16MiB, "
            f"got {format_size(guest.memory)}"
        )
    high_watermark = Watermarks.linux_default(guest.memory // PAGE_SIZE).high * PAGE_SIZE
    if guest.boot_memory + high_watermark >= guest.memory:
        problems.append(
            f"guest.boot_memory: {format_size(guest.boot_memory)} plus the zone's high "
            f"watermark ({format_size(high_watermark)}) does not fit in guest.memory "
            f"{format_size(guest.memory)}"
        )
    if guest.pcp_batch < 1 or guest.pcp_high < guest.pcp_batch:
        problems.append(
            f"guest.pcp_high ({guest.pcp_high}) must be at least guest.pcp_batch "
            f"({guest.pcp_batch}), which must be positive"
        )
    problems += _check_hinting(scenario)
    workload = scenario.workload
    if isinstance(workload, Churn) and not 0.0 <= workload.thp_fraction <= 1.0:
        problems.append(f"workload.thp_fraction: must be within 0..1, got {workload.thp_fraction}")
    if isinstance(workload, TraceReplay):
        if not workload.path:
            problems.append(
                "workload.path: the trace workload needs the path of a perf script file"
            )
        if workload.time_scale <= 0:
            problems.append(f"workload.time_scale: must be positive, got {workload.time_scale}")
    return problems


def policy_defaults(scenario: Scenario) -> tuple[int, int, int]:
    """The effective (capacity, min_order, delay_ns) of the configured policy."""
    policy, guest = scenario.policy, scenario.guest
    capacity, min_order, delay = {
        "none": (32, guest.max_order - 1, 0),
        "scanner": (32, guest.max_order - 2, 0),
        "page_reporting": (32, guest.pageblock_order, 2 * NS_PER_S),
        "percpu_capture": (128, guest.max_order - 1, 0),
        "bitmap": (16, guest.max_order - 2, 0),
    }[policy.name]
    return (
        policy.capacity if policy.capacity is not None else capacity,
        policy.min_order if policy.min_order is not None else max(0, min_order),
        policy.delay if policy.delay is not None else delay,
    )


def queue_size(scenario: Scenario) -> int:
    """The reporting virtqueue's size: as configured, else QEMU's 32 (or the capacity)."""
    if scenario.virtio.queue_size is not None:
        return scenario.virtio.queue_size
    capacity = policy_defaults(scenario)[0]
    return max(32, 1 << (capacity - 1).bit_length())


def _check_hinting(scenario: Scenario) -> list[str]:
    policy, guest, host = scenario.policy, scenario.guest, scenario.host
    capacity, min_order, _ = policy_defaults(scenario)
    size = queue_size(scenario)
    problems = []
    if capacity < 1:
        problems.append(f"policy.capacity: must be positive, got {capacity}")
    if not 0 <= min_order < guest.max_order:
        problems.append(
            f"policy.min_order: must be within 0..{guest.max_order - 1} (guest.max_order - 1), "
            f"got {min_order}"
        )
    if size < 1 or size & (size - 1) or size > 32768:
        problems.append(f"virtio.queue_size: must be a power of two up to 32768, got {size}")
    elif policy.name != "none" and capacity > size:
        problems.append(
            f"policy.capacity: a report of {capacity} blocks does not fit the virtqueue "
            f"(virtio.queue_size = {size})"
        )
    if policy.poll_budget < 1:
        problems.append(f"policy.poll_budget: must be positive, got {policy.poll_budget}")
    if policy.batch < PAGE_SIZE << min_order:
        problems.append(
            f"policy.batch: {format_size(policy.batch)} is smaller than one block of the "
            f"smallest hinted order ({format_size(PAGE_SIZE << min_order)})"
        )
    if not 1 <= host.guests <= 64:
        problems.append(f"host.guests: must be within 1..64, got {host.guests}")
    if host.memory and host.memory < guest.boot_memory * host.guests:
        problems.append(
            f"host.memory: {format_size(host.memory)} cannot even hold the guests' boot memory"
        )
    if host.reclaim_interval <= 0:
        problems.append("host.reclaim_interval: must be positive")
    for index, fault in enumerate(scenario.faults):
        if fault.kind in ("stall", "slowdown") and fault.duration <= 0:
            problems.append(f"faults[{index}].duration: a {fault.kind} needs a positive duration")
        if fault.factor <= 0:
            problems.append(f"faults[{index}].factor: must be positive, got {fault.factor}")
        if fault.guest is not None and not 0 <= fault.guest < host.guests:
            problems.append(
                f"faults[{index}].guest: no guest {fault.guest} (host.guests = {host.guests})"
            )
    return problems
