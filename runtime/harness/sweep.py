"""Many runs: a sweep of factors over a base scenario, on a process pool or a Dask cluster.

A sweep file names a base scenario, common overrides, factors (a ``grid`` is crossed, a ``zip``
is walked in step) and replicates::

    base = "default.toml"        # relative to this file
    seed = 0                     # the sweep's seed
    replicates = 3
    [set]                        # for every run
    "run.duration" = "1s"
    [grid]
    "guest.vcpus" = [1, 4, 16]
    "policy.name" = ["none", "page_reporting"]

Each run's seed is derived from the sweep seed, the run's parameters and its replicate number,
so results do not depend on which worker ran what or in which order. Factors listed in
``paired`` (say ``["policy.name"]``) are left out of that derivation: runs that differ only in
them share their seeds, so designs are compared on the same workload (common random numbers).
Every run writes its own run directory under ``runs/``; ``index.jsonl`` has one row per run
(parameters, seed, status, error, key metrics). A run that fails is recorded and the others go
on; a sweep that is interrupted resumes without redoing runs whose ``summary.json`` exists for
the same config.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import itertools
import os
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import attrs
import orjson
from rich.markup import escape
from rich.table import Table

from ..determinism import derive_seed
from .config import (
    ConfigError,
    apply_values,
    config_hash,
    flatten,
    load_toml,
    notices_shown_as,
    suggest,
    to_toml,
)
from .dask import WORKER_TIMEOUT_S, connect_dask
from .model import Model, check_fits, execute, load_config, load_model
from .rundirs import run_files, store_run_files, write_atomically

SWEEP_KEYS = ("base", "seed", "replicates", "paired", "set", "grid", "zip")


@attrs.frozen
class RunSpec:
    """One run of a sweep or comparison: its parameters and the full scenario document."""

    run_id: str
    label: str
    params: Mapping[str, Any]
    replicate: int
    seed: int
    document: Mapping[str, Any]
    source: str  # the scenario file: errors name it, relative paths resolve against it
    origins: Mapping[str, str] = attrs.field(factory=dict)  # keys set elsewhere: errors name it


@attrs.frozen
class Sweep:
    source: str  # the sweep file
    base: Path
    seed: int
    replicates: int
    common: Mapping[str, Any]
    grid: Mapping[str, Sequence[Any]]
    zipped: Mapping[str, Sequence[Any]]
    paired: tuple[str, ...] = ()

    @property
    def factors(self) -> list[str]:
        return [*self.grid, *self.zipped]


def load_sweep(path: Path) -> Sweep:
    document = load_toml(path)
    source = str(path)
    problems = []
    for key in document:
        if key not in SWEEP_KEYS:
            problems.append(f"{key}: unknown key{suggest(key, SWEEP_KEYS)}")
    if "base" not in document or not isinstance(document["base"], str):
        problems.append("base: required: the path of the base scenario, relative to this file")
    seed, replicates = document.get("seed", 0), document.get("replicates", 1)
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"seed: expected an integer, got {seed!r}")
    if not isinstance(replicates, int) or isinstance(replicates, bool) or replicates < 1:
        problems.append(f"replicates: expected a positive integer, got {replicates!r}")
    grid = flatten(document.get("grid", {}))
    zipped = flatten(document.get("zip", {}))
    for table, values in (("grid", grid), ("zip", zipped)):
        for key, options in values.items():
            if not isinstance(options, list) or not options:
                problems.append(f"{table}.{key}: expected a non-empty list of values")
    lengths = {len(v) for v in zipped.values() if isinstance(v, list)}
    if len(lengths) > 1:
        problems.append(f"zip: every list must have the same length, got lengths {sorted(lengths)}")
    if set(grid) & set(zipped):
        problems.append(f"{sorted(set(grid) & set(zipped))}: a key is in both grid and zip")
    paired = document.get("paired", [])
    if not isinstance(paired, list) or any(key not in {*grid, *zipped} for key in paired):
        problems.append(f"paired: expected a list of factors of grid or zip, got {paired!r}")
    if problems:
        raise ConfigError(source, problems)
    return Sweep(
        source=source,
        base=path.parent / document["base"],
        seed=seed,
        replicates=replicates,
        common=flatten(document.get("set", {})),
        grid=grid,
        zipped=zipped,
        paired=tuple(paired),
    )


def _canonical(params: Mapping[str, Any]) -> str:
    return orjson.dumps(dict(sorted(params.items()))).decode()


def expand(
    sweep: Sweep,
    overrides: Mapping[str, Any] | None = None,
    origins: Mapping[str, str] | None = None,
) -> list[RunSpec]:
    """Every run of the sweep, in a stable order, each with its derived seed. ``origins``:
    where each of ``overrides`` was given (``--set KEY=VALUE``), for errors."""
    base = load_toml(sweep.base)
    common = {**sweep.common, **(overrides or {})}
    common_origins = {key: f"{sweep.source}: set.{key}" for key in sweep.common} | dict(
        origins or {}
    )
    grid_keys = list(sweep.grid)
    grid_points = itertools.product(*sweep.grid.values()) if grid_keys else [()]
    zip_points = list(zip(*sweep.zipped.values(), strict=True)) if sweep.zipped else [()]
    specs = []
    for grid_values in grid_points:
        for zip_values in zip_points:
            params = {**dict(zip(grid_keys, grid_values, strict=True))}
            params.update(zip(sweep.zipped, zip_values, strict=True))
            for replicate in range(sweep.replicates):
                seeded_by = {k: v for k, v in params.items() if k not in sweep.paired}
                seed = derive_seed(sweep.seed, _canonical(seeded_by), replicate)
                seed %= 2**31  # a readable seed; still a function of the run alone
                document = apply_values(base, {**common, **params, "run.seed": seed}, "sweep")
                digest = config_hash(_canonical({**params, "replicate": replicate}))[:10]
                label = ",".join(f"{key.rpartition('.')[2]}={params[key]}" for key in params)
                factors = {
                    key: f"{sweep.source}: {'grid' if key in sweep.grid else 'zip'}.{key} = "
                    f"{value!r}"
                    for key, value in params.items()
                }
                specs.append(
                    RunSpec(
                        f"r{replicate}-{digest}",
                        label or "base",
                        params,
                        replicate,
                        seed,
                        document,
                        str(sweep.base),
                        common_origins | factors,
                    )
                )
    return specs


RUNS = "runs"  # a sweep's or comparison's run directories, one per spec, under this folder


def _row(spec: RunSpec, **outcome: Any) -> dict[str, Any]:
    """A row of the index: who the run was, then how it went. ``dir`` is relative to the
    sweep directory, so that a sweep directory can be moved and its index still holds."""
    return {
        "run_id": spec.run_id,
        "label": spec.label,
        "params": dict(spec.params),
        "replicate": spec.replicate,
        "seed": spec.seed,
        "dir": f"{RUNS}/{spec.run_id}",
        **outcome,
    }


def _failed(spec: RunSpec, error: BaseException | str) -> dict[str, Any]:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return _row(spec, status="failed", error=text)


def run_spec(model_name: str, spec: RunSpec, run_dir: str | None) -> dict[str, Any]:
    """Run one spec in whatever process the executor chose; never raises for a failed run.

    ``run_dir`` None: the run is written to a scratch directory and its files come back in
    the row (``files``) for the client to write, with its log's Parquet copy: a Dask worker
    shares no filesystem with it.
    """
    writing_into: AbstractContextManager[str] = (
        tempfile.TemporaryDirectory(prefix="pagehint-run-")
        if run_dir is None
        else nullcontext(run_dir)
    )
    with writing_into as directory:
        where = Path(directory)
        try:
            model = load_model(model_name)
            with notices_shown_as(None):  # the client showed them when it validated the sweep
                config = load_config(model, dict(spec.document), spec.source, spec.origins)
            check_fits(model, config)
            code, result = execute(model, config, where, log_copy=run_dir is not None)
        except Exception as error:  # a failed run is a row, not the end of the sweep
            row = _failed(spec, error)
        else:
            if code != 0:
                row = _failed(spec, str(result.get("error", "failed")))
            else:
                row = _row(spec, status="ok", error=None, metrics=model.headline(result))
        if run_dir is None:
            row["files"] = run_files(where)
        return row


def _finished_row(model_name: str, spec: RunSpec, run_dir: Path) -> dict[str, Any] | None:
    """The row of a run already done with this very config (for resuming), else None."""
    summary_path, config_path = run_dir / "summary.json", run_dir / "config.toml"
    if not summary_path.exists() or not config_path.exists():
        return None
    model = load_model(model_name)
    with notices_shown_as(None):  # shown when the sweep was validated
        resolved = to_toml(model.unstructure(model.load(dict(spec.document), spec.source)))
    if config_hash(config_path.read_text()) != config_hash(resolved):
        return None
    summary = orjson.loads(summary_path.read_bytes())
    return _row(spec, status="ok", error=None, metrics=model.headline(summary), resumed=True)


def _cut_short_row(model_name: str, spec: RunSpec, run_dir: Path) -> dict[str, Any] | None:
    """After an interrupt, the row of a run that was in flight: what its directory shows."""
    if not run_dir.exists():
        return None
    finished = _finished_row(model_name, spec, run_dir)
    if finished is not None:
        return {**finished, "resumed": False}
    if (run_dir / "error.json").exists():
        error = orjson.loads((run_dir / "error.json").read_bytes()).get("error", "failed")
        return _failed(spec, str(error))
    return _row(spec, status="interrupted", error="the sweep was interrupted during this run")


def validate(model_name: str, specs: Iterable[RunSpec]) -> None:
    """Check every run's config before any runs: bad input is reported at once (exit 2)."""
    model = load_model(model_name)
    for spec in specs:
        try:
            load_config(model, dict(spec.document), spec.source, spec.origins)
        except ConfigError as error:
            replicate = f", replicate {spec.replicate}" if spec.params else ""
            raise error.within(f"run {spec.label}{replicate}") from None


class WorkerPool(concurrent.futures.ProcessPoolExecutor):
    """A process pool whose workers end with the command.

    Each worker ignores SIGINT (a Ctrl-C reaches the whole process group; the command, not
    each worker, decides what an interrupt does) and asks the kernel for SIGTERM when its
    parent dies (``prctl(PR_SET_PDEATHSIG)``, Linux), so that a command killed outright leaves
    no orphan running. ``terminate`` ends them at once (Python 3.14's ``terminate_workers``).
    """

    def __init__(self, workers: int) -> None:
        super().__init__(max_workers=workers, initializer=_worker_started)

    def terminate(self) -> None:
        processes = list((self._processes or {}).values())
        self.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()


def _worker_started() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: a killed command may leave workers behind
        pass
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1  # include/uapi/linux/prctl.h


@attrs.frozen
class Executor:
    """Where runs go: a local pool (writing run directories itself) or a Dask cluster (whose
    workers hand each run's files back to write here)."""

    submit: Callable[..., concurrent.futures.Future[dict[str, Any]]]
    ships_files: bool
    stop: Callable[[], None]


@contextmanager
def open_executor(
    workers: int, scheduler: str | None, worker_timeout_s: float = WORKER_TIMEOUT_S
) -> Iterator[Executor]:
    """A process pool of ``workers``, or the executor of a Dask cluster at ``scheduler``."""
    if scheduler is None:
        pool = WorkerPool(workers)
        try:
            yield Executor(pool.submit, ships_files=False, stop=pool.terminate)
        finally:
            pool.shutdown(cancel_futures=True)
        return
    client = connect_dask(scheduler, worker_timeout_s)
    try:
        dask = client.get_executor(pure=False)
        yield Executor(dask.submit, ships_files=True, stop=lambda: None)
    finally:
        client.close()


def execute_all(
    model_name: str,
    specs: Sequence[RunSpec],
    out_dir: Path,
    executor: Executor,
    on_done: Callable[[dict[str, Any]], None] = lambda row: None,
) -> list[dict[str, Any]]:
    """Run every spec not already finished; rows come back in spec order.

    Interrupted (Ctrl-C, SIGTERM), the workers are stopped first, then the index is written
    from what each run directory shows, so that index and directories agree.
    """
    rows: dict[str, dict[str, Any]] = {}
    pending = {}
    for spec in specs:
        run_dir = out_dir / RUNS / spec.run_id
        finished = _finished_row(model_name, spec, run_dir)
        if finished is not None:
            rows[spec.run_id] = finished
            on_done(finished)
            continue
        target = None if executor.ships_files else str(run_dir.resolve())
        pending[executor.submit(run_spec, model_name, spec, target)] = spec
    try:
        for future in concurrent.futures.as_completed(pending):
            spec = pending[future]
            try:
                row = future.result()
            except Exception as error:  # the worker process itself died
                row = _failed(spec, error)
            if "files" in row:
                store_run_files(out_dir / RUNS / spec.run_id, row.pop("files"))
            rows[spec.run_id] = row
            on_done(row)
    except BaseException:
        executor.stop()
        for spec in specs:
            if spec.run_id not in rows:
                found = _cut_short_row(model_name, spec, out_dir / RUNS / spec.run_id)
                if found is not None:
                    rows[spec.run_id] = found
        raise
    finally:
        for future in pending:
            future.cancel()
        _write_index(out_dir, [rows[spec.run_id] for spec in specs if spec.run_id in rows])
    return [rows[spec.run_id] for spec in specs]


def _write_index(out_dir: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(out_dir / "index.jsonl", b"".join(orjson.dumps(row) + b"\n" for row in rows))


def comparison_spec(
    label: str, document: Mapping[str, Any], source: str, origins: Mapping[str, str]
) -> RunSpec:
    """A run of ``pagehint compare``: named by its label, seeded by its own config (a seed
    that is not a number is reported when the spec is validated)."""
    digest = config_hash(_canonical({"label": label}))[:10]
    seed = document.get("run", {}).get("seed", 0)
    seed = seed if isinstance(seed, int) else 0
    return RunSpec(f"{_slug(label)}-{digest}", label, {}, 0, seed, document, source, origins)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:40] or "run"


def _relative(value: Any, first: Any) -> str:
    if not isinstance(value, int | float) or not isinstance(first, int | float) or not first:
        return ""
    change = (value - first) / abs(first)
    if abs(change) < 0.00005:
        return ""
    return f" ({change:+.2%})" if abs(change) < 0.001 else f" ({change:+.1%})"


def with_baseline_filled(
    model: Model, rows: Sequence[Mapping[str, Any]], paired: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """``rows`` with the metrics a run without its own baseline lacks filled from the row it
    is paired with that is a baseline (the model says which, and what to fill): same
    parameters but for the ``paired`` factors, same replicate (the first such row). In a
    compare, whose rows have no parameters, that is the first baseline of all; in a sweep
    without ``paired`` factors, none is (its runs of other designs have other seeds)."""
    fill = getattr(model, "fill_from_baseline", None)
    is_baseline = getattr(model, "is_baseline", None)
    filled = [dict(row) for row in rows]
    if fill is None or is_baseline is None:
        return filled

    def key(row: Mapping[str, Any]) -> str:
        params = {k: v for k, v in row.get("params", {}).items() if k not in paired}
        return _canonical({**params, "replicate": row.get("replicate")})

    baselines: dict[str, Mapping[str, Any]] = {}
    for row in filled:
        if row.get("status") == "ok" and is_baseline(row["metrics"]):
            baselines.setdefault(key(row), row["metrics"])
    for row in filled:
        base = baselines.get(key(row))
        if row.get("status") == "ok" and base is not None and row["metrics"] is not base:
            row["metrics"] = fill(dict(row["metrics"]), base)
    return filled


def comparison_table(model: Model, rows: Sequence[Mapping[str, Any]]) -> Table:
    """Metrics down, runs across, each cell with its difference from the first run."""
    table = Table(title="pagehint compare (same seed; differences relative to the first)")
    table.add_column("metric")
    filled = with_baseline_filled(model, rows)
    for row in filled:
        table.add_column(escape(row["label"]), justify="right")
    ok = [row.get("metrics") or {} for row in filled]
    names = next((list(metrics) for metrics in ok if metrics), [])
    table.add_row("status", *(row["status"] for row in rows))
    for name in names:
        first = ok[0].get(name)
        cells = [
            model.format_metric(name, metrics.get(name)) + _relative(metrics.get(name), first)
            if metrics
            else "-"
            for metrics in ok
        ]
        table.add_row(name, *cells)
    return table


def sweep_table(model: Model, sweep: Sweep, rows: Sequence[Mapping[str, Any]]) -> Table:
    """One row per combination of factors (mean over replicates), with the metrics that vary
    and most rows have."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in with_baseline_filled(model, rows, sweep.paired):
        groups.setdefault(_canonical(row["params"]), []).append(row)
    means: list[tuple[Mapping[str, Any], dict[str, Any], int]] = []
    for members in groups.values():
        ok = [row["metrics"] for row in members if row["status"] == "ok"]
        names = list(ok[0]) if ok else []
        mean = {name: _mean([metrics[name] for metrics in ok]) for name in names}
        means.append((members[0]["params"], mean, len(ok)))
    names = next((list(mean) for _, mean, _ in means if mean), [])
    # The first six metrics that vary between rows and that most rows have (a metric that is
    # "-" in most rows, such as a time to return nothing was returned by, says little).
    varying = [
        name
        for name in names
        if len({repr(mean.get(name)) for _, mean, _ in means}) > 1
        and 2 * sum(mean.get(name) is not None for _, mean, _ in means) > len(means)
    ][:6]
    table = Table(title=f"pagehint sweep: mean over {sweep.replicates} replicate(s)")
    for factor in sweep.factors:
        table.add_column(factor.rpartition(".")[2])
    table.add_column("ok", justify="right")
    for name in varying:
        table.add_column(name, justify="right")
    for params, mean, count in means:
        cells = [model.format_metric(name, mean.get(name)) for name in varying]
        table.add_row(*(escape(str(params.get(f))) for f in sweep.factors), str(count), *cells)
    return table


def _mean(values: Sequence[Any]) -> Any:
    numbers = [value for value in values if isinstance(value, int | float)]
    if len(numbers) != len(values) or not numbers:
        return values[0] if values else None
    return sum(numbers) / len(numbers)
