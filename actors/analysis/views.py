"""Derived views over ``events``: samples, zone requests, reports and worker passes.

Each is created in the DuckDB connection of every log database ``open_run`` opens;
docs/log-schema.md documents their columns.
"""

from __future__ import annotations

from .fields import SAMPLE_FIELDS

_GUEST_OF = "regexp_replace(actor, '[^.]*$', 'guest')"  # 'g1.worker' -> 'g1.guest' (discard's)
_LAST_NAME = "regexp_extract(requester, '[^.]*$')"
# zone.requester_group in SQL: 'g1.vcpu12' -> 'vcpu'
_REQUESTER_CLASS = f"coalesce(nullif(rtrim({_LAST_NAME}, '0123456789'), ''), {_LAST_NAME})"

VIEWS: dict[str, str] = {
    "samples": f"""
        SELECT run, line, t, actor AS monitor, {_GUEST_OF} AS guest, {", ".join(SAMPLE_FIELDS)}
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
