"""Sweep throughput: 40 short runs serially vs on a 2-process pool, and the Dask path's overhead.

A sweep should use the machine: on 2 cores, two worker processes should finish 40 independent
runs in well under the serial time (target speed-up >= 1.6). The Dask path (a LocalCluster of
two worker processes, the same executor interface a remote cluster gives) is timed on the same
runs; its per-run overhead against the process pool is reported beside it. Each configuration
is measured side by side within each repeat, into fresh directories (a sweep resumes finished
runs, so a reused directory would measure nothing).

    python benchmarks/sweep_bench.py [--repeats N] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from _stats import interleave, spread
from rich.console import Console
from rich.table import Table

from pagehint.runtime.harness.sweep import (
    Executor,
    RunSpec,
    execute_all,
    expand,
    load_sweep,
    open_executor,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RUNS = 40
SWEEP = """
base = "{base}"
seed = 3
replicates = {replicates}
[set]
"run.duration" = "{duration}"
"run.baseline" = false
"guest.memory" = "1GiB"
"guest.vcpus" = 2
[grid]
"policy.name" = ["none", "scanner", "page_reporting", "bitmap"]
"workload.thp_fraction" = [0.0, 0.5]
"""


def sweep_specs(duration: str, workdir: Path) -> list[RunSpec]:
    """40 runs: 4 policies x 2 workloads x 5 replicates of a short churn scenario."""
    path = workdir / "bench-sweep.toml"
    path.write_text(
        SWEEP.format(base=CONFIGS / "churn.toml", replicates=RUNS // 8, duration=duration)
    )
    specs = expand(load_sweep(path))
    assert len(specs) == RUNS
    return specs


@contextmanager
def dask_executor() -> Iterator[Executor]:
    from distributed import LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        open_executor(2, cluster.scheduler_address) as executor,
    ):
        yield executor


def timed_sweep(specs: Sequence[RunSpec], workdir: Path, executor: Executor) -> float:
    out = Path(tempfile.mkdtemp(dir=workdir))
    started = time.perf_counter()
    rows = execute_all("guest", specs, out, executor)
    elapsed = time.perf_counter() - started
    shutil.rmtree(out)
    failed = [row for row in rows if row["status"] != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} benchmark runs failed, first: {failed[0]['error']}")
    return elapsed


def measure(repeats: int, duration: str) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        open_executor(1, None) as serial,
        open_executor(2, None) as pool,
        dask_executor() as dask,
    ):
        workdir = Path(tmp)
        specs = sweep_specs(duration, workdir)
        variants: dict[str, Callable[[], float]] = {
            name: functools.partial(timed_sweep, specs, workdir, executor)
            for name, executor in (("serial", serial), ("workers_2", pool), ("dask_2", dask))
        }
        samples = interleave(variants, repeats, warmup_rounds=1)
    serial_s, pool_s, dask_s = samples["serial"], samples["workers_2"], samples["dask_2"]
    return {
        "sweep_speedup": spread([s / p for s, p in zip(serial_s, pool_s, strict=True)]),
        "dask_overhead_s": spread([(d - p) / RUNS for d, p in zip(dask_s, pool_s, strict=True)]),
        "wall_s": {name: spread(values) for name, values in samples.items()},
    }


def render(report: dict[str, Any]) -> Table:
    table = Table(title=f"sweep of {RUNS} short runs ({report['params']['duration']} virtual)")
    for column in ("figure", "min", "median", "max", "note"):
        table.add_column(column, justify="left" if column in ("figure", "note") else "right")
    for name, values in report["wall_s"].items():
        table.add_row(f"wall s, {name}", *(f"{values[k]:.2f}" for k in ("min", "median", "max")))
    speedup = report["sweep_speedup"]
    met = "met" if speedup["median"] >= 1.6 else "MISSED"
    table.add_row(
        "speed-up, serial / 2 workers",
        *(f"{speedup[k]:.2f}" for k in ("min", "median", "max")),
        f"target >= 1.6: {met}",
    )
    overhead = report["dask_overhead_s"]
    table.add_row(
        "Dask overhead per run, s",
        *(f"{overhead[k]:+.3f}" for k in ("min", "median", "max")),
        "LocalCluster of 2 processes vs the 2-process pool",
    )
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 repeat of 5 ms runs")
    parser.add_argument("--json", action="store_true", help="one JSON object on the last line")
    args = parser.parse_args(argv)
    repeats, duration = (1, "5ms") if args.quick else (args.repeats, "100ms")
    started = time.perf_counter()
    report = measure(repeats, duration)
    report["params"] = {"runs": RUNS, "repeats": repeats, "duration": duration}
    report["wall_time_s"] = round(time.perf_counter() - started, 1)
    Console().print(render(report))
    if args.json:
        print(
            orjson.dumps(
                {
                    **report,
                    "stats": {k: report[k] for k in ("sweep_speedup", "dask_overhead_s")},
                    "sweep_speedup": report["sweep_speedup"]["median"],
                    "dask_overhead_s": report["dask_overhead_s"]["median"],
                }
            ).decode()
        )


if __name__ == "__main__":
    main()
