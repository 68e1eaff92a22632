"""Opening the guest model's logs for analysis: ``open_run``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pagehint.runtime.harness.config import ConfigError, structure
from pagehint.runtime.harness.logdb import LogDB, LogError, insert_rows, open_logs

from ..designs.base import COMMON_KNOBS
from ..scenario.effective import resolve
from ..scenario.schema import CONVERTER, Scenario
from .fields import FIELDS
from .reports import guest_reports
from .views import VIEWS


def _policy_row(db: LogDB, index: int) -> tuple[Any, ...]:
    """What the log does not say but analysis needs, from the run's resolved config."""
    source = db.sources[index]
    unknown = (source.run, None, None, None, None, None, None, None)
    if not source.config:
        return unknown
    where = str(source.run_dir / "config.toml") if source.run_dir else source.run
    try:
        scenario = structure(CONVERTER, dict(source.config), Scenario, where)
    except ConfigError as error:
        db.warnings.append(
            f"run {source.run}: its config.toml does not load ({error}); batch fill and the "
            "sampling interval are unknown"
        )
        return unknown
    limits = resolve(scenario).limits
    return (
        source.run,
        scenario.policy.name,
        limits.capacity,
        limits.page_limit,
        scenario.policy.poll_budget,
        scenario.run.sample_interval,
        scenario.run.log_level,
        scenario.host.guests,
    )


def _design_knob(key: str, differing: Sequence[str]) -> bool:
    """A design's own knob varies with the design: ``policy.name`` is the factor, not it."""
    section, _, knob = key.partition(".")
    return section == "policy" and knob not in COMMON_KNOBS and "policy.name" in differing


def open_run(
    paths: Path | str | Sequence[Path | str],
    *,
    buckets: int = 20,
    from_copy: bool = True,
    threads: int | None = None,
) -> LogDB:
    """Open run directories, logs or sweep directories of the guest model for analysis.

    The result's ``events`` view and its ``samples``, ``sample_series``, ``zone_requests``,
    ``reports`` and ``worker_passes`` views, the ``runs`` and ``policy`` tables, and
    ``report(name)`` (one of ``REPORT_NAMES``) are DuckDB relations::

        db = open_run("runs/default-seed0")
        db.report("return").fetchall()
        db.sql("SELECT t, pages FROM events WHERE event = 'report'").df()

    A run is read from its ``log.parquet`` where that is fresh (``from_copy``), else from its
    ``log.jsonl``; ``threads`` caps DuckDB's threads (None: one per core).
    """
    db = open_logs(
        paths,
        fields=FIELDS,
        reports=guest_reports(buckets),
        implied=_design_knob,
        from_copy=from_copy,
        threads=threads,
    )
    for source in db.sources:
        model = source.header.get("model")
        if model != "guest":
            db.close()
            raise LogError(
                source.path,
                f"a log of model {model!r} (header line), but these reports read the guest "
                "model's events",
                1,
            )
    db.con.execute(
        "CREATE TABLE policy (run VARCHAR, policy VARCHAR, capacity BIGINT, "
        "batch_pages BIGINT, poll_budget BIGINT, sample_interval_ns BIGINT, "
        "log_level VARCHAR, guests BIGINT)"
    )
    insert_rows(db.con, "policy", [_policy_row(db, index) for index in range(len(db.sources))])
    for name, sql in VIEWS.items():
        db.con.execute(f"CREATE VIEW {name} AS {sql}")
    return db
