"""What a run gives back to the host and what it costs the guest: the summary of a run.

``summarise`` turns the built machine at the end of a run into ``summary.json``; ``ABOUT`` is
the documentation of its keys, written into the summary itself so a reader of any run directory
knows what each number means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.table import Table

from pagehint.protocol.units import PAGE_SIZE, format_duration, format_size
from pagehint.runtime import NS_PER_S, Histogram, TimeSeries

from ..cputime import KINDS
from ..workloads import PHASES_DONE

if TYPE_CHECKING:
    from ..host import Host
    from ..vcpu import VCpu
    from .building import Guest, Machine

RETURN_LEVELS = ("50", "90", "99")

ABOUT = {
    "virtual_s": "virtual time simulated, seconds",
    "policy": "the hinting design (none is the baseline)",
    "memory_returned_bytes": "guest memory the host discarded (freed from RSS) over the run",
    "time_to_return_s": (
        "seconds from the peak of guest memory free in the guest yet held by the host (resident, "
        "or swapped out) until it had fallen by 50/90/99% of that peak; null when not reached "
        "(or nothing to return). It falls when the host discards free memory or when the "
        "guest uses it again: a design's effect shows against the same run with policy none. "
        "Memory swapped out still counts as held (host.swapped_bytes)"
    ),
    "returnable_peak_bytes": (
        "peak of guest memory that was free in the guest yet held by the host (resident or swapped)"
    ),
    "throughput_rel_to_none": (
        "workload.faults_per_s_per_vcpu relative to the same scenario and seed with policy "
        "none (baseline); completion_rel_to_none: workload.completed_s relative to the "
        "baseline's, for work that ends"
    ),
    "false_ooms": (
        "OOM kills the workload's faults caused while isolated (being hinted) memory would have "
        "served the allocation; the hinting worker's own failed allocations are "
        "worker.failed_allocations, never false OOMs"
    ),
    "peak_isolated_bytes": "most guest memory isolated for hinting at once (summed over guests)",
    "lock_wait_ns": "zone-lock wait of every request, ns (p50, p99, max)",
    "lock_wait_ns_by_requester": "zone-lock wait by requester class (vcpu, worker), ns",
    "lock_by_requester": "zone-lock wait (ns), hold (ns) and queue depth by requester class",
    "worker": (
        "hinting worker: wakeups, polls, batches (reports), mean_batch_fill (how full reports "
        "were by the design's own limit: entries, or the scanner's 64 MiB), polls_per_wakeup, "
        "lost_hints (frees a design had no room to record)"
    ),
    "virtio": "kicks (VM exits), interrupts, reports submitted, device resets",
    "host": (
        "discards (ranges), refaults (touches of discarded pages), swap_ins, swapped_bytes, "
        "rss_bytes_end, rss_bytes_peak, first_touches, in_use_bytes_end (host memory the guests "
        "hold: RSS plus split-off huge-page parts the deferred-split shrinker has not freed, "
        "deferred_split_bytes), huge_faults (host huge pages faulted in), hugetlb_returned_bytes "
        "(hugetlbfs pages discards returned to the pool, not to the host's free memory), "
        "discards_skipped (reported ranges hugetlbfs could not discard, unaligned), swap_outs, "
        "direct_reclaims (faults that reclaimed host memory themselves), remaps (touches of "
        "pages MADV_FREEd but not reclaimed), tlb_flushes (discards that removed guest "
        "mappings), shootdowns (vCPUs in guest mode those flushes interrupted)"
    ),
    "workload": (
        "faults (pages touched), faults_per_s_per_vcpu (will-it-scale's figure: faults of "
        "mappings not later OOM-killed, per second each vCPU was running its workload, from its "
        "first operation to its last: busy_vcpu_s in all), lost_faults (those of killed "
        "mappings), completed_s (when the last vCPU's workload ended; null if one had not), "
        "loops, oom_kills, "
        "oom_victims (the vCPUs whose task the OOM killer took: their workload ended and they "
        "halted), thp_fallbacks (THP faults served with 4 KiB pages for want of a huge page, "
        "THP_FAULT_FALLBACK)"
    ),
    "cpu_time_ns": (
        "where the vCPUs' time went, ns, for the guest and per vCPU; the kinds of each vCPU sum "
        "to the time simulated: work (the workload's computation and munmap), fault (page "
        "faults with their zone-lock holds and the host's side, per-CPU list drains), lock_wait "
        "(spinning for the zone lock), hinting (the hinting worker's or an inline design's CPU "
        "work), shootdown (TLB flushes host discards forced on vCPUs in guest mode), interrupt "
        "(used-buffer interrupts), idle (halted)"
    ),
    "hinting_cpu_ns": "guest CPU time spent on hinting, ns (cpu_time_ns.guest.hinting)",
    "phases": (
        "a phased workload's phases in order: vcpus that ran each (its tasks), vcpu_s (their "
        "vCPU-seconds in it), faults, faults_per_s_per_vcpu (faults per vCPU-second), loops, "
        "cpu_time_ns, start_s and end_s (when its first vCPU started it and its last one "
        "ended it: a phase that ends before the run does completed then), "
        "throughput_rel_to_none (with a baseline run)"
    ),
    "zone": (
        "zone-lock detail: requests, lock_utilisation (the share of the run the lock was held: "
        "a hold running past the end counts up to it, so at most 1), hold and queue depth, "
        "failed allocations"
    ),
    "guests": "per-guest summaries when the host holds several guests",
    "warnings": (
        "what the run could not do as the scenario asked, or why some figures mean nothing "
        "(a run shorter than run.sample_interval or than the design's delay); absent when none"
    ),
    "invariant_violations": "0 in any completed run: a violation fails the run (exit 1)",
}


def _merged(histograms: Sequence[Histogram]) -> Histogram:
    merged = Histogram()
    for histogram in histograms:
        merged.merge(histogram)
    return merged


def _wait(histogram: Histogram) -> dict[str, int]:
    return {"p50": histogram.quantile(0.5), "p99": histogram.quantile(0.99), "max": histogram.max}


def time_to_return(held: Sequence[tuple[int, float]]) -> tuple[dict[str, float | None], int]:
    """Seconds from the peak of guest memory that is free yet held by the host (resident, or
    swapped out) until it had fallen by 50/90/99% of that peak: memory the host got back. A
    looping workload that takes memory back does not count it twice; swapping does not count
    as returning."""
    result: dict[str, float | None] = dict.fromkeys(RETURN_LEVELS)
    if not held:
        return result, 0
    peak_at, peak = max(held, key=lambda sample: (sample[1], -sample[0]))
    if peak <= 0:
        return result, 0
    for level in RETURN_LEVELS:
        for t_ns, value in held:
            if t_ns >= peak_at and value * 100 <= peak * (100 - int(level)):  # exact, in ints
                result[level] = round((t_ns - peak_at) / NS_PER_S, 6)
                break
    return result, int(peak)


def _summed_series(series: Sequence[TimeSeries]) -> list[tuple[int, float]]:
    """A quantity over time summed over guests (their monitors sample in step)."""
    totals: dict[int, float] = {}
    for one in series:
        for t_ns, value in one.samples:
            totals[t_ns] = totals.get(t_ns, 0) + value
    return sorted(totals.items())


def summarise_guests(
    names: tuple[str, str], guests: Sequence[Guest], host: Host, elapsed_ns: int
) -> dict[str, Any]:
    """The summary of ``guests`` (one, or all of a host's); ``names`` = (policy, workload)."""
    policy, workload = names
    seconds = elapsed_ns / NS_PER_S
    vcpus = [vcpu for guest in guests for vcpu in guest.vcpus]
    zones = [guest.zone for guest in guests]
    workers = [guest.worker for guest in guests if guest.worker is not None]
    faults = sum(vcpu.counters.faults for vcpu in vcpus)
    work_faults = faults - sum(vcpu.counters.lost_faults for vcpu in vcpus)
    spans = [
        (elapsed_ns if vcpu.work_end_ns is None else vcpu.work_end_ns) - vcpu.work_start_ns
        for vcpu in vcpus
        if vcpu.work_start_ns is not None
    ]
    busy_s = sum(spans) / NS_PER_S
    ends = [vcpu.work_end_ns for vcpu in vcpus]
    completed = None if None in ends else max(end for end in ends if end is not None) / NS_PER_S
    wait = _merged([zone.lock_wait_ns for zone in zones])
    groups = sorted({group for zone in zones for group in zone.by_requester})
    by_class = {
        group: {
            key: _merged(
                [
                    getattr(zone.by_requester[group], key)
                    for zone in zones
                    if group in zone.by_requester
                ]
            ).summary()
            for key in ("wait_ns", "hold_ns", "queue_depth")
        }
        for group in groups
    }
    returned, peak = time_to_return(_summed_series([g.monitor.returnable_pages for g in guests]))
    rss = _summed_series([guest.monitor.rss_pages for guest in guests])
    wakeups = sum(worker.counters.wakeups for worker in workers)
    polls = sum(worker.counters.polls for worker in workers)
    batches = sum(worker.counters.batches for worker in workers)
    backings = [guest.backing for guest in guests]
    hosted = [host.guests[guest.device.guest] for guest in guests]
    discards = sum(guest.discards for guest in hosted)
    skipped = sum(b.skipped_discards for b in backings)
    per_vcpu = {vcpu.name: vcpu.cpu.by_kind(elapsed_ns) for vcpu in vcpus}
    guest_time = {kind: sum(times[kind] for times in per_vcpu.values()) for kind in KINDS}
    summary = {
        "virtual_s": seconds,
        "policy": policy,
        "memory_returned_bytes": sum(b.discarded_pages for b in backings) * PAGE_SIZE,
        "time_to_return_s": returned,
        "returnable_peak_bytes": peak * PAGE_SIZE,
        "throughput_rel_to_none": None,
        "false_ooms": sum(vcpu.counters.false_ooms for vcpu in vcpus),
        "peak_isolated_bytes": sum(zone.peak_isolated_pages for zone in zones) * PAGE_SIZE,
        "lock_wait_ns": _wait(wait),
        "lock_wait_ns_by_requester": {group: stats["wait_ns"] for group, stats in by_class.items()},
        "lock_by_requester": by_class,
        "worker": {
            "wakeups": wakeups,
            "polls": polls,
            "batches": batches,
            "mean_batch_fill": round(
                sum(w.counters.fill_total for w in workers) / batches if batches else 0.0, 4
            ),
            "polls_per_wakeup": round(polls / wakeups, 3) if wakeups else 0.0,
            "pages_reported": sum(w.counters.pages for w in workers),
            "reports_dropped": sum(w.counters.dropped for w in workers),
            "queue_full": sum(w.counters.queue_full for w in workers),
            "budget_exhausted": sum(w.counters.budget_exhausted for w in workers),
            "lost_hints": sum(guest.policy.lost_hints for guest in guests),
            "failed_allocations": sum(w.counters.failed_allocations for w in workers),
        },
        "virtio": {
            "reports": sum(g.device.counters.reports for g in guests),
            "kicks": sum(g.device.counters.kicks for g in guests),
            "interrupts": sum(g.device.counters.interrupts for g in guests),
            "resets": sum(g.device.counters.resets for g in guests),
        },
        "host": {
            "discards": discards,
            "refaults": sum(b.refaults for b in backings),
            "first_touches": sum(b.first_touches for b in backings),
            "swap_ins": sum(b.swap_ins for b in backings),
            "swapped_bytes": sum(b.swapped_pages for b in backings) * PAGE_SIZE,
            "lazy_free_bytes": sum(b.lazy_pages for b in backings) * PAGE_SIZE,
            "rss_bytes_end": sum(b.rss_pages for b in backings) * PAGE_SIZE,
            "rss_bytes_peak": int(max((value for _, value in rss), default=0)) * PAGE_SIZE,
            "in_use_bytes_end": sum(b.in_use_pages for b in backings) * PAGE_SIZE,
            "deferred_split_bytes": sum(b.deferred_pages for b in backings) * PAGE_SIZE,
            "huge_faults": sum(b.huge_faults for b in backings),
            "hugetlb_returned_bytes": sum(b.pool_returned_pages for b in backings) * PAGE_SIZE,
            "discards_skipped": skipped,
            "swap_outs": sum(b.swap_outs for b in backings),
            "direct_reclaims": host.memory.direct_reclaims,
            "remaps": sum(vcpu.counters.host_remaps for vcpu in vcpus),
            "tlb_flushes": sum(guest.tlb_flushes for guest in hosted),
            "shootdowns": sum(guest.shootdowns for guest in hosted),
        },
        "workload": {
            "name": workload,
            "faults": faults,
            "faults_per_s_per_vcpu": round(work_faults / busy_s, 1) if busy_s else 0.0,
            "busy_vcpu_s": round(busy_s, 6),
            "lost_faults": faults - work_faults,
            "completed_s": None if completed is None else round(completed, 6),
            "loops": sum(vcpu.counters.loops for vcpu in vcpus),
            "oom_kills": sum(vcpu.counters.ooms for vcpu in vcpus),
            "thp_fallbacks": sum(vcpu.counters.thp_fallbacks for vcpu in vcpus),
            "oom_victims": [vcpu.name for vcpu in vcpus if vcpu.oom_killed],
        },
        "zone": {
            "requests": wait.count,
            "lock_utilisation": round(
                sum(zone.hold_ns_until(elapsed_ns) for zone in zones) / (elapsed_ns * len(zones)),
                4,
            ),
            "lock_wait_ns": wait.summary(),
            "lock_hold_ns": _merged([zone.lock_hold_ns for zone in zones]).summary(),
            "queue_depth": _merged([zone.queue_depth for zone in zones]).summary(),
            "failed_allocations": sum(zone.failed_allocations for zone in zones),
            "free_bytes_end": sum(zone.allocator.free_pages for zone in zones) * PAGE_SIZE,
        },
        "cpu_time_ns": {"guest": guest_time, "vcpus": per_vcpu},
        "hinting_cpu_ns": guest_time["hinting"],
        "invariant_violations": 0,
    }
    if skipped:
        nothing = "; nothing was discarded" if not discards else ""
        summary["warnings"] = [
            f"hugetlbfs backing: QEMU skipped {skipped:,} reported range(s) not aligned to the "
            f"host's huge page (virtio_balloon_handle_report){nothing}"
        ]
    if any(vcpu.phases for vcpu in vcpus):
        summary["phases"] = phase_figures(vcpus, elapsed_ns)
    return summary


def phase_figures(vcpus: Sequence[VCpu], elapsed_ns: int) -> list[dict[str, Any]]:
    """Each phase's figures over the vCPUs that ran its workload (not those that halted
    through it, having no task): the span from its mark to the next (or the run's end)."""
    phases: dict[int, dict[str, Any]] = {}
    for vcpu in vcpus:
        marks = vcpu.phases
        if not marks:
            continue  # not started yet (a staggered guest)
        now = (elapsed_ns, vcpu.counters.faults, vcpu.counters.loops)
        ends = [(m.start_ns, m.faults, m.loops, m.cpu) for m in marks[1:]]
        ends.append((*now, tuple(vcpu.cpu.settled(elapsed_ns))))
        for mark, (end_ns, faults, loops, cpu) in zip(marks, ends, strict=True):
            if mark.name == PHASES_DONE or not mark.task:
                continue
            phase = phases.setdefault(
                mark.index,
                {
                    "name": mark.name,
                    "vcpus": 0,
                    "vcpu_s": 0.0,
                    "faults": 0,
                    "loops": 0,
                    "start_s": mark.start_ns / NS_PER_S,
                    "end_s": 0.0,
                    "cpu_time_ns": dict.fromkeys(KINDS, 0),
                },
            )
            phase["vcpus"] += 1
            phase["vcpu_s"] += (end_ns - mark.start_ns) / NS_PER_S
            phase["start_s"] = min(phase["start_s"], mark.start_ns / NS_PER_S)
            phase["end_s"] = max(phase["end_s"], end_ns / NS_PER_S)
            phase["faults"] += faults - mark.faults
            phase["loops"] += loops - mark.loops
            for kind, before, after in zip(KINDS, mark.cpu, cpu, strict=True):
                phase["cpu_time_ns"][kind] += after - before
    figures = []
    for index in sorted(phases):
        phase = phases[index]
        seconds = phase["vcpu_s"]
        phase["faults_per_s_per_vcpu"] = round(phase["faults"] / seconds, 1) if seconds else 0.0
        phase["vcpu_s"] = round(seconds, 6)
        figures.append({"index": index, **phase})
    return figures


def summarise(names: tuple[str, str], machine: Machine, elapsed_ns: int) -> dict[str, Any]:
    summary = summarise_guests(names, machine.guests, machine.host, elapsed_ns)
    if len(machine.guests) > 1:
        summary["guests"] = {
            guest.name: summarise_guests(names, [guest], machine.host, elapsed_ns)
            for guest in machine.guests
        }
    summary["about"] = ABOUT
    return summary


def summary_table(summary: Mapping[str, Any]) -> Table:
    """The outcome table ``pagehint run`` prints."""
    workload, zone, host, worker = (
        summary["workload"],
        summary["zone"],
        summary["host"],
        summary["worker"],
    )
    span = format_duration(round(summary["virtual_s"] * NS_PER_S))
    title = f"pagehint: {workload['name']} with {summary['policy']}, {span}"
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    relative = summary["throughput_rel_to_none"]
    table.add_row("faults per second per vCPU", f"{workload['faults_per_s_per_vcpu']:,.0f}")
    if relative is not None:
        table.add_row("throughput relative to none", f"{relative:.3f}")
    table.add_row("memory returned to the host", format_size(summary["memory_returned_bytes"]))
    returned = summary["time_to_return_s"]
    table.add_row(
        "time to return 50 / 90 / 99%",
        " / ".join("-" if returned[k] is None else f"{returned[k]:.3g}s" for k in RETURN_LEVELS),
    )
    wait = summary["lock_wait_ns"]
    table.add_row(
        "zone lock wait p50 / p99 / max",
        " / ".join(format_duration(wait[key]) for key in ("p50", "p99", "max")),
    )
    for group, stats in summary["lock_wait_ns_by_requester"].items():
        table.add_row(
            f"  {group} wait p99 (requests)",
            f"{format_duration(stats['p99'])} ({stats['count']:,})",
        )
    table.add_row("zone lock utilisation", f"{zone['lock_utilisation']:.1%}")
    table.add_row("peak isolated", format_size(summary["peak_isolated_bytes"]))
    table.add_row("false OOMs / OOM kills", f"{summary['false_ooms']} / {workload['oom_kills']}")
    table.add_row(
        "worker wake-ups / polls / reports",
        f"{worker['wakeups']:,} / {worker['polls']:,} / {worker['batches']:,}",
    )
    table.add_row("mean batch fill", f"{worker['mean_batch_fill']:.1%}")
    virtio = summary["virtio"]
    table.add_row("kicks / interrupts", f"{virtio['kicks']:,} / {virtio['interrupts']:,}")
    table.add_row("host discards / refaults", f"{host['discards']:,} / {host['refaults']:,}")
    table.add_row(
        "host RSS end (peak)",
        f"{format_size(host['rss_bytes_end'])} ({format_size(host['rss_bytes_peak'])})",
    )
    time = summary["cpu_time_ns"]["guest"]
    total = sum(time.values()) or 1
    table.add_row(
        "vCPU time: hinting / shootdowns / interrupts",
        " / ".join(
            f"{format_duration(time[kind])} ({time[kind] / total:.2%})"
            for kind in ("hinting", "shootdown", "interrupt")
        ),
    )
    for phase in summary.get("phases", ()):
        table.add_row(
            f"phase {phase['index']} ({phase['name']}): faults/s/vCPU",
            f"{phase['faults_per_s_per_vcpu']:,.0f} over {phase['vcpu_s']:.3g} vCPU-s",
        )
    for name, guest in summary.get("guests", {}).items():
        done = [p for p in guest.get("phases", ()) if p["vcpus"]]
        took = f"{done[-1]['end_s'] - done[0]['start_s']:.3g}s, " if done else ""
        gh = guest["host"]
        table.add_row(
            f"  {name}: phases took, swap-outs / swap-ins",
            f"{took}{gh['swap_outs']:,} / {gh['swap_ins']:,}",
        )
    for warning in summary.get("warnings", ()):
        table.add_row("[yellow]warning[/yellow]", warning)
    if host["swap_ins"] or host["swapped_bytes"]:
        table.add_row(
            "host swap-outs / swap-ins / swapped",
            f"{host['swap_outs']:,} / {host['swap_ins']:,} / {format_size(host['swapped_bytes'])}",
        )
    return table


# The headline metrics of a run, flat and in display order: (name, path in the summary, unit).
HEADLINE = (
    ("faults/s/vCPU", ("workload", "faults_per_s_per_vcpu"), ""),
    ("throughput vs none", ("throughput_rel_to_none",), "ratio"),
    ("last phase faults/s/vCPU", ("phases", -1, "faults_per_s_per_vcpu"), ""),
    ("last phase vs none", ("phases", -1, "throughput_rel_to_none"), "ratio"),
    ("returned", ("memory_returned_bytes",), "bytes"),
    ("return 50%", ("time_to_return_s", "50"), "s"),
    ("return 90%", ("time_to_return_s", "90"), "s"),
    ("return 99%", ("time_to_return_s", "99"), "s"),
    ("peak isolated", ("peak_isolated_bytes",), "bytes"),
    ("false OOMs", ("false_ooms",), ""),
    ("OOM kills", ("workload", "oom_kills"), ""),
    ("lock wait p50", ("lock_wait_ns", "p50"), "ns"),
    ("lock wait p99", ("lock_wait_ns", "p99"), "ns"),
    ("lock wait max", ("lock_wait_ns", "max"), "ns"),
    ("lock utilisation", ("zone", "lock_utilisation"), "ratio"),
    ("worker wake-ups", ("worker", "wakeups"), ""),
    ("polls/wake-up", ("worker", "polls_per_wakeup"), ""),
    ("reports", ("worker", "batches"), ""),
    ("batch fill", ("worker", "mean_batch_fill"), "ratio"),
    ("hinting CPU", ("hinting_cpu_ns",), "ns"),
    ("shootdowns", ("host", "shootdowns"), ""),
    ("kicks", ("virtio", "kicks"), ""),
    ("interrupts", ("virtio", "interrupts"), ""),
    ("discards", ("host", "discards"), ""),
    ("refaults", ("host", "refaults"), ""),
    ("swap-ins", ("host", "swap_ins"), ""),
    ("RSS end", ("host", "rss_bytes_end"), "bytes"),
    ("RSS peak", ("host", "rss_bytes_peak"), "bytes"),
)


def headline(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The headline metrics of ``summary`` by name (None where a run has no such value)."""
    values: dict[str, Any] = {}
    for name, path, _ in HEADLINE:
        value: Any = summary
        for key in path:
            if isinstance(key, int):  # an index into a list (the last phase: -1)
                value = value[key] if isinstance(value, list) and value else None
            else:
                value = value.get(key) if isinstance(value, Mapping) else None
        values[name] = value
    return values


def format_metric(name: str, value: Any) -> str:
    """A headline value for a table cell, in its unit."""
    unit = next(unit for metric, _, unit in HEADLINE if metric == name)
    if value is None:
        return "-"
    if unit == "bytes":
        return format_size(int(value))
    if unit == "ns":
        return format_duration(value)
    if unit == "s":
        return f"{value:.3g}s"
    if unit == "ratio":
        return f"{value:.3f}"
    return f"{value:,.0f}" if isinstance(value, int | float) else str(value)
