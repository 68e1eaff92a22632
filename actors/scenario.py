"""The guest scenario: its config schema, how it is built and run, and what it reports.

A scenario file is TOML; every table below is an attrs class, structured with cattrs, so an
unknown key, a wrong type or an impossible size is reported with its key path. Sizes accept
units ("32GiB", "64MiB") and durations too ("2s", "500us"). Defaults are the kernel's where the
kernel has one; ``configs/default.toml`` is the default scenario, commented.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
from rich.table import Table

from pagehint.protocol.units import (
    PAGE_SIZE,
    Bytes,
    Nanos,
    format_duration,
    format_size,
    pages,
    parse_duration,
    parse_size,
)
from pagehint.runtime import NS_PER_S, ActorSystem, stream_for
from pagehint.runtime.config import ConfigError, make_converter, structure

from . import workloads
from .buddy import BuddyAllocator
from .costs import Costs
from .host_memory import GuestBacking
from .monitor import Monitor
from .trace import Trace, TraceError, parse_perf_script
from .vcpu import PcpLimits, VCpu
from .zone import Zone

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


@attrs.frozen
class Scenario:
    run: RunSection = RunSection()
    guest: GuestSection = GuestSection()
    workload: WorkloadSection = PageFault1()
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
    if guest.boot_memory >= guest.memory:
        problems.append(
            f"guest.boot_memory: {format_size(guest.boot_memory)} does not fit in "
            f"guest.memory {format_size(guest.memory)}"
        )
    if guest.pcp_batch < 1 or guest.pcp_high < guest.pcp_batch:
        problems.append(
            f"guest.pcp_high ({guest.pcp_high}) must be at least guest.pcp_batch "
            f"({guest.pcp_batch}), which must be positive"
        )
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


# -- running ---------------------------------------------------------------------------------


def _workload_for(scenario: Scenario, index: int, trace: Trace | None) -> workloads.Workload:
    workload = scenario.workload
    if isinstance(workload, PageFault1):
        return workloads.page_fault1(pages(workload.mapping), workload.thp)
    if isinstance(workload, PageFault2):
        return workloads.page_fault2(pages(workload.mapping))
    if isinstance(workload, Memhog):
        return workloads.memhog(pages(workload.size), workload.thp, workload.pause)
    if isinstance(workload, Idle):
        return workloads.idle()
    if isinstance(workload, Churn):
        return workloads.churn(
            stream_for(scenario.run.seed, "workload", index),
            mean_pages=max(1, pages(workload.mean_size)),
            mean_lifetime_ns=max(1, workload.mean_lifetime),
            max_live_pages=max(1, pages(workload.max_live)),
            thp_fraction=workload.thp_fraction,
            think_ns=workload.mean_think,
        )
    assert trace is not None
    share = workloads.split_by_cpu(trace.events, scenario.guest.vcpus)[index]
    return workloads.replay(share, trace.start_ns, workload.time_scale)


@functools.lru_cache(maxsize=4)
def read_trace(path: str) -> Trace:
    """Parse a trace file once per process (checked at load time, replayed at build time)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            return parse_perf_script(lines, path)
    except OSError as error:
        raise ConfigError(
            "workload.path", [f"cannot read trace {path}: {error.strerror}"]
        ) from None
    except TraceError as error:
        raise ConfigError("workload.path", [str(error)]) from None


def _trace_of(scenario: Scenario) -> Trace | None:
    workload = scenario.workload
    return read_trace(workload.path) if isinstance(workload, TraceReplay) else None


@attrs.define
class Guest:
    """The built guest: its actors and the pure state they share."""

    zone: Zone
    vcpus: list[VCpu]
    backing: GuestBacking
    monitor: Monitor
    boot_pages: int


def build_guest(system: ActorSystem, scenario: Scenario) -> Guest:
    guest, run = scenario.guest, scenario.run
    total = pages(guest.memory)
    trace = _trace_of(scenario)
    allocator = BuddyAllocator(
        total,
        guest.max_order,
        guest.pageblock_order,
        shuffle=guest.shuffle,
        rng=stream_for(run.seed, "shuffle") if guest.shuffle else None,
    )
    backing = GuestBacking(total)
    zone = system.spawn(Zone("zone", allocator, scenario.costs))
    boot_order = min(guest.pageblock_order, guest.max_order - 1)
    boot_blocks = zone.take_at_boot(pages(guest.boot_memory), boot_order)
    for pfn in boot_blocks:
        backing.touch(pfn, 1 << boot_order)
    limits = PcpLimits(guest.pcp_batch, guest.pcp_high)
    vcpus = [
        system.spawn(
            VCpu(
                f"vcpu{index}",
                zone,
                backing,
                _workload_for(scenario, index, trace),
                scenario.costs,
                limits,
            )
        )
        for index in range(guest.vcpus)
    ]
    monitor = system.spawn(
        Monitor("monitor", zone, vcpus, backing, run.sample_interval, run.full_check_every)
    )
    return Guest(zone, vcpus, backing, monitor, len(boot_blocks) << boot_order)


def summarise(scenario: Scenario, guest: Guest, elapsed_ns: int) -> dict[str, Any]:
    zone, vcpus = guest.zone, guest.vcpus
    seconds = elapsed_ns / NS_PER_S
    faults = sum(vcpu.counters.faults for vcpu in vcpus)
    wait = zone.lock_wait_ns
    return {
        "virtual_s": seconds,
        "workload": {
            "name": scenario.workload.name,
            "faults": faults,
            "faults_per_s_per_vcpu": round(faults / len(vcpus) / seconds, 1),
            "loops": sum(vcpu.counters.loops for vcpu in vcpus),
            "oom_kills": sum(vcpu.counters.ooms for vcpu in vcpus),
        },
        "lock_wait_ns": {"p50": wait.quantile(0.5), "p99": wait.quantile(0.99), "max": wait.max},
        "zone": {
            "requests": wait.count,
            "lock_utilisation": round(zone.utilisation(elapsed_ns), 4),
            "lock_wait_ns": wait.summary(),
            "lock_hold_ns": zone.lock_hold_ns.summary(),
            "queue_depth": zone.queue_depth.summary(),
            "lock_wait_ns_by_requester": {
                group: histogram.summary()
                for group, histogram in sorted(zone.wait_by_group.items())
            },
            "failed_allocations": zone.failed_allocations,
            "free_pages_end": zone.allocator.free_pages,
            "min_free_pages": guest.monitor.min_free_pages,
        },
        "host": {
            "rss_bytes_end": guest.backing.rss_pages * PAGE_SIZE,
            "rss_bytes_peak": guest.monitor.peak_rss_pages * PAGE_SIZE,
            "first_touches": guest.backing.first_touches,
            "refaults": guest.backing.refaults,
        },
        "invariant_violations": 0,
    }


class GuestModel:
    """The guest model, registered as the ``guest`` entry point of ``pagehint.models``."""

    name = "guest"

    def load(self, document: dict[str, Any], source: str) -> Scenario:
        scenario = structure(CONVERTER, document, Scenario, source)
        problems = check_scenario(scenario)
        if problems:
            raise ConfigError(source, problems)
        workload = scenario.workload
        if isinstance(workload, TraceReplay):
            # Relative to the scenario file, and resolved now so config.toml re-runs anywhere.
            base = Path(source).parent if source.endswith(".toml") else Path.cwd()
            path = str((base / workload.path).resolve())
            scenario = attrs.evolve(scenario, workload=attrs.evolve(workload, path=path))
            read_trace(path)  # a bad trace is bad input: report it before the run starts
        return scenario

    def unstructure(self, config: Scenario) -> dict[str, Any]:
        document: dict[str, Any] = CONVERTER.unstructure(config)
        return document

    def seed(self, config: Scenario) -> int:
        return config.run.seed

    def with_seed(self, config: Scenario, seed: int) -> Scenario:
        return attrs.evolve(config, run=attrs.evolve(config.run, seed=seed))

    def log_level(self, config: Scenario) -> str:
        return config.run.log_level

    async def run(self, system: ActorSystem, config: Scenario) -> dict[str, Any]:
        guest = build_guest(system, config)
        await system.sleep_until_ns(config.run.duration)
        guest.monitor.sample()  # the final sample, with a last conservation check
        guest.zone.allocator.check_invariants()
        summary = summarise(config, guest, config.run.duration)
        system.log.info("run_end", **summary)
        return summary

    def summary_table(self, summary: Mapping[str, Any]) -> Table:
        workload, zone, host = summary["workload"], summary["zone"], summary["host"]
        wait = summary["lock_wait_ns"]
        table = Table(title=f"pagehint: {workload['name']} for {summary['virtual_s']:g} virtual s")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("faults per second per vCPU", f"{workload['faults_per_s_per_vcpu']:,.0f}")
        table.add_row("workload loops", f"{workload['loops']:,}")
        table.add_row(
            "zone lock wait p50 / p99 / max",
            " / ".join(format_duration(wait[key]) for key in ("p50", "p99", "max")),
        )
        table.add_row("zone lock utilisation", f"{zone['lock_utilisation']:.1%}")
        table.add_row("zone lock requests", f"{zone['requests']:,}")
        table.add_row(
            "host RSS end (peak)",
            f"{format_size(host['rss_bytes_end'])} ({format_size(host['rss_bytes_peak'])})",
        )
        table.add_row("OOM kills", str(workload["oom_kills"]))
        return table


MODEL = GuestModel()
