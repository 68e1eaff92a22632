"""PNG figures of the guest model's logs (``pagehint analyze --plot DIR``), with matplotlib."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pagehint.protocol.units import format_duration
from pagehint.runtime.errors import PagehintError
from pagehint.runtime.harness.logdb import LogDB

from .reports import DEBUG_HINT
from .tables import run_labels

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


def _per_run_sql(db: LogDB, report: str) -> str:
    """A canned report's query, one row per run (the figures draw each run)."""
    return db.report_sql(report, by_factors=False)


def plot_memory(db: LogDB, out_dir: Path) -> Path:
    """Host RSS and free-but-backed memory (not yet returned) over time, one line per run."""
    return_over_time, returned = _per_run_sql(db, "return_over_time"), _per_run_sql(db, "return")
    series = _by_run(
        db.sql(
            f"SELECT run, t_s, rss_bytes, free_backed_bytes FROM ({return_over_time}) "
            "ORDER BY run, t_s"
        ).fetchall()
    )
    marks = {
        row[0]: row[1:]
        for row in db.sql(
            f"SELECT run, peak_at_s, returnable_peak_bytes, t50_s, t90_s, t99_s FROM ({returned})"
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
    return_over_time, returned = _per_run_sql(db, "return_over_time"), _per_run_sql(db, "return")
    rows = db.sql(
        f"""SELECT o.run, o.t_s - r.peak_at_s,
            100 * (1 - o.free_backed_bytes / r.returnable_peak_bytes)
        FROM ({return_over_time}) AS o JOIN ({returned}) AS r USING (run)
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
        notes.append(f"lock_wait.png: no zone request lines (info level); {DEBUG_HINT}")
    else:
        written.append(lock)
    timeline = plot_worker_timeline(db, out_dir)
    if timeline is None:
        notes.append("worker_timeline.png: no hinting worker lines (policy none?)")
    else:
        written.append(timeline)
    return written, notes
