"""What the runtime needs from a model to run it from a config, and the run directory it writes.

The runtime knows nothing of pages: the guest model (``pagehint.actors``) registers itself
under the entry-point group ``pagehint.models``, so the CLI finds it without the runtime
importing it (dependencies point ``actors -> protocol -> runtime``, never back). A user's own
model registers the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

import orjson
from rich.table import Table

from ..errors import ActorCrashed, DeadlockError, PagehintError
from ..log import RunLog
from ..system import ActorSystem, run_simulation
from .config import ConfigError, config_hash, to_toml
from .logdb import COPY_NAME, LOG_NAME, write_copy
from .rundirs import write_atomically

MODEL_ENTRY_POINT_GROUP = "pagehint.models"


class RunFailed(PagehintError):
    """The model ran but its result must not be trusted (e.g. an invariant was violated)."""

    def __init__(self, reason: str, summary: Mapping[str, Any]) -> None:
        self.summary = dict(summary)
        super().__init__(reason)


class Model(Protocol):
    """A runnable model: its config schema, how to run it, how to show its result."""

    name: str

    examples: Path | None
    """Where the model's example scenarios are installed (``NAME.toml``, sweeps under
    ``sweeps/``), so that a user can name one: ``pagehint run memhog``. None: it has none."""

    def load(self, document: dict[str, Any], source: str) -> Any:
        """Structure and check a config document; raise ConfigError naming what is wrong."""

    def unstructure(self, config: Any) -> dict[str, Any]:
        """The resolved config (with defaults) as plain data, written as config.toml."""

    def explain(self, config: Any) -> list[str]:
        """Every config key with its default and documentation, and what ``config`` (the
        scenario the user named, or the default) resolves its derived values to."""
        ...

    def seed(self, config: Any) -> int: ...

    def with_seed(self, config: Any, seed: int) -> Any: ...

    def log_level(self, config: Any) -> str: ...

    async def run(self, system: ActorSystem, config: Any) -> dict[str, Any]:
        """Run one scenario; return its summary, or raise RunFailed."""

    def baseline(self, config: Any) -> Any | None:
        """A config to run first, unlogged, for comparison (None: no baseline)."""

    def fold_baseline(self, summary: dict[str, Any], baseline: Mapping[str, Any]) -> None:
        """Add what the baseline run says to this run's summary. A model may also define
        ``is_baseline(metrics)`` and ``fill_from_baseline(metrics, baseline_metrics)``: then
        compare and sweep tables fill what a run without its own baseline lacks from the
        paired baseline run (``with_baseline_filled`` in sweep.py)."""

    def summary_table(self, summary: Mapping[str, Any]) -> Table: ...

    def headline(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        """The key metrics of a summary, flat and in display order, for indexes and tables."""
        ...

    def format_metric(self, name: str, value: Any) -> str:
        """One headline value as a table cell, in its unit."""
        ...

    # Optional: ``memory_estimate(config) -> (bytes, what they are made of)``, the simulator's
    # own peak memory for ``config``; ``execute`` refuses a run that would not fit. And
    # ``duration_ns(config)``, the virtual time a run of ``config`` simulates, for progress.


def load_model(name: str = "guest") -> Model:
    found = {point.name: point for point in entry_points(group=MODEL_ENTRY_POINT_GROUP)}
    if name not in found:
        known = ", ".join(sorted(found)) or "none installed"
        raise ConfigError("--model", [f"unknown model {name!r} (models: {known})"])
    model: Model = found[name].load()
    return model


def load_config(
    model: Model, document: dict[str, Any], source: str, origins: Mapping[str, str] | None = None
) -> Any:
    """``model.load``, with each problem about a key set outside the file blamed where it was
    set (``origins``: key -> ``--set KEY=VALUE``, a sweep factor)."""
    try:
        return model.load(document, source)
    except ConfigError as error:
        raise error.blamed_on(origins or {}) from None


def machine_memory_bytes() -> int:
    """The memory this process may use: the machine's, or its cgroup's limit if lower."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return physical
    return min(physical, int(limit)) if limit.isdigit() else physical


def check_fits(model: Model, config: Any) -> None:
    """Refuse (bad input) a run whose simulator would need more memory than this machine has,
    by the model's own estimate (``memory_estimate``, optional)."""
    estimate = getattr(model, "memory_estimate", None)
    if estimate is None:
        return
    needed, made_of = estimate(config)
    available = machine_memory_bytes()
    if needed > available:
        raise ConfigError(
            "scenario",
            [
                f"too large for this machine: the simulator would need about "
                f"{needed / (1 << 30):,.1f}GiB ({made_of}), and this machine has "
                f"{available / (1 << 30):,.1f}GiB"
            ],
        )


def _reporting(
    model: Model, config: Any, which: str, progress: Progress | None
) -> Callable[[ActorSystem], Awaitable[dict[str, Any]]]:
    """``model.run`` of ``config``, telling ``progress`` how far it has got."""

    async def run(system: ActorSystem) -> dict[str, Any]:
        if progress is not None:
            system.on_progress = lambda now_ns: progress(which, now_ns)
        return await model.run(system, config)

    return run


def _write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    write_atomically(path, orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


Progress = Callable[[str, int], None]  # (which run: "run" or "baseline", virtual ns reached)


def execute(
    model: Model,
    config: Any,
    out_dir: Path,
    progress: Progress | None = None,
    *,
    log_copy: bool = True,
) -> tuple[int, dict[str, Any]]:
    """Run ``config`` into ``out_dir``: config.toml, log.jsonl, log.parquet (its copy, for
    analysis), then summary.json last.

    Returns the exit code (0 success, 1 the run failed) and the summary or error record.
    A failed run leaves ``error.json`` and no ``summary.json``: nothing half-written looks
    complete. Callers refuse a run the machine cannot hold first (``check_fits``), before
    they make its directory. Without
    ``log_copy`` the log's Parquet copy is left to whoever writes the real run directory (the
    client of a Dask worker).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("summary.json", "error.json", COPY_NAME):
        (out_dir / stale).unlink(missing_ok=True)
    resolved = to_toml(model.unstructure(config))
    (out_dir / "config.toml").write_text(resolved, encoding="utf-8")
    seed = model.seed(config)
    started = time.perf_counter()
    baseline_config = model.baseline(config)
    failure: dict[str, Any] | None = None
    with (out_dir / LOG_NAME).open("wb") as log_file:
        log = RunLog(log_file, level=model.log_level(config))
        log.write_header(
            seed=seed,
            config_hash=config_hash(resolved),
            model=model.name,
            log_level=model.log_level(config),
        )
        try:
            summary = run_simulation(_reporting(model, config, "run", progress), seed=seed, log=log)
            if baseline_config is not None:
                baseline = run_simulation(
                    _reporting(model, baseline_config, "baseline", progress), seed=seed
                )
                model.fold_baseline(summary, baseline)
        except (ActorCrashed, DeadlockError, RunFailed) as error:
            failure = {"status": "failed", "error": str(error)}
            if isinstance(error, RunFailed):
                failure["summary"] = error.summary
            log.logger("runtime").error("run_failed", error=str(error))
    wall_s = round(time.perf_counter() - started, 3)  # the run's, without its log's copy
    if log_copy:
        write_copy(out_dir / LOG_NAME)
    if failure is not None:
        _write_json_atomically(out_dir / "error.json", failure)
        return 1, failure
    summary = {"status": "ok", **summary, "wall_s": wall_s}
    _write_json_atomically(out_dir / "summary.json", summary)
    return 0, summary
