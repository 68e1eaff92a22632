"""The scenario schema: every table of a scenario file, as attrs classes structured by cattrs.

An unknown key, a wrong type or an impossible size is reported with its key path. Sizes and
durations need their units ("32GiB", "64MiB"; "2s", "500us"; a bare 0 goes without). Defaults
are the kernel's where the kernel has one. Each field's docstring is its documentation.
"""

from __future__ import annotations

import textwrap
import typing
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import cattrs
import cattrs.gen

from pagehint.protocol.units import (
    PAGE_SIZE,
    Bytes,
    Nanos,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)
from pagehint.runtime import NS_PER_S
from pagehint.runtime.determinism import MAX_SEED
from pagehint.runtime.harness.config import ConfigNotice, TableKeysError, make_converter, suggest

from ..designs import DesignConfig, PageReportingConfig, Policy
from ..designs.registry import find_design, installed_designs
from ..mm.buddy import Watermarks
from ..mm.costs import Costs
from ..mm.host_memory import MAX_PAGES
from ..mm.kernels import DEFAULT_KERNEL, KERNELS
from ..mm.profiles import cost_rules, costs_for, default_profile, profiles
from ..workloads import THP_ORDER
from .effective import check_hinting, pcp_sizes

DEFAULT_DESIGN = "page_reporting"
# The shortest period of anything the model does periodically: one jiffy at HZ=1000, the
# finest period a kernel timer has; it also bounds how fast the monitor's samples fill a log.
MIN_INTERVAL = Nanos(1_000_000)
# host.backing -> (host page size in 4 KiB pages, hugetlbfs)
HOST_BACKINGS: dict[str, tuple[int, bool]] = {
    "4k": (1, False),
    "thp": (512, False),
    "hugetlb-2m": (512, True),
    "hugetlb-1g": (1 << 18, True),
}


class KernelName(str):
    """A guest kernel profile's name (``actors/mm/kernels.py``), checked when structured."""


DEFAULT_KERNEL_NAME = KernelName(DEFAULT_KERNEL)


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
    """Check the allocator's invariants every N samples: its counters and the next slice of the
    zone (about 4096 blocks), round-robin; the full check runs at the end (0: only then)."""
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
    kernel: KernelName = DEFAULT_KERNEL_NAME
    """The guest kernel: what it puts back where, what its per-CPU lists hold and how they are
    sized ("5.7", "5.10", "5.14", "6.12"; docs/kernels.md). It sets the defaults of the knobs
    it governs; a knob set explicitly wins (pagehint config --explain shows which applied)."""
    pcp_batch: int | None = None
    """Per-CPU list refill and drain size (pcp->batch); unset: zone_batchsize(), 63 for guests
    of about 700MiB and more."""
    pcp_high: int | None = None
    """Per-CPU list size at which it is drained (pcp->high); unset: the kernel's rule (5.7 and
    5.10: 6 x batch; 5.14: the low watermark split over the vCPUs; 6.12: auto-tuned above
    that). Set, it is fixed, as vm.percpu_pagelist_high_fraction fixes it."""
    start_jitter: Nanos | None = None
    """Each vCPU starts its workload a seeded random time in [0, start_jitter) late, so that
    identical vCPUs do not fault in lockstep; unset: one 4KiB fault's time (costs.fault_4k +
    costs.zero_4k); 0: lockstep."""
    hinting_vcpu: int | None = None
    """The vCPU the hinting worker's CPU work runs on; unset: the vCPU that queued it, as the
    system workqueue runs delayed work (page_reporting) on the queuing CPU. A design that hints
    inline (percpu_capture) always runs on the freeing vCPU."""
    interrupt_vcpu: int = 0
    """The vCPU that takes the balloon's used-buffer interrupt (an unpinned virtio interrupt
    usually lands on vCPU 0)."""
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
    """The text perf script (with or without -g) or trace-cmd report prints of
    kmem:mm_page_alloc/mm_page_free, not perf.data or trace.dat (formats:
    actors/workloads/trace.py); relative paths are relative to the scenario file."""
    time_scale: float = 1.0
    """Multiply recorded gaps by this (0.5 replays twice as fast)."""


SingleWorkload = PageFault1 | PageFault2 | Memhog | Idle | Churn | TraceReplay


@attrs.frozen
class PhaseSection:
    """One phase of a phased workload: a workload table, plus when the phase ends and which
    vCPUs run it."""

    workload: SingleWorkload
    duration: Nanos = Nanos(0)
    tasks: int | None = None


@attrs.frozen
class Phases:
    name: Literal["phases"] = "phases"
    phases: tuple[PhaseSection, ...] = ()

    @classmethod
    def explain_keys(cls, prefix: str) -> list[str]:
        """[[workload.phases]]: each phase a workload table with two more keys."""
        return [
            'name = "phases"',
            "    # Run the [[workload.phases]] tables in order on every vCPU, then idle; each",
            "    # phase's figures are reported on their own (summary.json: phases).",
            "[[workload.phases]]  # a list of tables: a workload table (name and its keys), and",
            'duration = "0ns"',
            "    # The phase ends this long after it starts on a vCPU (0: when its workload ends:",
            "    # memhog's loops, a trace; page_fault1, page_fault2, churn and idle, unless last,",
            "    # need one).",
            "tasks = (unset)",
            "    # Only vCPUs 0..tasks-1 run it; the others idle through it (will-it-scale with",
            "    # fewer tasks than vCPUs). Unset: every vCPU.",
        ]


WorkloadSection = SingleWorkload | Phases
WORKLOADS: dict[str, type[WorkloadSection]] = {
    attrs.fields(cls).name.default: cls
    for cls in (PageFault1, PageFault2, Memhog, Idle, Churn, TraceReplay, Phases)
}
ENDLESS = ("page_fault1", "page_fault2", "churn", "idle")  # a phase of these needs a duration


@attrs.frozen
class VirtioSection:
    queue_size: int | None = None
    """Reporting virtqueue size; unset: 32 as QEMU creates it (or the smallest power of two
    that holds a report of policy.capacity blocks)."""
    event_idx: bool = False
    """VIRTIO_RING_F_EVENT_IDX notification suppression."""


@attrs.frozen
class HostSection:
    guests: int = 1
    """Identical guests on this host (each with its own seed streams)."""
    memory: Bytes = Bytes(0)
    """Host memory for guests; 0 is unlimited. Below its low watermark (Linux's formula on this
    size) kswapd swaps guest pages out; below its min watermark a faulting vCPU reclaims
    itself (direct reclaim) and pays for the swap-out."""
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
    """How often the host's kswapd wakes to check its watermarks (with host.memory)."""
    backing: str = "thp"
    """What backs guest memory on the host: "4k" pages, "thp" (transparent huge pages where a
    whole aligned 2MiB is touched), "hugetlb-2m" or "hugetlb-1g" (hugetlbfs: QEMU skips a
    reported range not aligned to the page, and a discarded page returns to the pool)."""
    inhibit_discards: bool = False
    """A device is assigned through VFIO: QEMU acknowledges each report without discarding
    (virtio_balloon_inhibited()). Measures a design's guest-side cost alone."""
    watermark_scale_factor: int = 10
    """The host's vm.watermark_scale_factor (Linux's default, 10): how far apart its min, low
    and high watermarks on host.memory are (__setup_per_zone_wmarks), hence when kswapd starts
    and stops. kswapd's scan rate is host.swap_bandwidth over host.reclaim_interval."""
    swap_bandwidth: Bytes | None = None
    """Bytes per second the host's swap device writes (with host.memory): what direct reclaim
    costs the faulting vCPU and how fast kswapd reclaims; unset: the cost profile's
    (costs.swap_out_4k)."""
    stagger: Nanos = Nanos(0)
    """Guest i starts its workload i x stagger late, so guests do not run in lockstep."""
    prealloc: bool = False
    """Back all guest memory before the guest boots (QEMU -mem-prealloc, prealloc=on): as a
    guest that has touched all its memory once (memhog) has it backed, so that first touches
    cost the host nothing until hinting discards something."""


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
class CostsSection:
    """The [costs] table: a hardware profile, and any single cost overridden."""

    profile: str = attrs.field(factory=default_profile)
    overrides: tuple[tuple[str, Nanos], ...] = ()

    def resolve(self) -> Costs:
        return attrs.evolve(costs_for(self.profile), **dict(self.overrides))

    @classmethod
    def explain_keys(cls, prefix: str) -> list[str]:
        """The keys of [costs] for pagehint config --explain: the profile, then every cost with
        the default profile's value."""
        names = ", ".join(f'"{name}"' for name in profiles())
        lines = [
            f'profile = "{default_profile()}"',
            *(
                f"    # {line}"
                for line in textwrap.wrap(
                    f"The host machine whose measured costs the run uses ({names}); every "
                    "number, its source and its arithmetic: docs/costs.md.",
                    88,
                )
            ),
        ]
        defaults = costs_for(default_profile())
        for rule in cost_rules():
            value = _duration_text(getattr(defaults, rule.key))
            lines.append(f'{rule.key} = "{value}"  # unset: the profile\'s')
            lines.extend(f"    # {line}" for line in textwrap.wrap(rule.doc, 88))
        return lines


@attrs.frozen
class Scenario:
    run: RunSection = RunSection()
    guest: GuestSection = GuestSection()
    workload: WorkloadSection = PageFault1()
    policy: DesignConfig = attrs.Factory(lambda: PageReportingConfig(name=DEFAULT_DESIGN))
    """The [policy] table: name picks the design; the other keys are the knobs every design
    has and the chosen design's own (pagehint designs lists them)."""
    virtio: VirtioSection = VirtioSection()
    host: HostSection = HostSection()
    faults: tuple[FaultSection, ...] = ()
    costs: CostsSection = attrs.Factory(CostsSection)
    """The [costs] table: costs.profile picks the hardware; costs.KEY overrides one cost."""


# -- structuring and checks ------------------------------------------------------------------


def _size_text(size: int) -> str | int:
    """A size as config.toml writes it: in its largest whole unit, so that it reloads."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B" if size else 0


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
        raise TableKeysError(
            {"name": f"unknown workload {name!r}; choose one of {', '.join(WORKLOADS)}"}
        )
    if name == "phases":
        return _structure_phases(document)
    return CONVERTER.structure(document, WORKLOADS[name])


def _structure_phases(document: Mapping[str, Any]) -> Phases:
    """[[workload.phases]]: a non-empty list of workload tables, each checked and named by its
    place in the list."""
    unknown = sorted(set(document) - {"name", "phases"})
    if unknown:
        raise TableKeysError({key: "unknown key (valid keys: name, phases)" for key in unknown})
    tables = document.get("phases", [])
    if not isinstance(tables, list) or not tables:
        raise TableKeysError({"phases": "a phased workload needs at least one [[workload.phases]]"})
    names = [name for name in WORKLOADS if name != "phases"]
    problems: dict[str, str] = {}
    phases: list[PhaseSection] = []
    for index, table in enumerate(tables):
        where = f"phases[{index}]"
        if not isinstance(table, Mapping):
            problems[where] = "expected a table with a name"
            continue
        own = {key: value for key, value in table.items() if key not in ("duration", "tasks")}
        name = own.get("name", "page_fault1")
        if name not in names:
            problems[f"{where}.name"] = (
                f"unknown workload {name!r}; choose one of {', '.join(names)}"
            )
            continue
        try:
            workload: SingleWorkload = CONVERTER.structure(own, WORKLOADS[name])  # type: ignore[assignment]
            duration = parse_duration(table.get("duration", 0))
            tasks = table.get("tasks")
            if tasks is not None and (type(tasks) is not int or tasks < 1):
                raise ValueError(f"tasks: expected a positive number of vCPUs, got {tasks!r}")
        except Exception as error:
            problems[where] = _plain_error(error)
            continue
        if name in ENDLESS and not duration and index < len(tables) - 1:
            problems[f"{where}.duration"] = (
                f"a {name} phase never ends by itself, so the phases after it would never run: "
                "give it a duration"
            )
        phases.append(PhaseSection(workload, duration, tasks))
    if problems:
        raise TableKeysError(problems)
    return Phases(phases=tuple(phases))


def _plain_error(error: Exception) -> str:
    """A structuring error of one phase, in the user's words (cattrs' first leaf)."""
    leaves = getattr(error, "exceptions", None)
    if leaves:
        note = getattr(leaves[0], "__notes__", None) or [""]
        return f"{note[0].removeprefix('Structuring class ')}: {leaves[0]}".strip(": ")
    return str(error)


def _unstructure_phases(workload: Phases) -> dict[str, Any]:
    tables = []
    for phase in workload.phases:
        table: dict[str, Any] = CONVERTER.unstructure(phase.workload)
        table["duration"] = _duration_text(phase.duration)
        if phase.tasks is not None:
            table["tasks"] = phase.tasks
        tables.append(table)
    return {"name": "phases", "phases": tables}


def _structure_policy(document: Any, _: Any) -> DesignConfig:
    """[policy] as the chosen design's config: only its knobs, or a knob another design has at
    that design's default (what config.toml files of earlier versions carry), dropped."""
    if not isinstance(document, Mapping):
        raise ValueError("expected a table with a name (a design: pagehint designs lists them)")
    name = document.get("name", DEFAULT_DESIGN)
    if not isinstance(name, str):
        raise ValueError(f"name: expected the name of a design, got {name!r}")
    design = find_design(name)
    knobs = [field.name for field in attrs.fields(design.Config)]
    kept = {key: value for key, value in document.items() if key in knobs}
    refused: dict[str, str] = {}
    for key, value in document.items():
        if key in knobs:
            continue
        owners = [owner for owner in installed_designs().values() if _has_knob(owner, key)]
        if owners and all(_is_default(owner, key, value) for owner in owners):
            warnings.warn(
                f"policy.{key} = {value!r} dropped: it is {owners[0].name}'s knob at its "
                f"default, and design {name!r} has no such knob",
                ConfigNotice,
                stacklevel=2,
            )
            continue
        whose = f"; it is a knob of {', '.join(o.name for o in owners)}" if owners else ""
        refused[key] = (
            f"not a knob of design {name!r}{whose}{suggest(key, knobs)} "
            f"(its knobs: {', '.join(knobs)})"
        )
    if refused:
        raise TableKeysError(refused)
    config: DesignConfig = _knobs_of(design.Config)[0]({**kept, "name": name}, design.Config)
    return config


def _has_knob(design: type[Policy], key: str) -> bool:
    return key in attrs.fields_dict(design.Config)


def _is_default(design: type[Policy], key: str, value: Any) -> bool:
    """Whether ``value``, as a knob of ``design``, is that knob's default. A knob the guest
    kernel decides (``kernel_knobs``, unset by default) has every value of its type as a
    default: each is what some kernel gives it (earlier versions wrote tail_placement = false)."""
    kind = typing.get_type_hints(design.Config)[key]
    default = attrs.fields_dict(design.Config)[key].default
    try:
        structured = CONVERTER.structure(value, kind)
    except Exception:  # a value that does not even structure is no default
        return False
    kernel_decides = default is None and key in design.kernel_knobs and structured == value
    return bool(structured == default or kernel_decides)


def _unstructure_policy(config: DesignConfig) -> dict[str, Any]:
    """Every knob of the chosen design, not only those every design has."""
    document: dict[str, Any] = _knobs_of(type(config))[1](config)
    return document


_CONFIG_HOOKS: dict[type[DesignConfig], tuple[Any, Any]] = {}


def _knobs_of(config_class: type[DesignConfig]) -> tuple[Any, Any]:
    """How one design's config is structured and unstructured (not by the [policy] hooks,
    which hand over to these)."""
    hooks = _CONFIG_HOOKS.get(config_class)
    if hooks is None:
        hooks = _CONFIG_HOOKS[config_class] = (
            cattrs.gen.make_dict_structure_fn(config_class, CONVERTER),
            cattrs.gen.make_dict_unstructure_fn(config_class, CONVERTER),
        )
    return hooks


def _structure_kernel(value: Any, _: Any) -> KernelName:
    """A known kernel's name; a number that reads as one is taken (``--set guest.kernel=5.14``),
    but a number drops trailing zeros (5.10 is 5.1), so the message says to quote it."""
    name = repr(value) if isinstance(value, float) else value
    if isinstance(name, str) and name in KERNELS:
        return KernelName(name)
    known = ", ".join(f'"{kernel}"' for kernel in KERNELS)
    hint = ""
    if isinstance(value, int | float):
        hint = " (a number drops trailing zeros, 5.10 reads as 5.1: quote the name)"
    raise ValueError(f"unknown kernel {value!r}{hint}; known kernels: {known}")


def _structure_costs(document: Any, _: Any) -> CostsSection:
    """[costs]: a known profile, and overrides of known costs, each a duration with its unit."""
    if not isinstance(document, Mapping):
        raise ValueError("expected a table: profile and any cost to override")
    problems: dict[str, str] = {}
    profile = document.get("profile", default_profile())
    if profile not in profiles():
        known = ", ".join(f'"{name}"' for name in profiles())
        problems["profile"] = f"unknown profile {profile!r}; known profiles: {known}"
    keys = [field.name for field in attrs.fields(Costs)]
    overrides: list[tuple[str, Nanos]] = []
    for key, value in document.items():
        if key == "profile":
            continue
        if key not in keys:
            problems[key] = (
                f"unknown key{suggest(key, keys)} (valid keys: profile, {', '.join(keys)})"
            )
        elif not isinstance(value, str):
            problems[key] = f'a cost needs a unit ("150us", "300ns"), got {value!r}'
        else:
            try:
                overrides.append((key, parse_duration(value)))
            except ValueError as error:
                problems[key] = str(error)
    if problems:
        raise TableKeysError(problems)
    return CostsSection(profile, tuple(overrides))


def _unstructure_costs(costs: CostsSection) -> dict[str, Any]:
    return {"profile": costs.profile} | {key: _duration_text(ns) for key, ns in costs.overrides}


def _make_converter() -> cattrs.Converter:
    converter = make_converter()
    converter.register_structure_hook_func(lambda kind: kind is DesignConfig, _structure_policy)
    converter.register_unstructure_hook_func(lambda kind: kind is DesignConfig, _unstructure_policy)
    converter.register_structure_hook(Bytes, lambda value, _: parse_size(value))
    converter.register_structure_hook(Nanos, lambda value, _: parse_duration(value))
    converter.register_unstructure_hook(Bytes, _size_text)
    converter.register_unstructure_hook(Nanos, _duration_text)
    converter.register_structure_hook(WorkloadSection, _structure_workload)
    converter.register_unstructure_hook(Phases, _unstructure_phases)
    converter.register_structure_hook(KernelName, _structure_kernel)
    converter.register_unstructure_hook(KernelName, str)
    converter.register_structure_hook(CostsSection, _structure_costs)
    converter.register_unstructure_hook(CostsSection, _unstructure_costs)
    return converter


CONVERTER = _make_converter()


def check_scenario(scenario: Scenario) -> list[str]:
    """Values that are each well-typed but impossible, alone or together."""
    guest, run = scenario.guest, scenario.run
    problems = []
    if run.duration <= 0:
        problems.append("run.duration: must be positive")
    if not 0 <= run.seed <= MAX_SEED:
        problems.append(f"run.seed: must be within 0..2^64-1, got {run.seed}")
    if run.sample_interval < MIN_INTERVAL:
        problems.append(
            f"run.sample_interval: must be at least {format_duration(MIN_INTERVAL)} "
            "(each sample is a log line per guest), got "
            f"{format_duration(run.sample_interval)}"
        )
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
    elif guest.memory > MAX_PAGES * PAGE_SIZE:
        problems.append(
            f"guest.memory: at most {format_size(MAX_PAGES * PAGE_SIZE)} (each guest's host "
            f"page-state bitmaps index its pages with 32 bits), got {format_size(guest.memory)}"
        )
    high_watermark = Watermarks.linux_default(guest.memory // PAGE_SIZE).high * PAGE_SIZE
    if guest.boot_memory + high_watermark >= guest.memory:
        problems.append(
            f"guest.boot_memory: {format_size(guest.boot_memory)} plus the zone's high "
            f"watermark ({format_size(high_watermark)}) does not fit in guest.memory "
            f"{format_size(guest.memory)}"
        )
    if guest.pcp_batch is not None and guest.pcp_batch < 1:
        problems.append(f"guest.pcp_batch: must be positive, got {guest.pcp_batch}")
    elif guest.pcp_high is not None and guest.pcp_high < pcp_sizes(scenario).batch:
        problems.append(
            f"guest.pcp_high ({guest.pcp_high}) must be at least pcp->batch "
            f"({pcp_sizes(scenario).batch})"
        )
    for key in ("hinting_vcpu", "interrupt_vcpu"):
        vcpu = getattr(guest, key)
        if vcpu is not None and not 0 <= vcpu < guest.vcpus:
            problems.append(
                f"guest.{key}: no vCPU {vcpu}; guest.vcpus = {guest.vcpus} (0..{guest.vcpus - 1})"
            )
    if guest.start_jitter is not None and not 0 <= guest.start_jitter <= run.duration:
        problems.append(
            f"guest.start_jitter: must be within 0..run.duration ({format_duration(run.duration)})"
        )
    if isinstance(scenario.workload, Phases):
        for index, phase in enumerate(scenario.workload.phases):
            if phase.tasks is not None and phase.tasks > guest.vcpus:
                problems.append(
                    f"workload.phases[{index}].tasks: {phase.tasks} tasks, but guest.vcpus = "
                    f"{guest.vcpus}"
                )
    if _uses_thps(scenario.workload) and guest.max_order <= THP_ORDER:
        problems.append(
            f"guest.max_order: the workload faults THPs (order {THP_ORDER}, 2MiB), which a buddy "
            f"allocator of orders 0..{guest.max_order - 1} cannot hold: max_order must be at "
            f"least {THP_ORDER + 1}, or the workload use 4KiB pages"
        )
    problems += check_hinting(scenario) + _check_host(scenario)
    workload = scenario.workload
    if isinstance(workload, Churn) and not 0.0 <= workload.thp_fraction <= 1.0:
        problems.append(f"workload.thp_fraction: must be within 0..1, got {workload.thp_fraction}")
    if isinstance(workload, TraceReplay):
        if not workload.path:
            problems.append(
                "workload.path: the trace workload needs the path of a perf script or "
                "trace-cmd report text file"
            )
        if workload.time_scale <= 0:
            problems.append(f"workload.time_scale: must be positive, got {workload.time_scale}")
    return problems


def _uses_thps(workload: WorkloadSection) -> bool:
    if isinstance(workload, Phases):
        return any(_uses_thps(phase.workload) for phase in workload.phases)
    if isinstance(workload, Churn):
        return workload.thp_fraction > 0
    return bool(getattr(workload, "thp", False))


def _check_host(scenario: Scenario) -> list[str]:
    guest, host = scenario.guest, scenario.host
    problems = []
    if not 1 <= host.guests <= 64:
        problems.append(f"host.guests: must be within 1..64, got {host.guests}")
    if host.memory and host.memory < guest.boot_memory * host.guests:
        problems.append(
            f"host.memory: {format_size(host.memory)} cannot even hold the guests' boot memory"
        )
    if host.reclaim_interval < MIN_INTERVAL:
        problems.append(
            f"host.reclaim_interval: must be at least {format_duration(MIN_INTERVAL)}, got "
            f"{format_duration(host.reclaim_interval)}"
        )
    if host.backing not in HOST_BACKINGS:
        problems.append(
            f"host.backing: unknown backing {host.backing!r}; known: {', '.join(HOST_BACKINGS)}"
        )
    factor = host.watermark_scale_factor
    if not 1 <= factor <= 3000:  # the sysctl's range (mm/page_alloc.c)
        problems.append(f"host.watermark_scale_factor: must be within 1..3000, got {factor}")
    if host.memory and host.swap_bandwidth is not None and host.swap_bandwidth <= 0:
        problems.append("host.swap_bandwidth: must be positive when host.memory sets a limit")
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
