"""Large guests: the simulator's peak memory, boot time and wall seconds per virtual second.

Two guest sizes (``--sizes``), each with two workloads, each booted and run for a short
virtual duration (default 100 ms; ``--duration``):

* ``1TiB``: 64 vCPUs, 16 GiB boot memory; peak RSS target at most 512 MiB;
* ``12TiB``: 448 vCPUs, 192 GiB boot memory, the largest cloud guests today; with a host
  memory limit (16 TiB) and MADV_FREE discards, so that every kind of per-page host state the
  model keeps is allocated; peak RSS target at most 1024 MiB.

Workloads:

* ``idle``: booted, then nothing (the ``idle`` workload);
* ``memhog``: every vCPU allocates and touches 8 GiB of THPs, frees it, pauses 50 ms, repeats
  (512 GiB in all at 1 TiB, 3.5 TiB at 12 TiB: no OOM).

Boot memory is what a real guest's kernel spends on its ``struct page`` array alone (64 bytes
per 4 KiB page). No hinting (policy "none"; ``--policy`` to change it): this measures the
simulator's own cost. Everything else is the scenario defaults, monitor included (a sample
every 10 ms, a slice of the allocator's invariant check every 10th sample), because that is
what a user running such a guest gets; the report shows what those checks cost, and what the
full check at the end of the run costs.

What is measured, per case:

* peak RSS of the simulator process (``getrusage(RUSAGE_SELF).ru_maxrss``), against its
  size's target. Each case runs in a fresh interpreter (this script re-run with a hidden ``--case``
  flag), so one case's peak cannot hide another's; the RSS after imports and after boot are
  reported too, to show what the model itself adds to the interpreter;
* wall seconds per virtual second of the run phase (after boot, until the duration is
  reached): how much slower than real time the model runs. It is a ratio so that runs of
  different durations compare; boot (the allocator and the host's page state) is reported
  separately in seconds, since it does not scale with the duration. Also reported: the same
  less the time spent in the monitor's invariant checks (each one timed), and CPU seconds
  per virtual second, which other load on the machine does not inflate.

Run: ``python benchmarks/scale_bench.py [--sizes 1TiB 12TiB] [--duration 100ms] [--repeats N]
[--quick] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import rich
import trio
from _stats import STATS, spread, target_met, target_note
from rich.console import Console
from rich.table import Table

from pagehint.actors.mm.buddy import CHECK_SLICE_BLOCKS, BuddyAllocator
from pagehint.actors.scenario import MODEL, build
from pagehint.actors.scenario.outcomes import summarise
from pagehint.protocol.units import format_duration, parse_duration
from pagehint.runtime import NS_PER_S, ActorSystem, run_simulation

SEED = 20240611
MEMHOG_SIZE = "8GiB"  # per vCPU: 512 GiB in all at 1 TiB, 3.5 TiB at 12 TiB
DEFAULT_DURATION = "100ms"
QUICK_DURATION = "20ms"
WORKLOADS: dict[str, dict[str, Any]] = {
    "idle": {"name": "idle"},
    "memhog": {"name": "memhog", "size": MEMHOG_SIZE, "thp": True},
}


@attrs.frozen
class Guest:
    """A guest size the benchmark runs, and the peak RSS it must stay within."""

    memory: str
    vcpus: int
    boot_memory: str  # 64 bytes of struct page per 4 KiB page: 1/64 of memory
    host: Mapping[str, Any]
    rss_target_mib: float


GUESTS = {
    "1TiB": Guest("1TiB", 64, "16GiB", {}, 512.0),
    # The largest cloud guests (12 TiB, 448 vCPUs), with every kind of per-page host state the
    # model keeps allocated: a host memory limit (accessed and swapped pages) and MADV_FREE
    # discards (lazily freed pages), besides backed, discarded and huge pages.
    "12TiB": Guest("12TiB", 448, "192GiB", {"memory": "16TiB", "discard": "free"}, 1024.0),
}
CASES = [f"{size}-{workload}" for size in GUESTS for workload in WORKLOADS]


def split_case(case: str) -> tuple[str, str]:
    """A case's guest size and workload: ``"1TiB-idle"`` is ``("1TiB", "idle")``."""
    size, _, workload = case.partition("-")
    return size, workload


TARGETS = {
    f"peak_rss_mib[{case}]": (GUESTS[split_case(case)[0]].rss_target_mib, "max") for case in CASES
}


def scenario_document(
    case: str, duration_ns: int, full_check_every: int, policy: str
) -> dict[str, Any]:
    size, workload = split_case(case)
    guest = GUESTS[size]
    return {
        "run": {"duration": f"{duration_ns}ns", "seed": SEED, "full_check_every": full_check_every},
        "guest": {"memory": guest.memory, "vcpus": guest.vcpus, "boot_memory": guest.boot_memory},
        "host": dict(guest.host),
        "workload": WORKLOADS[workload],
        "policy": {"name": policy},
    }


def _max_rss_mib() -> float:
    """Peak RSS of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- one case, in the child process ------------------------------------------------------------
@attrs.define
class CheckTimer:
    count: int = 0
    seconds: float = 0.0


def _time_checks(allocator: BuddyAllocator) -> CheckTimer:
    """Time every ``check_slice`` of this allocator (the monitor's periodic checks)."""
    timer = CheckTimer()
    check = allocator.check_slice

    def timed_check(blocks: int = CHECK_SLICE_BLOCKS) -> None:
        started = time.perf_counter()
        check(blocks)
        timer.count += 1
        timer.seconds += time.perf_counter() - started

    allocator.check_slice = timed_check  # type: ignore[method-assign]
    return timer


def run_case(case: str, duration_ns: int, full_check_every: int, policy: str) -> dict[str, Any]:
    """Boot and run one case in this process; its figures, RSS in MiB and times in s."""
    rss_imports = _max_rss_mib()
    document = scenario_document(case, duration_ns, full_check_every, policy)
    scenario = MODEL.load(document, "scale_bench")

    async def main(system: ActorSystem) -> dict[str, Any]:
        started = time.perf_counter()
        machine = build(system, scenario)
        guest = machine.guests[0]
        checks = _time_checks(guest.zone.allocator)
        booted, booted_cpu = time.perf_counter(), time.process_time()
        rss_boot = _max_rss_mib()
        await system.sleep_until_ns(duration_ns)
        ran, ran_cpu = time.perf_counter(), time.process_time()
        checks_in_run, checks_s = checks.count, checks.seconds
        # What MODEL.run does at the end: a last sample and a full invariant check.
        guest.monitor.sample()
        full_check_started = time.perf_counter()
        guest.zone.allocator.check_invariants()
        full_check_s = time.perf_counter() - full_check_started
        summary = summarise((policy, scenario.workload.name), machine, duration_ns)
        run_s = ran - booted
        virtual_s = duration_ns / NS_PER_S
        return {
            "case": case,
            "peak_rss_mib": _max_rss_mib(),
            "rss_after_imports_mib": rss_imports,
            "rss_after_boot_mib": rss_boot,
            "boot_s": booted - started,
            "run_s": run_s,
            "wall_s_per_virtual_s": run_s / virtual_s,
            "wall_s_per_virtual_s_without_checks": (run_s - checks_s) / virtual_s,
            "cpu_s_per_virtual_s": (ran_cpu - booted_cpu) / virtual_s,
            "check_ms": 1000 * checks_s / checks_in_run if checks_in_run else 0.0,
            "full_check_s": full_check_s,
            "checks_in_run": checks_in_run,
            "allocator_blocks": guest.zone.allocator.stored_blocks,
            "faults": summary["workload"]["faults"],
            "loops": summary["workload"]["loops"],
            "oom_kills": summary["workload"]["oom_kills"],
            "failed_allocations": summary["zone"]["failed_allocations"],
            "zone_requests": summary["zone"]["requests"],
            "lock_wait_mean_ns": summary["zone"]["lock_wait_ns"]["mean"],
            "guest_free_gib_end": summary["zone"]["free_bytes_end"] / (1 << 30),
            "host_rss_gib_end": summary["host"]["rss_bytes_end"] / (1 << 30),
        }

    return run_simulation(main, seed=SEED, log=None)


# -- the parent: one fresh process per case and repeat -----------------------------------------
def run_in_child(case: str, duration_ns: int, full_check_every: int, policy: str) -> dict[str, Any]:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--case",
        case,
        "--duration",
        f"{duration_ns}ns",
        "--full-check-every",
        str(full_check_every),
        "--policy",
        policy,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"case {case} failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - started
    return result


PER_CASE_FIGURES = (
    "peak_rss_mib",
    "rss_after_imports_mib",
    "rss_after_boot_mib",
    "wall_s_per_virtual_s",
    "wall_s_per_virtual_s_without_checks",
    "cpu_s_per_virtual_s",
    "boot_s",
    "run_s",
    "check_ms",
    "full_check_s",
    "process_wall_s",
)


def run(
    duration_ns: int, repeats: int, full_check_every: int, policy: str, cases: Sequence[str]
) -> dict[str, Any]:
    samples: dict[str, list[dict[str, Any]]] = {case: [] for case in cases}
    for repeat in range(repeats):
        order = list(cases) if repeat % 2 == 0 else list(reversed(cases))
        for case in order:
            samples[case].append(run_in_child(case, duration_ns, full_check_every, policy))
    by_case: dict[str, Any] = {}
    for case, results in samples.items():
        last = results[-1]
        by_case[case] = {
            **{figure: spread(r[figure] for r in results) for figure in PER_CASE_FIGURES},
            **{
                key: last[key]
                for key in last
                if key not in PER_CASE_FIGURES and key not in ("case", "process_wall_s")
            },
        }
    peaks = {case: r["peak_rss_mib"]["max"] for case, r in by_case.items()}
    checked = {f"peak_rss_mib[{case}]": peak for case, peak in peaks.items()}
    return {
        "peak_rss_mib_by_case": peaks,
        "wall_s_per_virtual_s": {
            case: r["wall_s_per_virtual_s"]["median"] for case, r in by_case.items()
        },
        "boot_s": {case: r["boot_s"]["median"] for case, r in by_case.items()},
        "targets": {
            key: {"max": TARGETS[key][0], "met": target_met(TARGETS, key, peak)}
            for key, peak in checked.items()
        },
        "by_case": by_case,
        "params": {
            "guests": {size: attrs.asdict(guest) for size, guest in GUESTS.items()},
            "memhog_size_per_vcpu": MEMHOG_SIZE,
            "memhog_thp": True,
            "duration_ns": duration_ns,
            "repeats": repeats,
            "full_check_every": full_check_every,
            "policy": policy,
            "seed": SEED,
        },
        "environment": {
            "python": platform.python_version(),
            "trio": trio.__version__,
            "cpus": os.cpu_count(),
        },
    }


# -- report ------------------------------------------------------------------------------------
ROWS = (
    ("peak_rss_mib", "peak RSS, MiB", ",.1f"),
    ("rss_after_imports_mib", "RSS after imports, MiB", ",.1f"),
    ("rss_after_boot_mib", "RSS after boot, MiB", ",.1f"),
    ("wall_s_per_virtual_s", "wall s / virtual s (run phase)", ",.2f"),
    (
        "wall_s_per_virtual_s_without_checks",
        "the same less the monitor's invariant checks",
        ",.2f",
    ),
    ("cpu_s_per_virtual_s", "CPU s / virtual s (run phase; robust to other load)", ",.2f"),
    ("boot_s", "boot, wall s", ".2f"),
    ("run_s", "run phase, wall s", ".2f"),
    ("check_ms", "one periodic invariant check (a slice; mean), wall ms", ".2f"),
    ("full_check_s", "the full invariant check at the end, wall s", ".2f"),
    ("process_wall_s", "whole process, wall s", ".2f"),
)


def render_table(report: Mapping[str, Any]) -> Table:
    params = report["params"]
    table = Table(
        title=(
            f"scale: {format_duration(params['duration_ns'])} virtual per case "
            f"(min / median / max over {params['repeats']} repeats, each a fresh process)"
        )
    )
    for column in ("case", "figure", "min", "median", "max", "unit / target"):
        table.add_column(column, justify="right" if column in STATS else "left")
    for case, result in report["by_case"].items():
        for figure, unit, fmt in ROWS:
            cells = [format(result[figure][stat], fmt) for stat in STATS]
            target = f"{figure}[{case}]"
            if target in TARGETS:
                note = f"{unit}; {target_note(TARGETS, target, result[figure]['max'])}"
            else:
                note = unit
            table.add_row(case, figure, *cells, note)
        facts = (
            f"loops {result['loops']:,}, faults {result['faults']:,}, OOM kills "
            f"{result['oom_kills']}, failed allocations {result['failed_allocations']}, "
            f"zone requests {result['zone_requests']:,}, allocator blocks "
            f"{result['allocator_blocks']:,}, checks in run {result['checks_in_run']}, "
            f"guest free {result['guest_free_gib_end']:,.1f} GiB, host RSS "
            f"{result['host_rss_gib_end']:,.1f} GiB (end)"
        )
        table.add_row(case, "[dim]end of run", "", "", "", f"[dim]{facts}")
        table.add_section()
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", help=f"virtual time per case (default {DEFAULT_DURATION})")
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per case")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION} per case")
    parser.add_argument(
        "--full-check-every",
        type=int,
        default=10,
        help="the monitor's invariant check every N samples (scenario default 10; 0: off)",
    )
    parser.add_argument(
        "--policy", default="none", help="hinting policy of the guest (default none)"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument(
        "--sizes",
        nargs="+",
        choices=list(GUESTS),
        default=list(GUESTS),
        help="guest sizes to run (default: all)",
    )
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    duration = args.duration or (QUICK_DURATION if args.quick else DEFAULT_DURATION)
    try:
        duration_ns = parse_duration(duration)
    except ValueError as error:
        parser.error(f"--duration: {error}")
    if duration_ns <= 0 or args.repeats < 1 or args.full_check_every < 0:
        parser.error("--duration and --repeats must be positive, --full-check-every >= 0")
    if args.case is not None:  # the child: one case, one JSON line
        print(json.dumps(run_case(args.case, duration_ns, args.full_check_every, args.policy)))
        return
    started = time.perf_counter()
    cases = [case for case in CASES if split_case(case)[0] in args.sizes]
    report = run(duration_ns, args.repeats, args.full_check_every, args.policy, cases)
    report["wall_s"] = round(time.perf_counter() - started, 2)
    Console(width=150).print(render_table(report))
    rich.print(f"wall time {report['wall_s']} s")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
