"""The guest model's log analysis: typed events, derived views, canned reports and plots.

``pagehint analyze RUN_DIR|LOG|SWEEP_DIR ...`` opens logs with DuckDB
(``pagehint.runtime.logdb``) and answers what this field asks of a run: how much memory went
back to the host and how fast; how long requests queued for the zone lock, by requester and over
time; how the hinting worker woke, polled and filled its reports (the NAPI picture); false OOMs
and peak isolated memory; host discards, refaults and swap. Over several runs (a sweep) every
report is keyed by the factors that differ between the runs' configs, averaged over seeds.
``open_run`` gives the same from Python; docs/log-schema.md documents every event and view.

Numbers are recomputed from the log, where it can by the definitions ``outcomes.py`` uses for
summary.json, and the ``return`` report shows both side by side. Percentiles here are exact
(nearest rank), where the summary's come from log-bucketed histograms (within 4.5%).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import orjson
from rich.console import Console
from rich.table import Table

from pagehint.protocol.units import PAGE_SIZE, format_duration, format_size, pages
from pagehint.runtime.config import ConfigError, structure
from pagehint.runtime.errors import PagehintError
from pagehint.runtime.logdb import RUNTIME_FIELDS, LogDB, LogError, Report, open_logs

from .policies import ScannerPolicy
from .scenario import make_policy
from .schema import CONVERTER, Scenario

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# -- the typed fields of the guest model's events (docs/log-schema.md documents each) ---------
_SAMPLE = (
    "rss_pages",
    "free_pages",
    "isolated_pages",
    "reported_pages",
    "wasted_pages",
    "returned_pages",
    "pcp_pages",
    "lent_pages",
    "total_pages",
    "lock_queue",
)
_ZONE = {"requester": "VARCHAR", "order": "BIGINT"}
_WAIT = {"pfns": "BIGINT[]", "wait_ns": "BIGINT", "queued": "BIGINT"}
GUEST_FIELDS: dict[str, dict[str, str]] = {
    "sample": dict.fromkeys(_SAMPLE, "BIGINT"),
    "zone_alloc": _ZONE | {"wanted": "BIGINT", "got": "BIGINT"} | _WAIT,
    "zone_free": _ZONE | {"blocks": "BIGINT"} | _WAIT,
    "zone_work": {
        "requester": "VARCHAR",
        "examined": "BIGINT",
        "isolated_pages": "BIGINT",
        "wait_ns": "BIGINT",
        "queued": "BIGINT",
    },
    "alloc_failed": _ZONE
    | {
        "free_pages": "BIGINT",
        "isolated_pages": "BIGINT",
        "min_wmark_pages": "BIGINT",
        "false_oom": "BOOLEAN",
    },
    "oom_kill": {"region": "BIGINT", "order": "BIGINT", "pages": "BIGINT"},
    "worker_wake": {"in_flight": "BIGINT"},
    "worker_poll": {"blocks": "BIGINT", "pages": "BIGINT", "examined": "BIGINT"},
    "report": {"token": "BIGINT", "pages": "BIGINT", "blocks": "BIGINT[][]"},
    "report_done": {"token": "BIGINT", "acked": "BOOLEAN"},
    "worker_sleep": {"polls": "BIGINT", "rearmed": "BOOLEAN"},
    "device_reset": {"reports_lost": "BIGINT"},
    "host_fault": {
        "kind": "VARCHAR",
        "duration_ns": "BIGINT",
        "factor": "DOUBLE",
        "guest": "VARCHAR",
    },
    "discard": {"guest": "VARCHAR", "pfn": "BIGINT", "pages": "BIGINT"},
    "reporting_disabled": {"guest": "VARCHAR", "policy": "VARCHAR"},
    "run_end": {
        "virtual_s": "DOUBLE",
        "policy": "VARCHAR",
        "memory_returned_bytes": "BIGINT",
        "time_to_return_s": "JSON",
        "returnable_peak_bytes": "BIGINT",
        "throughput_rel_to_none": "DOUBLE",
        "false_ooms": "BIGINT",
        "peak_isolated_bytes": "BIGINT",
        "lock_wait_ns": "JSON",
        "lock_wait_ns_by_requester": "JSON",
        "lock_by_requester": "JSON",
        "worker": "JSON",
        "virtio": "JSON",
        "host": "JSON",
        "workload": "JSON",
        "zone": "JSON",
        "invariant_violations": "BIGINT",
        "guests": "JSON",
    },
}
FIELDS: dict[str, dict[str, str]] = RUNTIME_FIELDS | GUEST_FIELDS

# -- derived views ---------------------------------------------------------------------------
_GUEST_OF = "regexp_replace(actor, '[^.]*$', 'guest')"  # 'g1.worker' -> 'g1.guest' (discard's)
_LAST_NAME = "regexp_extract(requester, '[^.]*$')"
# zone.requester_group in SQL: 'g1.vcpu12' -> 'vcpu'
_REQUESTER_CLASS = f"coalesce(nullif(rtrim({_LAST_NAME}, '0123456789'), ''), {_LAST_NAME})"

VIEWS: dict[str, str] = {
    "samples": f"""
        SELECT run, line, t, actor AS monitor, {_GUEST_OF} AS guest, {", ".join(_SAMPLE)}
        FROM events WHERE event = 'sample'""",
    # The monitor's TimeSeries: one sample per instant (the last written), and none closer than
    # the sampling interval to the one before (the forced last sample of a run can be).
    "sample_series": """
        SELECT s.* FROM (
            SELECT * FROM samples
            QUALIFY row_number() OVER (PARTITION BY run, monitor, t ORDER BY line DESC) = 1
        ) AS s LEFT JOIN policy USING (run)
        QUALIFY coalesce(
            s.t - lag(s.t) OVER (PARTITION BY s.run, s.monitor ORDER BY s.t),
            policy.sample_interval_ns, 0) >= coalesce(policy.sample_interval_ns, 0)""",
    "zone_requests": f"""
        SELECT run, line, t, actor AS zone, {_GUEST_OF} AS guest,
            CASE event WHEN 'zone_alloc' THEN 'alloc' WHEN 'zone_free' THEN 'free'
                ELSE 'work' END AS kind,
            requester, {_REQUESTER_CLASS} AS requester_class, "order",
            CASE event WHEN 'zone_alloc' THEN got WHEN 'zone_free' THEN CAST(blocks AS BIGINT)
                ELSE examined END AS blocks,
            wait_ns, queued
        FROM events WHERE event IN ('zone_alloc', 'zone_free', 'zone_work')""",
    "reports": f"""
        WITH sent AS (
            SELECT run, line, t, actor AS worker, {_GUEST_OF} AS guest, token, pages,
                CAST(blocks AS BIGINT[][]) AS blocks
            FROM events WHERE event = 'report'
        ), done AS (
            SELECT run, line, t, actor AS worker, token, acked
            FROM events WHERE event = 'report_done'
        )
        SELECT sent.*, len(sent.blocks) AS nblocks, done.line AS done_line, done.t AS done_t,
            done.acked
        FROM sent LEFT JOIN done ON sent.run = done.run AND sent.worker = done.worker
            AND sent.token = done.token AND done.line > sent.line""",
    # One row per wake-up of a worker: a pass, from worker_wake to its worker_sleep.
    "worker_passes": f"""
        WITH w AS (
            SELECT run, line, t, actor, event, blocks, polls, rearmed, in_flight,
                sum(CASE WHEN event = 'worker_wake' THEN 1 ELSE 0 END) OVER (
                    PARTITION BY run, actor ORDER BY line ROWS UNBOUNDED PRECEDING) AS pass
            FROM events WHERE event IN ('worker_wake', 'worker_poll', 'worker_sleep')
        )
        SELECT run, actor AS worker, {_GUEST_OF} AS guest, pass,
            min(t) FILTER (WHERE event = 'worker_wake') AS wake_t,
            min(t) FILTER (WHERE event = 'worker_poll') AS first_poll_t,
            max(t) FILTER (WHERE event = 'worker_sleep') AS sleep_t,
            count(*) FILTER (WHERE event = 'worker_poll') AS polls,
            count(*) FILTER (WHERE event = 'worker_poll' AND CAST(blocks AS BIGINT) = 0)
                AS empty_polls,
            bool_or(rearmed) FILTER (WHERE event = 'worker_sleep') AS rearmed,
            any_value(in_flight) FILTER (WHERE event = 'worker_wake') AS in_flight_at_wake
        FROM w WHERE pass > 0 GROUP BY run, actor, pass""",
}

# -- canned reports --------------------------------------------------------------------------
_OVERVIEW = """
    SELECT runs.run, runs.status, coalesce(policy.policy, e.policy) AS policy,
        round(runs.end_ns / 1e9, 6) AS virtual_s, runs.lines,
        coalesce(policy.log_level, CASE WHEN runs.debug THEN 'debug' ELSE 'info' END)
            AS log_level,
        runs.cut_line, policy.guests
    FROM runs LEFT JOIN policy USING (run)
    LEFT JOIN (SELECT run, policy FROM events WHERE event = 'run_end') AS e USING (run)
    ORDER BY runs.run"""

_LEVELS = ("50", "90", "99")
_RETURN = f"""
    WITH tot AS (
        SELECT run, t, sum(wasted_pages) AS wasted, sum(rss_pages) AS rss,
            sum(returned_pages) AS returned
        FROM sample_series GROUP BY run, t
    ), peak AS (
        SELECT run, max(wasted) AS peak, max(rss) AS rss_peak,
            arg_max(rss, t) AS rss_end, arg_max(wasted, t) AS wasted_end
        FROM tot GROUP BY run
    ), peak_at AS (
        SELECT tot.run, min(tot.t) AS peak_at, arg_min(tot.returned, tot.t) AS returned_at_peak
        FROM tot JOIN peak ON tot.run = peak.run AND tot.wasted = peak.peak GROUP BY tot.run
    ), levels AS (
        SELECT tot.run,
            {
    ", ".join(
        f"min(tot.t) FILTER (WHERE tot.t >= peak_at.peak_at "
        f"AND tot.returned - peak_at.returned_at_peak >= peak.peak * {level} / 100) AS t{level}"
        for level in _LEVELS
    )
}
        FROM tot JOIN peak USING (run) JOIN peak_at USING (run) GROUP BY tot.run
    ), summary AS (
        SELECT run, time_to_return_s AS ttr, returnable_peak_bytes, memory_returned_bytes
        FROM events WHERE event = 'run_end'
    ), joined AS (
        SELECT runs.run, peak.peak * {PAGE_SIZE} AS returnable_peak_bytes,
            round(peak_at.peak_at / 1e9, 6) AS peak_at_s,
            {
    ", ".join(
        f"CASE WHEN peak.peak > 0 THEN round((levels.t{level} - peak_at.peak_at) / 1e9, 6)"
        f" END AS t{level}_s"
        for level in _LEVELS
    )
},
            peak.rss_peak * {PAGE_SIZE} AS rss_peak_bytes,
            peak.rss_end * {PAGE_SIZE} AS rss_end_bytes,
            peak.wasted_end * {PAGE_SIZE} AS free_backed_end_bytes,
            summary.memory_returned_bytes AS summary_returned_bytes,
            summary.returnable_peak_bytes AS summary_peak_bytes,
            {
    ", ".join(f"CAST(summary.ttr->>'{level}' AS DOUBLE) AS summary_t{level}_s" for level in _LEVELS)
},
            summary.run IS NOT NULL AS has_summary
        FROM runs LEFT JOIN peak USING (run) LEFT JOIN peak_at USING (run)
            LEFT JOIN levels USING (run) LEFT JOIN summary USING (run)
    )
    SELECT * EXCLUDE (has_summary),
        CASE WHEN has_summary THEN
            coalesce(returnable_peak_bytes, 0) = summary_peak_bytes
            {
    "".join(f" AND t{level}_s IS NOT DISTINCT FROM summary_t{level}_s" for level in _LEVELS)
}
        END AS matches_summary
    FROM joined ORDER BY run"""

_RETURN_OVER_TIME = f"""
    SELECT run, round(t / 1e9, 6) AS t_s,
        sum(rss_pages) * {PAGE_SIZE} AS rss_bytes,
        sum(wasted_pages) * {PAGE_SIZE} AS free_backed_bytes,
        sum(isolated_pages) * {PAGE_SIZE} AS isolated_bytes,
        sum(reported_pages) * {PAGE_SIZE} AS reported_bytes,
        sum(free_pages) * {PAGE_SIZE} AS guest_free_bytes
    FROM sample_series GROUP BY run, t ORDER BY run, t"""

# Percentiles are quantile_disc (nearest rank: the ceil(n * q)-th smallest), all from one sort.
_LOCK_WAIT = """
    SELECT run, requester, requests, mean_ns, q[1] AS p50_ns, q[2] AS p90_ns, q[3] AS p99_ns,
        max_ns, waited_pct, mean_queued
    FROM (
        SELECT run,
            CASE WHEN grouping(requester_class) = 1 THEN 'all' ELSE requester_class END
                AS requester,
            count(*) AS requests, avg(wait_ns) AS mean_ns,
            quantile_disc(wait_ns, [0.5, 0.9, 0.99]) AS q, max(wait_ns) AS max_ns,
            100 * avg(CASE WHEN wait_ns > 0 THEN 1 ELSE 0 END) AS waited_pct,
            avg(queued) AS mean_queued
        FROM zone_requests
        GROUP BY GROUPING SETS ((run, requester_class), (run))
    )
    ORDER BY run, requester"""


def _lock_wait_over_time(buckets: int) -> str:
    return f"""
    WITH b AS (
        SELECT z.run, z.wait_ns, z.queued, runs.end_ns,
            least(CAST(floor(z.t * {buckets} / greatest(runs.end_ns, 1)) AS BIGINT),
                {buckets - 1}) AS bucket
        FROM zone_requests AS z JOIN runs USING (run)
    )
    SELECT run, bucket, from_s, requests, q[1] AS p50_ns, q[2] AS p99_ns, max_ns, waited_pct,
        mean_queued
    FROM (
        SELECT run, bucket, round(bucket * any_value(end_ns) / {buckets} / 1e9, 6) AS from_s,
            count(*) AS requests, quantile_disc(wait_ns, [0.5, 0.99]) AS q,
            max(wait_ns) AS max_ns,
            100 * avg(CASE WHEN wait_ns > 0 THEN 1 ELSE 0 END) AS waited_pct,
            avg(queued) AS mean_queued
        FROM b GROUP BY run, bucket
    )
    ORDER BY run, bucket"""


_WORKER = f"""
    WITH p AS (
        SELECT run, worker, count(*) AS wakeups, sum(polls) AS polls,
            max(polls) AS max_polls_per_pass,
            sum(empty_polls) AS empty_polls,
            count(*) FILTER (WHERE polls >= policy.poll_budget) AS budget_passes,
            count(*) FILTER (WHERE rearmed) AS rearmed_passes,
            avg(first_poll_t - wake_t) AS mean_wake_to_poll_ns,
            sum(coalesce(sleep_t, runs.end_ns) - wake_t) AS awake_ns,
            sum(coalesce(sleep_t, runs.end_ns) - coalesce(first_poll_t, sleep_t, runs.end_ns))
                AS polling_ns
        FROM worker_passes JOIN runs USING (run) LEFT JOIN policy USING (run)
        GROUP BY run, worker
    ), r AS (
        SELECT run, worker, count(*) AS reports, sum(nblocks) AS blocks,
            sum(pages) AS pages,
            -- policies.py fill_ratio: entries of the design's capacity; the scanner also
            -- counts pages against its batch (64 MiB), whichever is fuller
            avg(CASE WHEN policy.batch_pages IS NULL THEN nblocks / policy.capacity
                ELSE least(1.0, greatest(nblocks / policy.capacity,
                                         pages / policy.batch_pages)) END) AS fill,
            count(*) FILTER (WHERE acked = false) AS reports_dropped,
            count(*) FILTER (WHERE done_line IS NULL) AS in_flight_at_end,
            quantile_disc(done_t - t, [0.5, 0.99]) AS round_trip
        FROM reports LEFT JOIN policy USING (run) GROUP BY run, worker
    )
    SELECT p.run, p.worker, wakeups, polls,
        round(polls / wakeups, 3) AS polls_per_wakeup, max_polls_per_pass, empty_polls,
        budget_passes, rearmed_passes, coalesce(reports, 0) AS reports,
        coalesce(blocks, 0) AS blocks, coalesce(pages, 0) * {PAGE_SIZE} AS reported_bytes,
        round(fill, 4) AS mean_batch_fill, coalesce(reports_dropped, 0) AS reports_dropped,
        coalesce(in_flight_at_end, 0) AS in_flight_at_end, round_trip[1] AS round_trip_p50_ns,
        round_trip[2] AS round_trip_p99_ns, mean_wake_to_poll_ns,
        round(100 * awake_ns / nullif(runs.end_ns, 0), 2) AS awake_pct,
        round(100 * polling_ns / nullif(runs.end_ns, 0), 2) AS polling_pct
    FROM p LEFT JOIN r USING (run, worker) JOIN runs USING (run)
    ORDER BY p.run, p.worker"""

_OOM = f"""
    WITH failed AS (
        SELECT run, count(*) AS alloc_failures,
            count(*) FILTER (WHERE false_oom) AS false_ooms,
            min(t) FILTER (WHERE false_oom) AS first_false_oom_t
        FROM events WHERE event = 'alloc_failed' GROUP BY run
    ), kills AS (
        SELECT run, count(*) AS oom_kills FROM events WHERE event = 'oom_kill' GROUP BY run
    ), delta AS (
        -- isolated pages per worker: a report's blocks are isolated by the poll that found
        -- them and put back just before its report_done line
        SELECT run, actor, line, pages AS pages FROM events
        WHERE event = 'worker_poll' AND CAST(blocks AS BIGINT) > 0
        UNION ALL
        SELECT run, worker, done_line, -pages FROM reports WHERE done_line IS NOT NULL
    ), held AS (
        SELECT run, actor, sum(pages) OVER (
            PARTITION BY run, actor ORDER BY line ROWS UNBOUNDED PRECEDING) AS held
        FROM delta
    ), peak AS (
        SELECT run, sum(peak) AS peak
        FROM (SELECT run, actor, max(held) AS peak FROM held GROUP BY run, actor)
        GROUP BY run
    ), sampled AS (
        SELECT run, max(isolated) AS isolated FROM (
            SELECT run, t, sum(isolated_pages) AS isolated FROM sample_series GROUP BY run, t
        ) GROUP BY run
    ), summary AS (
        SELECT run, peak_isolated_bytes, false_ooms FROM events WHERE event = 'run_end'
    )
    SELECT runs.run, coalesce(failed.alloc_failures, 0) AS alloc_failures,
        coalesce(failed.false_ooms, 0) AS false_ooms,
        round(failed.first_false_oom_t / 1e9, 6) AS first_false_oom_s,
        coalesce(kills.oom_kills, 0) AS oom_kills,
        coalesce(peak.peak, 0) * {PAGE_SIZE} AS peak_isolated_bytes,
        sampled.isolated * {PAGE_SIZE} AS peak_isolated_sampled_bytes,
        summary.peak_isolated_bytes AS summary_peak_isolated_bytes,
        summary.false_ooms AS summary_false_ooms
    FROM runs LEFT JOIN failed USING (run) LEFT JOIN kills USING (run)
        LEFT JOIN peak USING (run) LEFT JOIN sampled USING (run) LEFT JOIN summary USING (run)
    ORDER BY runs.run"""

_HOST = f"""
    WITH discards AS (
        SELECT run, count(*) AS discards, sum(pages) AS pages
        FROM events WHERE event = 'discard' GROUP BY run
    ), acked AS (
        SELECT run, count(*) FILTER (WHERE acked) AS reports_acked,
            sum(pages) FILTER (WHERE acked) AS pages
        FROM reports GROUP BY run
    ), faults AS (
        SELECT run, count(*) FILTER (WHERE kind = 'stall') AS stalls,
            count(*) FILTER (WHERE kind = 'slowdown') AS slowdowns,
            count(*) FILTER (WHERE kind = 'reset') AS resets
        FROM events WHERE event = 'host_fault' GROUP BY run
    ), resets AS (
        SELECT run, count(*) AS device_resets, sum(reports_lost) AS reports_lost
        FROM events WHERE event = 'device_reset' GROUP BY run
    ), summary AS (SELECT run, host FROM events WHERE event = 'run_end')
    SELECT runs.run,
        CASE WHEN runs.debug THEN coalesce(discards.discards, 0) END AS discards,
        CASE WHEN runs.debug THEN coalesce(discards.pages, 0) * {PAGE_SIZE} END
            AS discarded_bytes,
        coalesce(acked.reports_acked, 0) AS reports_acked,
        coalesce(acked.pages, 0) * {PAGE_SIZE} AS acked_bytes,
        CAST(summary.host->>'refaults' AS BIGINT) AS refaults,
        CAST(summary.host->>'swap_ins' AS BIGINT) AS swap_ins,
        CAST(summary.host->>'swapped_bytes' AS BIGINT) AS swapped_bytes,
        CAST(summary.host->>'rss_bytes_end' AS BIGINT) AS rss_end_bytes,
        coalesce(faults.stalls, 0) AS stalls, coalesce(faults.slowdowns, 0) AS slowdowns,
        coalesce(faults.resets, 0) AS resets_injected,
        coalesce(resets.device_resets, 0) AS device_resets,
        coalesce(resets.reports_lost, 0) AS reports_lost
    FROM runs LEFT JOIN discards USING (run) LEFT JOIN acked USING (run)
        LEFT JOIN faults USING (run) LEFT JOIN resets USING (run) LEFT JOIN summary USING (run)
    ORDER BY runs.run"""


def guest_reports(buckets: int = 20) -> list[Report]:
    """The canned reports; ``buckets`` time buckets per run for the over-time ones."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    return [
        Report(
            "overview",
            "Runs",
            _OVERVIEW,
            per_run=True,
            about="status, policy, length and level of each log",
        ),
        Report(
            "return",
            "Memory returned to the host",
            _RETURN,
            about="peak of free-but-backed memory and seconds from it until that memory had "
            "fallen by 50/90/99% of the peak, from sample lines, beside the run_end summary",
        ),
        Report(
            "return_over_time",
            "Host memory over time",
            _RETURN_OVER_TIME,
            keys=("t_s",),
            series=True,
            about="each sampled instant, summed over guests",
        ),
        Report(
            "lock_wait",
            "Zone-lock wait by requester",
            _LOCK_WAIT,
            keys=("requester",),
            about="exact percentiles of wait_ns over zone request lines (debug level)",
        ),
        Report(
            "lock_wait_over_time",
            "Zone-lock wait over time",
            _lock_wait_over_time(buckets),
            keys=("bucket", "from_s"),
            series=True,
            about=f"{buckets} equal time buckets per run (debug level)",
        ),
        Report(
            "worker",
            "Hinting worker: wake-ups, polls, batch fill",
            _WORKER,
            keys=("worker",),
            about="passes from worker_wake to worker_sleep, polls, reports and their fill",
        ),
        Report(
            "oom",
            "False OOMs and isolated memory",
            _OOM,
            about="failed allocations, OOM kills, and the most memory isolated for hinting",
        ),
        Report(
            "host",
            "Host: discards, refaults, swap, faults",
            _HOST,
            about="discard lines (debug), acknowledged reports, injected faults, and the "
            "run_end totals of refaults and swap",
        ),
    ]


REPORT_NAMES = tuple(report.name for report in guest_reports())
DEFAULT_REPORTS = tuple(name for name in REPORT_NAMES if not name.endswith("_over_time"))


# -- opening -----------------------------------------------------------------------------------
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
    policy = make_policy(scenario)
    if scenario.host.batch_size:
        policy.use_host_batch(pages(scenario.host.batch_size))
    return (
        source.run,
        scenario.policy.name,
        policy.capacity,
        policy.batch_pages if isinstance(policy, ScannerPolicy) else None,
        scenario.policy.poll_budget,
        scenario.run.sample_interval,
        scenario.run.log_level,
        scenario.host.guests,
    )


def open_run(paths: Path | str | Sequence[Path | str], *, buckets: int = 20) -> LogDB:
    """Open run directories, logs or sweep directories of the guest model for analysis.

    The result's ``events`` view and its ``samples``, ``sample_series``, ``zone_requests``,
    ``reports`` and ``worker_passes`` views, the ``runs`` and ``policy`` tables, and
    ``report(name)`` (one of ``REPORT_NAMES``) are DuckDB relations::

        db = open_run("runs/default-seed0")
        db.report("return").fetchall()
        db.sql("SELECT t, pages FROM events WHERE event = 'report'").df()
    """
    db = open_logs(paths, fields=FIELDS, reports=guest_reports(buckets))
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
    db.con.executemany(
        "INSERT INTO policy VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [_policy_row(db, index) for index in range(len(db.sources))],
    )
    for name, sql in VIEWS.items():
        db.con.execute(f"CREATE VIEW {name} AS {sql}")
    return db


# -- what a report cannot show -----------------------------------------------------------------
_DEBUG_HINT = "rerun with --set run.log_level=debug"


def _info_runs(db: LogDB) -> list[str]:
    return [
        row[0] for row in db.sql("SELECT run FROM runs WHERE NOT debug ORDER BY run").fetchall()
    ]


def _runs(runs: Sequence[str]) -> str:
    """A list of runs for a note: all of them, or the first few."""
    return ", ".join(runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")


def report_notes(db: LogDB, name: str) -> list[str]:
    """What a reader must know about a report on these logs: what is missing, and why."""
    notes: list[str] = []
    info = _info_runs(db)
    if name in ("lock_wait", "lock_wait_over_time") and info:
        notes.append(
            f"no rows for info-level logs ({_runs(info)}): zone-lock waits come from the "
            f"debug zone_alloc/zone_free/zone_work lines; {_DEBUG_HINT}"
        )
    if name == "host":
        if info:
            notes.append(
                f"discards are blank for info-level logs ({_runs(info)}): discard lines are "
                f"debug; {_DEBUG_HINT}"
            )
        notes.append(
            "refaults, swap-ins and swapped bytes are end-of-run totals from the run_end line "
            "(no line is logged per refault or swap); discarded_bytes counts whole discarded "
            "ranges, touched or not, where summary.json's memory_returned_bytes counts only "
            "pages that were backed"
        )
    if name == "worker":
        silent = sorted({source.run for source in db.sources} - db.runs_with("worker_wake"))
        if silent:
            notes.append(
                f"no hinting worker lines (policy none, or reporting not negotiated with the "
                f"host) in {_runs(silent)}"
            )
    if name == "oom":
        notes.append(
            "peak_isolated_bytes replays worker_poll (isolated) and report_done (put back) "
            "lines, summed over guests' own peaks like summary.json; the sampled peak only "
            "sees sample instants"
        )
    if name in ("return", "oom", "host"):
        unfinished = sorted({s.run for s in db.sources} - db.runs_with("run_end"))
        if unfinished:
            notes.append(
                f"no run_end line (the run did not finish), so the summary_* columns are "
                f"blank: {_runs(unfinished)}"
            )
    if name == "return":
        mismatched = [
            row[0]
            for row in db.sql(
                f"SELECT run FROM ({db.reports['return'].sql}) WHERE NOT matches_summary"
            ).fetchall()
        ]
        if mismatched:
            notes.append(
                f"t50/t90/t99 differ from the run_end summary in {_runs(mismatched)}: both count "
                "what discards gave back after the peak of free-but-backed memory (sample lines' "
                "returned_pages), so a difference means samples are missing from the log"
            )
    return notes


# -- showing results -------------------------------------------------------------------------
def _cell(column: str, value: Any) -> str:
    """A value for people: sizes, durations and percentages in their units."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if column.endswith("_bytes"):
            return format_size(int(value))
        if column.endswith("_ns"):
            return format_duration(value)
        if column.endswith("_pct"):
            return f"{value:.1f}%"
        if column.endswith("_s"):
            return f"{value:.6g}s"
        if isinstance(value, float):
            return f"{value:.4g}"
        return f"{value:,}"
    if isinstance(value, list | dict):
        return orjson.dumps(value, default=str).decode()
    return str(value)


def _thinned(
    rows: list[tuple[Any, ...]], group_of: int | None, limit: int
) -> list[tuple[Any, ...]]:
    """At most ``limit`` evenly spaced rows per group (per run or factor combination)."""
    groups: dict[Any, list[tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault(row[group_of] if group_of is not None else None, []).append(row)
    shown: list[tuple[Any, ...]] = []
    for members in groups.values():
        if len(members) <= limit:
            shown.extend(members)
            continue
        step = (len(members) - 1) / (limit - 1)
        shown.extend(members[round(i * step)] for i in range(limit))
    return shown


def table_of(
    title: str,
    relation: duckdb.DuckDBPyRelation,
    *,
    ids: Sequence[str] = ("run",),
    series: bool = False,
    limit: int = 12,
) -> Table:
    """A Rich table of a relation, for a terminal.

    A few wide rows are turned on their side (a column per row, named by its ``ids``), as a
    side-by-side comparison reads best; a long series is thinned, with a caption saying so.
    """
    columns = list(relation.columns)
    rows = relation.fetchall()
    caption = None
    if series:
        group_of = columns.index("run") if "run" in columns else None
        shown = _thinned(rows, group_of, limit)
        if len(shown) < len(rows):
            caption = f"{len(shown)} of {len(rows)} rows shown, evenly spaced; --json for all"
        rows = shown
    id_columns = [columns.index(name) for name in ids if name in columns]
    if not series and 0 < len(rows) <= 6 and len(columns) > 8 and id_columns:
        varying = [i for i in id_columns if len({row[i] for row in rows}) > 1] or id_columns
        table = Table(title=title, caption=caption, title_justify="left")
        table.add_column("measure")
        for row in rows:
            name = ", ".join(
                str(row[i]) if columns[i] in ("run", "worker") else f"{columns[i]}={row[i]}"
                for i in varying
            )
            table.add_column(name, justify="right")
        for index, column in enumerate(columns):
            if index not in id_columns:
                table.add_row(column, *(_cell(column, row[index]) for row in rows))
        return table
    table = Table(title=title, caption=caption, title_justify="left")
    for column in columns:
        numeric = rows and isinstance(rows[0][columns.index(column)], int | float)
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(_cell(column, value) for column, value in zip(columns, row, strict=True)))
    return table


def _jsonable(relation: duckdb.DuckDBPyRelation) -> dict[str, Any]:
    columns = list(relation.columns)
    return {
        "columns": columns,
        "types": [str(kind) for kind in relation.types],
        "rows": [dict(zip(columns, row, strict=True)) for row in relation.fetchall()],
    }


def _dumps(document: Mapping[str, Any]) -> str:
    return orjson.dumps(document, default=str, option=orjson.OPT_INDENT_2).decode()


def run_labels(db: LogDB) -> dict[str, str]:
    """How a run is named in a legend: its factors (policy=scanner), else its name."""
    keys = db.factors + (db.replicates if db.replicated else [])
    if not keys or len(keys) > 3:  # unrelated configs: their names say more than a diff
        return {source.run: source.run for source in db.sources}
    shorts = [key.rpartition(".")[2] for key in keys]
    names = shorts if len(set(shorts)) == len(shorts) else keys
    rows = db.sql("SELECT run, " + ", ".join(f'"{key}"' for key in keys) + " FROM runs").fetchall()
    return {
        row[0]: ", ".join(f"{name}={value}" for name, value in zip(names, row[1:], strict=True))
        for row in rows
    }


# -- plots -----------------------------------------------------------------------------------
class PlotError(PagehintError):
    """Plots were asked for and cannot be drawn (matplotlib is missing)."""


def _figure(rows: int = 1, height: float = 4.0, **kwargs: Any) -> Figure:
    try:
        import matplotlib
    except ImportError:
        raise PlotError(
            "--plot needs matplotlib, which is not installed: pip install 'pagehint[plot]'"
        ) from None
    matplotlib.use("Agg")  # headless: PNG files, never a window
    from matplotlib.figure import Figure

    return Figure(figsize=(10, height * rows + 1), layout="constrained", **kwargs)


def _size_unit(largest: float) -> tuple[float, str]:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if largest >= scale:
            return scale, unit
    return 1, "bytes"


def _by_run(rows: Iterable[tuple[Any, ...]]) -> dict[str, list[tuple[Any, ...]]]:
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row[1:])
    return grouped


def plot_memory(db: LogDB, out_dir: Path) -> Path:
    """Host RSS and free-but-backed memory (not yet returned) over time, one line per run."""
    series = _by_run(
        db.sql(
            f"SELECT run, t_s, rss_bytes, free_backed_bytes FROM ({_RETURN_OVER_TIME}) "
            "ORDER BY run, t_s"
        ).fetchall()
    )
    marks = {
        row[0]: row[1:]
        for row in db.sql(
            f"SELECT run, peak_at_s, returnable_peak_bytes, t50_s, t90_s, t99_s FROM ({_RETURN})"
        ).fetchall()
    }
    labels = run_labels(db)
    largest = max((max(r[1], r[2]) for rows in series.values() for r in rows), default=0)
    scale, unit = _size_unit(largest)
    figure = _figure(2, 3.2)
    rss_axes, free_axes = figure.subplots(2, 1, sharex=True)
    for run, rows in series.items():
        times = [row[0] for row in rows]
        (line,) = rss_axes.plot(times, [row[1] / scale for row in rows], label=labels[run])
        free_axes.plot(times, [row[2] / scale for row in rows], color=line.get_color())
        peak_at, peak, *levels = marks.get(run, (None, None, None, None, None))
        for level, seconds in zip(("50", "90", "99"), levels, strict=True):
            if seconds is not None and peak_at is not None and peak:
                x = peak_at + seconds
                y = peak * (1 - int(level) / 100) / scale
                free_axes.plot(x, y, marker="v", color=line.get_color())
                free_axes.annotate(f"{level}%", (x, y), textcoords="offset points", xytext=(4, 4))
    figure.suptitle("Host memory over time: what the host holds, and what it could get back")
    rss_axes.set_title("Host RSS of the guest(s)")
    rss_axes.set_ylabel(f"RSS ({unit})")
    free_axes.set_title(
        "Free in the guest but still backed on the host (not yet returned); "
        "markers: 50/90/99% of its peak returned"
    )
    free_axes.set_ylabel(f"free but backed ({unit})")
    free_axes.set_xlabel("virtual time (s)")
    for axes in (rss_axes, free_axes):
        axes.grid(alpha=0.3)
        axes.set_ylim(bottom=0)
    rss_axes.legend(fontsize="small")
    return _save(figure, out_dir / "memory.png")


def plot_returned(db: LogDB, out_dir: Path) -> Path:
    """Share of the returnable peak given back, against time since that peak, per run."""
    rows = db.sql(
        f"""SELECT o.run, o.t_s - r.peak_at_s,
            100 * (1 - o.free_backed_bytes / r.returnable_peak_bytes)
        FROM ({_RETURN_OVER_TIME}) AS o JOIN ({_RETURN}) AS r USING (run)
        WHERE r.returnable_peak_bytes > 0 AND o.t_s >= r.peak_at_s ORDER BY o.run, o.t_s"""
    ).fetchall()
    labels = run_labels(db)
    figure = _figure(1, 4.5)
    axes = figure.subplots()
    for run, points in _by_run(rows).items():
        axes.plot([p[0] for p in points], [p[1] for p in points], label=labels[run])
    for level in (50, 90, 99):
        axes.axhline(level, color="grey", linestyle=":", linewidth=1)
        axes.annotate(f"{level}%", (0, level), textcoords="offset points", xytext=(2, 2))
    axes.set_title("Memory returned to the host after the peak of free-but-backed memory")
    axes.set_xlabel("time since that peak (s, virtual)")
    axes.set_ylabel("returned (% of the peak)")
    axes.set_ylim(0, 102)
    axes.grid(alpha=0.3)
    if not rows:
        axes.text(
            0.5,
            0.5,
            "no run had free-but-backed memory to return",
            ha="center",
            transform=axes.transAxes,
        )
    else:
        axes.legend(fontsize="small")
    return _save(figure, out_dir / "returned.png")


_BINS_PER_OCTAVE = 4


def plot_lock_wait(db: LogDB, out_dir: Path) -> Path | None:
    """Histogram of zone-lock waits (log bins) per run and requester; None without debug lines."""
    totals = db.sql(
        "SELECT run, requester_class, count(*), count(*) FILTER (WHERE wait_ns <= 0) "
        "FROM zone_requests GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    if not totals:
        return None
    bins = db.sql(
        f"SELECT run, requester_class, CAST(floor(log2(wait_ns) * {_BINS_PER_OCTAVE}) AS BIGINT)"
        " AS bin, count(*) FROM zone_requests WHERE wait_ns > 0 GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    counts: dict[tuple[str, str], dict[int, int]] = {}
    for run, requester, bin_index, count in bins:
        counts.setdefault((run, requester), {})[bin_index] = count
    labels = run_labels(db)
    figure = _figure(1, 4.5)
    axes = figure.subplots()
    for run, requester, requests, zero in totals:
        label = labels[run] + ": " if len(db.sources) > 1 else ""
        label += f"{requester} ({requests:,} requests, {100 * zero / requests:.1f}% did not wait)"
        found = counts.get((run, requester))
        if not found:
            axes.plot([], [], label=label)  # in the legend: every request got the lock at once
            continue
        low, high = min(found), max(found)
        edges = [2 ** (index / _BINS_PER_OCTAVE) for index in range(low, high + 2)]
        axes.stairs([found.get(index, 0) for index in range(low, high + 1)], edges, label=label)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axes.set_xscale("log")
    with_unit = FuncFormatter(lambda value, _: format_duration(value))
    axes.xaxis.set_major_formatter(with_unit)  # tick labels carry the unit: ns, us, ms
    low_x, high_x = axes.get_xlim()
    if high_x < 20 * low_x:  # under about a decade there is no major tick: label the minor ones
        axes.xaxis.set_minor_formatter(with_unit)
    else:
        axes.xaxis.set_minor_formatter(NullFormatter())
    most = max((count for *_, count in bins), default=1)
    if most >= 100:  # a long tail needs a log axis to show; a few counts read better plain
        axes.set_yscale("log")
    axes.set_title("Zone-lock wait: requests that queued for the lock, by requester")
    axes.set_xlabel(f"wait for the zone lock (time, log scale, {_BINS_PER_OCTAVE} bins per octave)")
    axes.set_ylabel("requests" + (" (log scale)" if most >= 100 else ""))
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize="small")
    return _save(figure, out_dir / "lock_wait.png")


def plot_worker_timeline(db: LogDB, out_dir: Path) -> Path | None:
    """Each worker's passes: waiting out its delay, then polling; None without a worker."""
    passes = db.sql(
        "SELECT p.run, p.worker, p.wake_t / 1e9, coalesce(p.first_poll_t, p.sleep_t, r.end_ns)"
        " / 1e9, coalesce(p.sleep_t, r.end_ns) / 1e9 FROM worker_passes AS p JOIN runs AS r "
        "USING (run) ORDER BY ALL"
    ).fetchall()
    if not passes:
        return None
    sent = db.sql("SELECT run, worker, t / 1e9 FROM reports ORDER BY ALL").fetchall()
    rows = list(dict.fromkeys((run, worker) for run, worker, *_ in passes))
    labels = run_labels(db)
    figure = _figure(1, min(1.0 + 0.45 * len(rows), 12.0))
    axes = figure.subplots()
    for index, (run, worker) in enumerate(rows):
        mine = [p for p in passes if (p[0], p[1]) == (run, worker)]
        waiting = [(wake, first - wake) for _, _, wake, first, _ in mine if first > wake]
        polling = [(first, end - first) for _, _, _, first, end in mine]
        axes.broken_barh(
            waiting,
            (index - 0.3, 0.6),
            color="#a6cee3",
            linewidth=0.5,
            edgecolor="#a6cee3",
            label="awake, waiting out its delay" if index == 0 else None,
        )
        axes.broken_barh(
            polling,
            (index - 0.3, 0.6),
            color="#1f78b4",
            linewidth=0.5,
            edgecolor="#1f78b4",
            label="awake, polling (and waiting for the host)" if index == 0 else None,
        )
        times = [t for r, w, t in sent if (r, w) == (run, worker)]
        axes.plot(
            times,
            [index + 0.42] * len(times),
            linestyle="none",
            marker="|",
            color="black",
            markersize=6,
            label="report sent" if index == 0 and times else None,
        )
    end = db.sql("SELECT max(end_ns) / 1e9 FROM runs").fetchall()[0][0]
    axes.set_xlim(0, end)
    axes.set_yticks(range(len(rows)))
    axes.set_yticklabels(
        [f"{labels[run]}: {worker}" if len(db.sources) > 1 else worker for run, worker in rows]
    )
    axes.set_ylim(-0.7, len(rows) - 0.3)
    axes.invert_yaxis()
    axes.set_title("Hinting worker state over time (blank: asleep until woken)")
    axes.set_xlabel("virtual time (s)")
    axes.grid(alpha=0.3, axis="x")
    figure.legend(fontsize="small", loc="outside lower center", ncol=3)
    return _save(figure, out_dir / "worker_timeline.png")


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def write_plots(db: LogDB, out_dir: Path) -> tuple[list[Path], list[str]]:
    """Every figure these logs support, as PNG files; and a note for each one left out."""
    written = [plot_memory(db, out_dir), plot_returned(db, out_dir)]
    notes = []
    lock = plot_lock_wait(db, out_dir)
    if lock is None:
        notes.append(f"lock_wait.png: no zone request lines (info level); {_DEBUG_HINT}")
    else:
        written.append(lock)
    timeline = plot_worker_timeline(db, out_dir)
    if timeline is None:
        notes.append("worker_timeline.png: no hinting worker lines (policy none?)")
    else:
        written.append(timeline)
    return written, notes


# -- the command -----------------------------------------------------------------------------
HELP = "analyse run logs: canned reports, your own SQL, plots"
DESCRIPTION = (
    "Read the logs of runs (run directories, log files, or sweep directories of runs) with "
    "DuckDB and print canned reports: memory returned to the host and time to 50/90/99%, "
    "zone-lock wait by requester and over time, the hinting worker's wake-ups, polls and batch "
    "fill, false OOMs and isolated memory, host discards, refaults and swap. Over several runs "
    "the reports are keyed by the factors that differ between their configs. --sql runs your "
    "own query against the view 'events' (see docs/log-schema.md). Exit 0, or 2 on bad input."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="*", type=Path, metavar="RUN_DIR|LOG|SWEEP_DIR", help="what to analyse"
    )
    parser.add_argument(
        "--report",
        dest="reports",
        action="append",
        choices=[*REPORT_NAMES, "all"],
        metavar="NAME",
        help=f"report to show, repeatable (default: {', '.join(DEFAULT_REPORTS)}; "
        f"also: {', '.join(n for n in REPORT_NAMES if n not in DEFAULT_REPORTS)}; or all)",
    )
    parser.add_argument("--sql", metavar="QUERY", help="run this query instead of the reports")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="write PNG figures into DIR")
    parser.add_argument(
        "--buckets", type=int, default=20, help="time buckets per run for *_over_time (20)"
    )
    parser.add_argument(
        "--per-run",
        action="store_true",
        help="over several runs, one row per run (default: averaged over seeds)",
    )
    parser.add_argument(
        "--list", action="store_true", help="list the reports, views and columns of 'events'"
    )


def _listing() -> dict[str, Any]:
    reports = guest_reports()
    columns = LogDB.columns_of(FIELDS)
    return {
        "reports": {report.name: f"{report.title}: {report.about}" for report in reports},
        "views": ["events", "runs", "policy", *VIEWS],
        "events_columns": columns,
    }


def _print_listing(console: Console) -> None:
    listing = _listing()
    table = Table(title="Reports (--report NAME)", title_justify="left")
    table.add_column("name")
    table.add_column("what")
    for name, about in listing["reports"].items():
        table.add_row(name, about)
    console.print(table)
    console.print("Views and tables for --sql: " + ", ".join(listing["views"]))
    columns = Table(title="Columns of the view 'events'", title_justify="left")
    columns.add_column("column")
    columns.add_column("type")
    for name, kind in listing["events_columns"].items():
        columns.add_row(name, kind)
    console.print(columns)


def command(args: argparse.Namespace) -> int:
    """``pagehint analyze``: 0, or 2 for bad input (a log, a path or a query)."""
    # Full-width tables even when piped (rich would fold them to 80 columns), as `pagehint` does.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    if args.list:
        if args.json:
            print(_dumps(_listing()))
        else:
            _print_listing(console)
        return 0
    if not args.paths:
        print(
            "pagehint analyze: bad input: give at least one RUN_DIR, LOG or SWEEP_DIR",
            file=sys.stderr,
        )
        return 2
    try:
        db = open_run(args.paths, buckets=args.buckets)
    except (LogError, ValueError) as error:
        print(f"pagehint analyze: bad input: {error}", file=sys.stderr)
        return 2
    with db:
        for warning in db.warnings:
            print(f"pagehint analyze: warning: {warning}", file=sys.stderr)
        if args.sql is not None:
            return _run_sql(db, args.sql, args.json, console)
        names = list(DEFAULT_REPORTS)
        if args.reports:
            names = (
                list(REPORT_NAMES) if "all" in args.reports else list(dict.fromkeys(args.reports))
            )
        document: dict[str, Any] = {
            "runs": _jsonable(db.runs)["rows"],
            "factors": db.factors,
            "replicates": db.replicates if db.replicated else [],
            "warnings": db.warnings,
            "reports": {},
        }
        # Many factors (runs of unrelated configs) make wide tables: the overview shows them.
        crowded = not args.json and len(db.factors) > 3 and not db.replicated
        for name in names:
            report = db.reports[name]
            by_factors = not args.per_run and (name == "overview" or not crowded)
            relation = db.report(name, by_factors=by_factors)
            notes = report_notes(db, name)
            if args.json:
                document["reports"][name] = {
                    "title": report.title,
                    **_jsonable(relation),
                    "notes": notes,
                }
                continue
            ids = [*db.factors_all, "run", *report.keys]
            title = f"{report.title} ({name})"
            console.print(table_of(title, relation, ids=ids, series=report.series))
            for note in notes:
                console.print(f"  note: {note}", highlight=False)
            console.print()
        if args.plot is not None:
            try:
                written, skipped = write_plots(db, args.plot)
            except PlotError as error:
                print(f"pagehint analyze: {error}", file=sys.stderr)
                return 2
            document["plots"] = [str(path) for path in written]
            document["plots_skipped"] = skipped
            if not args.json:
                for path in written:
                    console.print(f"plot: {path}", highlight=False)
                for note in skipped:
                    console.print(f"plot left out: {note}", highlight=False)
        if args.json:
            print(_dumps(document))
    return 0


def _run_sql(db: LogDB, query: str, as_json: bool, console: Console) -> int:
    try:
        relation = db.sql(query)
        if relation is None:  # a statement with no result (CREATE, SET...)
            return 0
        if as_json:
            print(_dumps({**_jsonable(relation), "warnings": db.warnings}))
        else:
            console.print(table_of("query", relation))
    except duckdb.Error as error:
        print(f"pagehint analyze: bad input: the query failed: {error}", file=sys.stderr)
        return 2
    return 0
