"""The typed fields of the guest model's events: the columns of the ``events`` view.

docs/log-schema.md documents each one; a test keeps the two the same.
"""

from __future__ import annotations

from pagehint.runtime.harness.logdb import RUNTIME_FIELDS

SAMPLE_FIELDS = (
    "rss_pages",
    "free_pages",
    "isolated_pages",
    "reported_pages",
    "wasted_pages",
    "returned_pages",
    "swapped_pages",
    "pcp_pages",
    "lent_pages",
    "total_pages",
    "lock_queue",
)
_ZONE = {"requester": "VARCHAR", "order": "BIGINT"}
_WAIT = {"pfns": "BIGINT[]", "wait_ns": "BIGINT", "queued": "BIGINT"}
GUEST_FIELDS: dict[str, dict[str, str]] = {
    "sample": dict.fromkeys(SAMPLE_FIELDS, "BIGINT"),
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
    "oom_kill": {
        "region": "BIGINT",
        "order": "BIGINT",
        "pages": "BIGINT",
        "victim": "VARCHAR",
        "false_oom": "BOOLEAN",
    },
    "phase": {"index": "BIGINT", "name": "VARCHAR", "task": "BOOLEAN"},
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
    "run_warning": {"message": "VARCHAR"},
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
        "cpu_time_ns": "JSON",
        "hinting_cpu_ns": "BIGINT",
        "phases": "JSON",
        "warnings": "JSON",
        "invariant_violations": "BIGINT",
        "guests": "JSON",
    },
}
FIELDS: dict[str, dict[str, str]] = RUNTIME_FIELDS | GUEST_FIELDS
