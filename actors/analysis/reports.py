"""The canned reports of ``pagehint analyze``: each one's SQL over the views, and beside it
the notes a reader needs on the logs at hand (what is missing from them, and why).

Numbers are recomputed from the log, where it can by the definitions ``scenario/outcomes.py``
uses for summary.json, and the ``return`` report shows both side by side. Percentiles here are
exact (nearest rank), where the summary's come from log-bucketed histograms (within 4.5%).
"""

from __future__ import annotations

from collections.abc import Sequence

from pagehint.protocol.units import PAGE_SIZE
from pagehint.runtime.harness.logdb import LogDB, Report

DEBUG_HINT = "rerun with --set run.log_level=debug"


def _info_runs(db: LogDB) -> list[str]:
    return [
        row[0] for row in db.sql("SELECT run FROM runs WHERE NOT debug ORDER BY run").fetchall()
    ]


def _runs(runs: Sequence[str]) -> str:
    """A list of runs for a note: all of them, or the first few."""
    return ", ".join(runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")


def _runs_without(db: LogDB, event: str) -> list[str]:
    return sorted({source.run for source in db.sources} - db.runs_with(event))


def _unfinished_notes(db: LogDB) -> list[str]:
    unfinished = _runs_without(db, "run_end")
    if not unfinished:
        return []
    return [
        f"no run_end line (the run did not finish), so the summary_* columns are "
        f"blank: {_runs(unfinished)}"
    ]


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
            sum(wasted_pages + coalesce(swapped_pages, 0)) AS held
        FROM sample_series GROUP BY run, t
    ), peak AS (
        SELECT run, max(held) AS peak, max(rss) AS rss_peak,
            arg_max(rss, t) AS rss_end, arg_max(wasted, t) AS wasted_end
        FROM tot GROUP BY run
    ), peak_at AS (
        SELECT tot.run, min(tot.t) AS peak_at
        FROM tot JOIN peak ON tot.run = peak.run AND tot.held = peak.peak GROUP BY tot.run
    ), levels AS (
        SELECT tot.run,
            {
    ", ".join(
        f"min(tot.t) FILTER (WHERE tot.t >= peak_at.peak_at "
        f"AND tot.held * 100 <= peak.peak * {100 - int(level)}) AS t{level}"
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


def _return_notes(db: LogDB) -> list[str]:
    notes = _unfinished_notes(db)
    mismatched = [
        row[0]
        for row in db.sql(
            f"SELECT run FROM ({db.reports['return'].sql}) WHERE NOT matches_summary"
        ).fetchall()
    ]
    if mismatched:
        notes.append(
            f"t50/t90/t99 differ from the run_end summary in {_runs(mismatched)}: both measure "
            "the fall of free memory the host holds (sample lines' wasted_pages + "
            "swapped_pages) from its peak, so a difference means samples are missing from the log"
        )
    return notes


_RETURN_OVER_TIME = f"""
    SELECT run, round(t / 1e9, 6) AS t_s,
        sum(rss_pages) * {PAGE_SIZE} AS rss_bytes,
        sum(wasted_pages) * {PAGE_SIZE} AS free_backed_bytes,
        sum(wasted_pages + coalesce(swapped_pages, 0)) * {PAGE_SIZE} AS returnable_bytes,
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


def _lock_wait_notes(db: LogDB) -> list[str]:
    info = _info_runs(db)
    if not info:
        return []
    return [
        f"no rows for info-level logs ({_runs(info)}): zone-lock waits come from the "
        f"debug zone_alloc/zone_free/zone_work lines; {DEBUG_HINT}"
    ]


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
            -- a design's fill_ratio (actors/designs/): entries of its capacity; the scanner
            -- also counts pages against its batch (64 MiB), whichever is fuller
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


def _worker_notes(db: LogDB) -> list[str]:
    silent = _runs_without(db, "worker_wake")
    if not silent:
        return []
    return [
        f"no hinting worker lines (policy none, or reporting not negotiated with the "
        f"host) in {_runs(silent)}"
    ]


_OOM = f"""
    WITH failed AS (
        -- a failed zone allocation is not yet an OOM: a THP falls back, a refill drains the
        -- per-CPU lists and retries; only an oom_kill line is a kill, as summary.json counts
        SELECT run, count(*) AS alloc_failures,
            count(*) FILTER (WHERE false_oom) AS false_alloc_failures
        FROM events WHERE event = 'alloc_failed' GROUP BY run
    ), kills AS (
        SELECT run, count(*) AS oom_kills,
            count(*) FILTER (WHERE false_oom) AS false_ooms,
            min(t) FILTER (WHERE false_oom) AS first_false_oom_t
        FROM events WHERE event = 'oom_kill' GROUP BY run
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
        coalesce(failed.false_alloc_failures, 0) AS false_alloc_failures,
        coalesce(kills.oom_kills, 0) AS oom_kills,
        coalesce(kills.false_ooms, 0) AS false_ooms,
        round(kills.first_false_oom_t / 1e9, 6) AS first_false_oom_s,
        coalesce(peak.peak, 0) * {PAGE_SIZE} AS peak_isolated_bytes,
        sampled.isolated * {PAGE_SIZE} AS peak_isolated_sampled_bytes,
        summary.peak_isolated_bytes AS summary_peak_isolated_bytes,
        summary.false_ooms AS summary_false_ooms
    FROM runs LEFT JOIN failed USING (run) LEFT JOIN kills USING (run)
        LEFT JOIN peak USING (run) LEFT JOIN sampled USING (run) LEFT JOIN summary USING (run)
    ORDER BY runs.run"""


def _oom_notes(db: LogDB) -> list[str]:
    return [
        "false_alloc_failures are failed zone allocations isolated memory would have served; "
        "most end in a THP fallback or a retry after drain_all_pages, so false_ooms counts "
        "oom_kill lines only, as summary.json does",
        "peak_isolated_bytes replays worker_poll (isolated) and report_done (put back) "
        "lines, summed over guests' own peaks like summary.json; the sampled peak only "
        "sees sample instants",
        *_unfinished_notes(db),
    ]


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


def _host_notes(db: LogDB) -> list[str]:
    notes = []
    info = _info_runs(db)
    if info:
        notes.append(
            f"discards are blank for info-level logs ({_runs(info)}): discard lines are "
            f"debug; {DEBUG_HINT}"
        )
    notes.append(
        "refaults, swap-ins and swapped bytes are end-of-run totals from the run_end line "
        "(no line is logged per refault or swap); discarded_bytes counts whole discarded "
        "ranges, touched or not, where summary.json's memory_returned_bytes counts only "
        "pages that were backed"
    )
    return [*notes, *_unfinished_notes(db)]


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
            notes=_return_notes,
            about="peak of returnable memory (free in the guest, held by the host: resident or "
            "swapped) and seconds from it until that memory had fallen by 50/90/99% of the "
            "peak, from sample lines, beside the run_end summary",
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
            notes=_lock_wait_notes,
            about="exact percentiles of wait_ns over zone request lines (debug level)",
        ),
        Report(
            "lock_wait_over_time",
            "Zone-lock wait over time",
            _lock_wait_over_time(buckets),
            keys=("bucket", "from_s"),
            series=True,
            notes=_lock_wait_notes,
            about=f"{buckets} equal time buckets per run (debug level)",
        ),
        Report(
            "worker",
            "Hinting worker: wake-ups, polls, batch fill",
            _WORKER,
            keys=("worker",),
            notes=_worker_notes,
            about="passes from worker_wake to worker_sleep, polls, reports and their fill",
        ),
        Report(
            "oom",
            "False OOMs and isolated memory",
            _OOM,
            notes=_oom_notes,
            about="failed allocations, OOM kills, and the most memory isolated for hinting",
        ),
        Report(
            "host",
            "Host: discards, refaults, swap, faults",
            _HOST,
            notes=_host_notes,
            about="discard lines (debug), acknowledged reports, injected faults, and the "
            "run_end totals of refaults and swap",
        ),
    ]


REPORT_NAMES = tuple(report.name for report in guest_reports())
DEFAULT_REPORTS = tuple(name for name in REPORT_NAMES if not name.endswith("_over_time"))
