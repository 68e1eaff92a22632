"""Run logs (schema of every line, levels, header) and metrics (buckets, quantiles)."""

from __future__ import annotations

import io

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pagehint.runtime import LOG_SCHEMA_VERSION, Histogram, Metrics, RunLog, TimeSeries
from pagehint.runtime.metrics import bucket_bounds, bucket_of


@attrs.frozen
class Descriptor:
    pfn: int
    order: int


def test_every_line_starts_with_t_actor_level_event() -> None:
    sink = io.BytesIO()
    log = RunLog(sink, level="info")
    now = [0]
    log.use_clock(lambda: now[0])
    log.write_header(seed=3, config_hash="abc")
    now[0] = 1_500
    log.logger("zone").info("lock_wait", wait_ns=20, descriptor=Descriptor(512, 9))
    header, line = (orjson.loads(raw) for raw in sink.getvalue().splitlines())
    assert list(header)[:4] == ["t", "actor", "level", "event"]
    assert header["event"] == "header" and header["schema"] == LOG_SCHEMA_VERSION
    assert header["seed"] == 3 and header["trio"] and header["pagehint"]
    assert line == {
        "t": 1_500,
        "actor": "zone",
        "level": "info",
        "event": "lock_wait",
        "wait_ns": 20,
        "descriptor": {"type": "Descriptor", "pfn": 512, "order": 9},
    }


def test_debug_lines_are_dropped_at_info_and_kept_at_debug() -> None:
    quiet, loud = io.BytesIO(), io.BytesIO()
    RunLog(quiet, level="info").logger("a").debug("detail")
    RunLog(loud, level="debug").logger("a").debug("detail")
    assert quiet.getvalue() == b""
    assert b'"event":"detail"' in loud.getvalue()


def test_console_copy_is_readable_and_file_keeps_json() -> None:
    sink, console = io.BytesIO(), io.StringIO()
    log = RunLog(sink, level="debug", console=console, console_level="info")
    log.logger("host").info("discard", pages=512)
    log.logger("host").debug("noise")
    assert "host] discard" in console.getvalue() and "pages=512" in console.getvalue()
    assert "noise" not in console.getvalue()
    assert sink.getvalue().count(b"\n") == 2


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log level must be one of"):
        RunLog(io.BytesIO(), level="verbose")


@given(st.integers(min_value=0, max_value=2**62))
def test_bucket_holds_its_value_within_a_small_relative_error(value: int) -> None:
    low, high = bucket_bounds(bucket_of(value))
    assert low <= value < high
    assert (high - low) <= max(1, low // 16)


def test_histogram_quantiles() -> None:
    histogram = Histogram()
    for value in range(1, 1001):
        histogram.record(value)
    assert histogram.count == 1000 and histogram.min == 1 and histogram.max == 1000
    assert abs(histogram.quantile(0.5) - 500) <= 500 * 0.05
    assert abs(histogram.quantile(0.99) - 990) <= 990 * 0.05
    assert histogram.quantile(1.0) == 1000
    with pytest.raises(ValueError):
        histogram.quantile(1.5)


def test_time_series_samples_at_most_once_per_interval() -> None:
    series = TimeSeries(interval_ns=100)
    for t in range(0, 1000, 10):
        series.record(t, t)
    assert [t for t, _ in series.samples] == list(range(0, 1000, 100))


def test_metrics_registry_refuses_a_name_of_another_kind() -> None:
    metrics = Metrics()
    metrics.counter("zone.requests").add(3)
    with pytest.raises(TypeError, match="is a Counter"):
        metrics.histogram("zone.requests")
    assert metrics.summary() == {"zone.requests": 3}


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(min_value=-5, max_value=1 << 40), max_size=3000),
    merged=st.lists(st.integers(min_value=0, max_value=5000), max_size=50),
)
def test_a_histogram_that_folds_late_equals_one_bucketed_at_once(
    values: list[int], merged: list[int]
) -> None:
    """Recording counts exact values and buckets them later (past 1024 distinct values, or
    when read): every figure is what bucketing each sample at once gives."""
    histogram, other = Histogram(), Histogram()
    for value in values:
        histogram.record(value)
    for value in merged:
        other.record(value)
    histogram.merge(other)
    everything = values + merged
    buckets: dict[int, int] = {}
    for value in everything:
        buckets[bucket_of(value)] = buckets.get(bucket_of(value), 0) + 1
    assert histogram.buckets == buckets
    assert histogram.count == len(everything) and histogram.total == sum(everything)
    if everything:
        assert (histogram.min, histogram.max) == (min(everything), max(0, max(everything)))
