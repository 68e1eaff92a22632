"""Log analysis speed and memory: DuckDB over the JSON lines vs a plain Python ``json`` loop.

What is measured, on one generated log of 1,000,000 lines in pagehint's schema (a debug-level
hinting run: zone requests with their pfns, samples, worker wake/poll/report/sleep lines, host
discards, in proportions like those of a real run):

1. ``duckdb``: what ``pagehint analyze LOG --report lock_wait`` does: open the log (header and
   last-line checks, newline count, one validating DuckDB scan, the views), then the canned
   ``lock_wait`` report: exact zone-lock wait percentiles by requester class.
2. ``json``: a plain Python loop over the same file computing the same table (``json.loads``
   per line, lists of waits per class, sorted for the same ``quantile_disc`` percentiles). The
   two results are compared, so the speed-up is for the same answer.

Each repeat runs both, alternating which goes first; min/median/max over repeats. The speed-up
is the ratio of the medians (target: at least 5x). Peak memory of the DuckDB path is measured in
a fresh subprocess (``ru_maxrss``, target: at most 500 MiB).

Run: ``python benchmarks/analyze_bench.py [--lines N] [--repeats N] [--log PATH] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from pagehint.actors.analysis import open_run
from pagehint.runtime import LOG_SCHEMA_VERSION, VERSION

SEED = 20261126
TARGETS = {"speedup_vs_json": (5.0, "min"), "peak_rss_mib": (500.0, "max")}
VCPUS = 8
GUEST_PAGES = 1 << 21  # 8 GiB


def generate(path: Path, lines: int) -> None:
    """A log of ``lines`` lines: a debug-level run of 8 vCPUs faulting and a hinting worker."""
    rng = random.Random(SEED)
    t = 0
    written = 0
    token = 0
    with path.open("wb") as out:

        def emit(actor: str, level: str, event: str, **fields: Any) -> None:
            nonlocal written
            if written < lines:
                record = {"t": t, "actor": actor, "level": level, "event": event, **fields}
                out.write(orjson.dumps(record) + b"\n")
                written += 1

        emit(
            "runtime",
            "info",
            "header",
            schema=LOG_SCHEMA_VERSION,
            pagehint=VERSION,
            trio="0.35.0",
            python="3.11.7",
            seed=0,
            config_hash="0" * 16,
            wall_time="2026-01-01T00:00:00+00:00",
            model="guest",
        )
        while written < lines:
            t += rng.randrange(1_000, 50_000)
            draw = rng.random()
            if draw < 0.9775:  # zone requests: per-CPU refills and drains, THP faults and frees
                vcpu = f"vcpu{rng.randrange(VCPUS)}"
                thp = rng.random() < 0.5
                order, count = (9, 1) if thp else (0, 63)
                base = rng.randrange(GUEST_PAGES >> 9) << 9
                pfns = [base + (i << order) % 512 for i in range(count)]
                wait = 0 if rng.random() < 0.6 else int(rng.expovariate(1 / 8_000))
                queued = rng.randrange(VCPUS)
                if rng.random() < 0.55:
                    emit(
                        "zone",
                        "debug",
                        "zone_alloc",
                        requester=vcpu,
                        order=order,
                        wanted=count,
                        got=count,
                        pfns=pfns,
                        wait_ns=wait,
                        queued=queued,
                    )
                else:
                    emit(
                        "zone",
                        "debug",
                        "zone_free",
                        requester=vcpu,
                        order=order,
                        blocks=count,
                        pfns=pfns,
                        wait_ns=wait,
                        queued=queued,
                    )
            elif draw < 0.9975:
                free = rng.randrange(GUEST_PAGES)
                emit(
                    "monitor",
                    "info",
                    "sample",
                    rss_pages=rng.randrange(GUEST_PAGES),
                    free_pages=free,
                    isolated_pages=0,
                    reported_pages=free // 2,
                    wasted_pages=free // 3,
                    pcp_pages=rng.randrange(4096),
                    lent_pages=GUEST_PAGES - free,
                    total_pages=GUEST_PAGES,
                    lock_queue=0,
                )
            else:  # a hinting pass: wake, a few polls each reporting 32 blocks, discards, sleep
                emit("worker", "info", "worker_wake", in_flight=0)
                polls = rng.randrange(1, 5)
                for _ in range(polls):
                    blocks = [[rng.randrange(GUEST_PAGES >> 10) << 10, 10] for _ in range(32)]
                    emit("worker", "info", "worker_poll", blocks=32, pages=32 << 10, examined=32)
                    emit("worker", "info", "report", token=token, pages=32 << 10, blocks=blocks)
                    for pfn, order in blocks:
                        t += 80_000
                        emit("host", "debug", "discard", guest="guest", pfn=pfn, pages=1 << order)
                    emit(
                        "zone",
                        "debug",
                        "zone_alloc",
                        requester="worker",
                        order=0,
                        wanted=2,
                        got=2,
                        pfns=[1, 2],
                        wait_ns=rng.randrange(2_000),
                        queued=0,
                    )
                    emit("worker", "info", "report_done", token=token, acked=True)
                    token += 1
                emit("worker", "info", "worker_sleep", polls=polls, rearmed=False)


# -- the two ways to the same table ---------------------------------------------------------
Table_ = list[tuple[Any, ...]]


def with_duckdb(path: Path) -> Table_:
    with open_run(path) as db:
        return [tuple(row) for row in db.report("lock_wait").fetchall()]


def _requester_class(requester: str) -> str:
    name = requester.rpartition(".")[2]
    return name.rstrip("0123456789") or name


def _quantile_disc(ordered: Sequence[int], q: float) -> int:
    """DuckDB's quantile_disc, the nearest rank: the ceil(n * q)-th smallest value."""
    return ordered[max(0, math.ceil(len(ordered) * q) - 1)]


def with_json(path: Path) -> Table_:
    waits: dict[str, list[int]] = {}
    queued: dict[str, list[int]] = {}
    with path.open("rb") as file:
        for line in file:
            record = json.loads(line)
            if record["event"] in ("zone_alloc", "zone_free"):
                group = _requester_class(record["requester"])
                waits.setdefault(group, []).append(record["wait_ns"])
                queued.setdefault(group, []).append(record["queued"])
    waits["all"] = [wait for group in list(waits) for wait in waits[group]]
    queued["all"] = [depth for group in list(queued) if group != "all" for depth in queued[group]]
    table: Table_ = []
    for group in sorted(waits):
        ordered = sorted(waits[group])
        table.append(
            (
                path.parent.name if path.name == "log.jsonl" else path.stem,
                group,
                len(ordered),
                sum(ordered) / len(ordered),
                _quantile_disc(ordered, 0.5),
                _quantile_disc(ordered, 0.9),
                _quantile_disc(ordered, 0.99),
                ordered[-1],
                100 * sum(1 for wait in ordered if wait > 0) / len(ordered),
                sum(queued[group]) / len(queued[group]),
            )
        )
    return table


def _same(ours: Table_, theirs: Table_) -> bool:
    if len(ours) != len(theirs):
        return False
    for row, other in zip(ours, theirs, strict=True):
        for a, b in zip(row, other, strict=True):
            if isinstance(a, float) or isinstance(b, float):
                if not math.isclose(float(a), float(b), rel_tol=1e-9):
                    return False
            elif a != b:
                return False
    return True


def peak_rss_mib(path: Path) -> float:
    """Peak RSS of the DuckDB path, alone in a fresh interpreter."""
    child = subprocess.run(
        [sys.executable, __file__, "--child", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(child.stdout.strip().splitlines()[-1])


def _child(path: Path) -> None:
    with_duckdb(path)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux: KiB


def _spread(samples: Sequence[float]) -> dict[str, float]:
    return {
        "min": round(min(samples), 4),
        "median": round(statistics.median(samples), 4),
        "max": round(max(samples), 4),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines to generate")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--log", type=Path, help="use (or keep) the generated log here")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child)
        return
    with tempfile.TemporaryDirectory() as scratch:
        path: Path = args.log or Path(scratch) / "bench.jsonl"
        started = time.perf_counter()
        if not path.exists():
            generate(path, args.lines)
        generated_s = time.perf_counter() - started
        lines = sum(1 for _ in path.open("rb"))
        timings: dict[str, list[float]] = {"duckdb": [], "json": []}
        results: dict[str, Table_] = {}
        for repeat in range(args.repeats):
            order = ("duckdb", "json") if repeat % 2 == 0 else ("json", "duckdb")
            for name in order:
                started = time.perf_counter()
                results[name] = (with_duckdb if name == "duckdb" else with_json)(path)
                timings[name].append(time.perf_counter() - started)
        same = _same(results["duckdb"], results["json"])
        rss = peak_rss_mib(path)
        size_mib = path.stat().st_size / (1 << 20)
    speedup = statistics.median(timings["json"]) / statistics.median(timings["duckdb"])
    report: dict[str, Any] = {
        "lines": lines,
        "log_mib": round(size_mib, 1),
        "generate_s": round(generated_s, 2),
        "repeats": args.repeats,
        "duckdb_s": _spread(timings["duckdb"]),
        "json_s": _spread(timings["json"]),
        "same_result": same,
        "speedup_vs_json": round(speedup, 2),
        "peak_rss_mib": round(rss, 1),
    }
    report["targets_met"] = {
        key: (report[key] >= bound if kind == "min" else report[key] <= bound)
        for key, (bound, kind) in TARGETS.items()
    }
    _show(report)
    if not same:
        print("the DuckDB and json results differ", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    if not same:
        sys.exit(1)


def _show(report: dict[str, Any]) -> None:
    table = Table(
        title=f"lock_wait report over {report['lines']:,} lines ({report['log_mib']} MiB), "
        f"{report['repeats']} repeats",
        title_justify="left",
    )
    for column in ("path", "min s", "median s", "max s", "lines/s (median)"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for name, label in (("duckdb", "DuckDB (pagehint analyze)"), ("json", "Python json loop")):
        spread = report[f"{name}_s"]
        table.add_row(
            label,
            f"{spread['min']:.3f}",
            f"{spread['median']:.3f}",
            f"{spread['max']:.3f}",
            f"{report['lines'] / spread['median']:,.0f}",
        )
    console = Console()
    console.print(table)
    met = report["targets_met"]
    console.print(
        f"speed-up vs json: {report['speedup_vs_json']}x (target >= 5x: "
        f"{'met' if met['speedup_vs_json'] else 'MISSED'}); same result: {report['same_result']}"
    )
    console.print(
        f"peak RSS of the DuckDB path (fresh process): {report['peak_rss_mib']} MiB "
        f"(target <= 500 MiB: {'met' if met['peak_rss_mib'] else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
