"""PNG figures of the guest model's logs (``pagehint analyze --plot DIR``), with matplotlib.

A sweep of dozens of runs must stay readable, so no figure draws a line per run of a sweep: the
runs that differ only in their seed are pooled into one line (their mean, with a band or bars
from the least to the most), a figure with many lines is split into panels by one factor, lines
are told apart by colour (a factor) and line style (another), and every legend sits outside the
axes. A single run, or runs of unrelated configs, get a line each.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import cycle, pairwise
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING, Any

from pagehint.protocol.units import format_duration
from pagehint.runtime.errors import PagehintError
from pagehint.runtime.harness.logdb import LogDB, quote_name

from .reports import DEBUG_HINT
from .tables import factor_names, run_labels

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import LineStyleType


class PlotError(PagehintError):
    """Plots were asked for and cannot be drawn (matplotlib is missing)."""


_WIDTH = 12.0  # inches: room for the panels and, right of them, the legend
_MAX_LINES = 6  # more lines than this in one panel: one panel per value of a factor
_MAX_FACTORS = 3  # more differing keys than this, and no seeds: runs of unrelated configs
_LINESTYLES: tuple[LineStyleType, ...] = ("-", "--", ":", "-.")
_SIZE_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("bytes", 1))
_TIME_UNITS = (("s", 1e9), ("ms", 1e6), ("us", 1e3), ("ns", 1))
_COUNT_UNITS = (("millions", 1e6), ("thousands", 1e3), ("", 1))


def _figure(rows: int, height: float) -> Figure:
    try:
        import matplotlib
    except ImportError:
        raise PlotError(
            "--plot needs matplotlib, which is not installed: pip install 'pagehint[plot]'"
        ) from None
    matplotlib.use("Agg")  # headless: PNG files, never a window
    from matplotlib.figure import Figure

    return Figure(figsize=(_WIDTH, height * rows + 1), layout="constrained")


def _unit(largest: float, units: Sequence[tuple[str, float]]) -> tuple[float, str]:
    """The largest unit ``largest`` fills at least once, so ticks read 1.5 GiB, not 1.6e9."""
    for name, scale in units:
        if largest >= scale:
            return scale, name
    return units[-1][1], units[-1][0]


def _by_run(rows: Iterable[tuple[Any, ...]]) -> dict[str, list[tuple[Any, ...]]]:
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row[1:])
    return grouped


def _per_run_sql(db: LogDB, report: str) -> str:
    """A canned report's query, one row per run (the figures pool runs themselves)."""
    return db.report_sql(report, by_factors=False)


# -- which runs make a line, and where it goes ------------------------------------------------
def _is_sweep(db: LogDB) -> bool:
    """Runs of one experiment, whose factors say what each run is (not unrelated configs)."""
    return bool(db.factors) and (db.replicated or len(db.factors) <= _MAX_FACTORS)


def _run_rows(db: LogDB, keys: Sequence[str]) -> list[tuple[Any, ...]]:
    """Each run and its values of ``keys``, ordered by the runs' factors then name."""
    order = ", ".join([*(quote_name(key) for key in db.factors_all), "run"])
    columns = "".join(f", {quote_name(key)}" for key in keys)
    return db.sql(f"SELECT run{columns} FROM runs ORDER BY {order}").fetchall()


def _distinct(db: LogDB, key: str) -> list[Any]:
    """The values factor ``key`` takes, in order."""
    found = db.sql(f"SELECT DISTINCT {quote_name(key)} FROM runs ORDER BY 1").fetchall()
    return [row[0] for row in found]


def _numeric(values: Iterable[Any]) -> bool:
    return all(isinstance(value, int | float) and not isinstance(value, bool) for value in values)


def _widest(keys: Iterable[str], values: Mapping[str, Sequence[Any]]) -> str:
    """The numeric factor of ``keys`` with the most ``values`` (else the one with most)."""
    return max(keys, key=lambda key: (_numeric(values[key]), len(values[key])))


@dataclass(frozen=True)
class _Series:
    """Runs drawn as one line: a combination of factors, its seeds pooled (or a lone run)."""

    panel: int
    colour: str
    style: str
    runs: tuple[str, ...]


@dataclass(frozen=True)
class _Layout:
    """How a figure's runs become lines: their panels, colours and line styles."""

    panels: tuple[str, ...]  # a title per panel; one panel: ''
    series: tuple[_Series, ...]
    colours: Mapping[str, Any]  # colour label -> colour
    styles: Mapping[str, LineStyleType]  # style label -> line style; '': not in legends
    pooled: str  # what the band or bars around a line span ('' without seeds to pool)

    def look(self, series: _Series) -> dict[str, Any]:
        return {"color": self.colours[series.colour], "linestyle": self.styles[series.style]}

    def legend(self, figure: Figure, extra: Sequence[Artist] = (), *, spread: str = "band") -> None:
        """One legend for the figure, right of every panel: an entry per colour, per line
        style and per ``extra`` marker, however many runs there are; and what the spread of
        pooled runs looks like: a band, error bars, or '' (not drawn)."""
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        handles: list[Artist] = [
            Line2D([], [], color=colour, label=label) for label, colour in self.colours.items()
        ]
        handles += [
            Line2D([], [], color="black", linestyle=style, label=label)
            for label, style in self.styles.items()
            if label
        ]
        if self.pooled and spread == "bars":
            bar = Line2D([], [], color="grey", marker="|", markersize=12, linestyle="none")
            bar.set_label(self.pooled)
            handles.append(bar)
        elif self.pooled and spread == "band":
            handles.append(Patch(color="grey", alpha=0.3, label=self.pooled))
        handles += extra
        figure.legend(
            handles=handles,
            loc="outside right upper",
            fontsize="small",
            ncols=1 + len(handles) // 30,
        )


def _layout(
    db: LogDB,
    *,
    x: str | None = None,
    facets: bool = True,
    styled: bool = True,
    known: Mapping[str, list[Any]] | None = None,
) -> _Layout:
    """Lines for ``db``'s runs: one per combination of the factors other than ``x``, pooling
    seeds. Past ``_MAX_LINES`` of them (and ``facets``), a panel per value of one factor: the
    numeric one with most values, as its values change the scale most. The other factors
    colour the lines, but (``styled``) the one of fewest values sets their line style.
    ``known``: the factors' values (``_distinct``) where the caller has them already."""
    keys = [key for key in db.factors if key != x] if _is_sweep(db) else []
    rows = _run_rows(db, keys)
    if not keys and not db.replicated and x is None:  # a run, or unrelated configs: a line each
        labels = run_labels(db)
        return _Layout(
            panels=("",),
            series=tuple(_Series(0, labels[run], "", (run,)) for run, *_ in rows),
            colours=_palette([labels[run] for run, *_ in rows]),
            styles={"": "-"},
            pooled="",
        )
    groups: dict[tuple[Any, ...], list[str]] = {}
    for run, *combination in rows:
        groups.setdefault(tuple(combination), []).append(run)
    known = known or {}
    distinct = {key: known[key] if key in known else _distinct(db, key) for key in keys}
    facet = None
    if facets and len(keys) > 1 and len(groups) > _MAX_LINES:
        facet = _widest(keys, distinct)
    rest = [key for key in keys if key != facet]
    style = None
    if styled and len(rest) > 1:
        fewest = min(rest, key=lambda key: len(distinct[key]))
        style = fewest if len(distinct[fewest]) <= len(_LINESTYLES) else None
    names = factor_names(db.factors_all)

    def named(key: str | None, at: Mapping[str, Any]) -> str:
        return f"{names[key]}={at[key]}" if key is not None else ""

    series = []
    for values, runs in groups.items():
        at = dict(zip(keys, values, strict=True))
        colour = ", ".join(named(key, at) for key in rest if key != style)
        series.append(
            _Series(
                panel=distinct[facet].index(at[facet]) if facet is not None else 0,
                colour=colour or ("mean of the seeds" if db.replicated else "runs"),
                style=named(style, at),
                runs=tuple(runs),
            )
        )
    panels = [named(facet, {facet: value}) for value in distinct[facet]] if facet else [""]
    styles = dict.fromkeys(one.style for one in series)
    return _Layout(
        panels=tuple(panels),
        series=tuple(series),
        colours=_palette(list(dict.fromkeys(one.colour for one in series))),
        styles=dict(zip(styles, _LINESTYLES, strict=False)),
        pooled="least to most of the seeds" if db.replicated else "",
    )


def _palette(labels: Sequence[str]) -> dict[str, Any]:
    """A colour per label: tab10's, tab20's past ten, evenly spaced viridis past twenty."""
    from matplotlib import colormaps

    if len(labels) > 20:
        cmap = colormaps["viridis"]
        return {label: cmap(index / (len(labels) - 1)) for index, label in enumerate(labels)}
    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(index) for index, label in enumerate(labels)}


def _panels(
    layout: _Layout, rows: int, height: float, xlabel: str
) -> tuple[Figure, list[list[Axes]]]:
    """A figure with a block of ``rows`` stacked axes per panel of ``layout``, two blocks
    abreast when there are several; all share the x axis, which each column's lowest axes
    label."""
    count = len(layout.panels)
    across = min(count, 2)
    down = -(-count // across)
    figure = _figure(down * rows, height if count == 1 else min(height, 2.6))
    grid = figure.subplots(down * rows, across, sharex=True, squeeze=False)
    blocks = [
        [grid[(index // across) * rows + row][index % across] for row in range(rows)]
        for index in range(count)
    ]
    used = {id(axes) for block in blocks for axes in block}
    for spare in [axes for axes in grid.flat if id(axes) not in used]:  # an odd panel's neighbour
        figure.delaxes(spare)
    for column in range(across):
        lowest = blocks[column::across][-1][-1]
        lowest.xaxis.set_tick_params(labelbottom=True)  # a spare may have been below it
        lowest.set_xlabel(xlabel)
    for title, block in zip(layout.panels, blocks, strict=True):
        for axes in block:
            axes.grid(alpha=0.3)
        if title:
            block[0].set_title(title, loc="left", fontweight="bold", fontsize="medium")
    return figure, blocks


def _in_units(
    layout: _Layout, points: Mapping[str, Sequence[tuple[float, float]]]
) -> tuple[dict[str, list[tuple[float, float]]], list[tuple[float, str]]]:
    """``points`` (bytes) in the unit each panel's largest value fills; and each panel's
    (scale, unit): a sweep's panels differ in scale (64 vCPUs hold more than 1)."""
    panel_of = {run: line.panel for line in layout.series for run in line.runs}
    largest = [0.0] * len(layout.panels)
    for run, found in points.items():
        panel = panel_of[run]
        largest[panel] = max(largest[panel], *(y for _, y in found))
    scales = [_unit(top, _SIZE_UNITS) for top in largest]
    scaled = {
        run: [(x, y / scales[panel_of[run]][0]) for x, y in found] for run, found in points.items()
    }
    return scaled, scales


def _seconds(axes: Axes) -> None:
    """Virtual time ticks with their unit (2.5ms), as runs last from microseconds to minutes."""
    from matplotlib.ticker import FuncFormatter

    axes.xaxis.set_major_formatter(
        FuncFormatter(lambda value, _: format_duration(value * 1e9) if value else "0")
    )


def _pooled(
    points: Mapping[str, Sequence[tuple[float, float]]], runs: Iterable[str]
) -> list[tuple[float, float, float, float]]:
    """(x, mean, least, most) of the runs' y at each x any of them has."""
    at: dict[float, list[float]] = {}
    for run in runs:
        for x, y in points.get(run, ()):
            at.setdefault(x, []).append(y)
    return [(x, fmean(ys), min(ys), max(ys)) for x, ys in sorted(at.items())]


def _bars(axes: Axes, pooled: Sequence[tuple[float, float, float, float]], **look: Any) -> None:
    """The mean at each x as a point, with a bar from the least to the most: for x values far
    apart (a factor's), or a lone x, where a line would have no length to show."""
    axes.errorbar(
        [p[0] for p in pooled],
        [p[1] for p in pooled],
        yerr=[[p[1] - p[2] for p in pooled], [p[3] - p[1] for p in pooled]],
        marker="o",
        markersize=4,
        capsize=3,
        **look,
    )


def _line(axes: Axes, pooled: Sequence[tuple[float, float, float, float]], **look: Any) -> None:
    """The mean over x, in a band from least to most; a lone point as a marker with bars."""
    if len(pooled) == 1:
        _bars(axes, pooled, **look)
    elif pooled:
        xs = [p[0] for p in pooled]
        axes.plot(xs, [p[1] for p in pooled], **look)
        if any(p[2] != p[3] for p in pooled):
            lows, highs = [p[2] for p in pooled], [p[3] for p in pooled]
            axes.fill_between(xs, lows, highs, color=look["color"], alpha=0.2, linewidth=0)


def _title(figure: Figure, text: str) -> None:
    """The figure's title, from its left edge: centred, a long one would run under the
    legend at its right."""
    figure.suptitle(text, x=0.01, horizontalalignment="left")


def _empty(axes: Axes, why: str) -> None:
    """Why a panel has nothing drawn in it, where its data would be; and no y ticks, which
    would measure nothing."""
    from matplotlib.ticker import NullLocator

    text = "\n".join(textwrap.wrap(why, 32))
    axes.text(0.5, 0.7, text, horizontalalignment="center", transform=axes.transAxes)
    axes.yaxis.set_major_locator(NullLocator())
    axes.yaxis.set_minor_locator(NullLocator())


def _footnote(figure: Figure, text: str) -> None:
    """A note under every panel (constrained layout makes room for it)."""
    figure.supxlabel(text, fontsize="small", style="italic")


# -- the figures -------------------------------------------------------------------------------
_LEVEL_MARKERS = {"50": "v", "90": "s", "99": "D"}


def memory_figure(db: LogDB) -> Figure:
    """Host RSS and returnable memory (free in the guest, still held by the host: resident or
    swapped) over time, with markers where each run had 50/90/99% of its peak returned."""
    return_over_time, returned = _per_run_sql(db, "return_over_time"), _per_run_sql(db, "return")
    series = _by_run(
        db.sql(
            f"SELECT run, t_s, rss_bytes, returnable_bytes FROM ({return_over_time}) "
            "ORDER BY run, t_s"
        ).fetchall()
    )
    marks = {
        row[0]: row[1:]
        for row in db.sql(
            f"SELECT run, peak_at_s, returnable_peak_bytes, t50_s, t90_s, t99_s FROM ({returned})"
        ).fetchall()
    }
    layout = _layout(db)
    rss, rss_units = _in_units(
        layout, {run: [(r[0], r[1]) for r in rows] for run, rows in series.items()}
    )
    free, free_units = _in_units(
        layout, {run: [(r[0], r[2]) for r in rows] for run, rows in series.items()}
    )
    figure, blocks = _panels(layout, 2, 3.2, "virtual time")
    levels_drawn: set[str] = set()
    for line in layout.series:
        rss_axes, free_axes = blocks[line.panel]
        look = layout.look(line)
        _line(rss_axes, _pooled(rss, line.runs), **look)
        _line(free_axes, _pooled(free, line.runs), **look)
        for run in line.runs:
            peak_at, peak, *seconds = marks.get(run, (None, None, None, None, None))
            for level, after in zip(_LEVEL_MARKERS, seconds, strict=True):
                if after is not None and peak_at is not None and peak:
                    y = peak * (1 - int(level) / 100) / free_units[line.panel][0]
                    free_axes.plot(
                        peak_at + after,
                        y,
                        marker=_LEVEL_MARKERS[level],
                        color=look["color"],
                        markeredgecolor="black",
                        linestyle="none",
                    )
                    levels_drawn.add(level)
    _title(figure, "Host memory over time: what the host holds, and what it could get back")
    for (rss_axes, free_axes), (_, rss_unit), (_, free_unit) in zip(
        blocks, rss_units, free_units, strict=True
    ):
        rss_axes.set_ylabel(f"host RSS ({rss_unit})")
        free_axes.set_ylabel(f"free but held ({free_unit})")
        rss_axes.set_ylim(bottom=0)
        free_axes.set_ylim(bottom=0)
        _seconds(free_axes)
    _footnote(
        figure,
        "upper: host RSS of the guest(s); lower: free in the guest but still held by the host, "
        "resident or swapped (not yet returned), markers where a run had returned that share "
        "of its peak",
    )
    layout.legend(figure, _level_handles(levels_drawn))
    return figure


def _level_handles(levels: set[str]) -> list[Artist]:
    from matplotlib.lines import Line2D

    return [
        Line2D(
            [],
            [],
            marker=marker,
            color="grey",
            markeredgecolor="black",
            linestyle="none",
            label=f"{level}% of its peak returned",
        )
        for level, marker in _LEVEL_MARKERS.items()
        if level in levels
    ]


def returned_figure(db: LogDB) -> Figure | str:
    """Share of the returnable peak given back, against time since that peak; when no run
    has a sample after its peak, why not."""
    return_over_time, returned = _per_run_sql(db, "return_over_time"), _per_run_sql(db, "return")
    rows = db.sql(
        f"""SELECT o.run, round(o.t_s - r.peak_at_s, 6),
            100 * (1 - o.returnable_bytes / r.returnable_peak_bytes)
        FROM ({return_over_time}) AS o JOIN ({returned}) AS r USING (run)
        WHERE r.returnable_peak_bytes > 0 AND o.t_s >= r.peak_at_s ORDER BY o.run, o.t_s"""
    ).fetchall()
    points = _by_run(rows)
    at_end = sorted(run for run, after in points.items() if len(after) == 1)
    for run in at_end:  # the peak was its last sample: no time after it to draw
        del points[run]
    if not points:
        return (
            "no run had a sample after its peak of returnable memory: run longer (run.duration)"
            if at_end
            else "no run had returnable memory (free but held by the host) to return"
        )
    layout = _layout(db)
    figure, blocks = _panels(layout, 1, 4.5, "time since that peak (virtual)")
    drawn = set()
    for line in layout.series:
        pooled = _pooled(points, line.runs)
        _line(blocks[line.panel][0], pooled, **layout.look(line))
        if pooled:
            drawn.add(line.panel)
    _title(figure, "Memory returned to the host after the peak of returnable memory")
    for panel, (axes,) in enumerate(blocks):
        for level in (50, 90, 99):
            axes.axhline(level, color="grey", linestyle=":", linewidth=1)
            axes.annotate(f"{level}%", (0, level), textcoords="offset points", xytext=(2, 2))
        axes.set_ylabel("returned (% of the peak)")
        axes.set_ylim(0, 102)
        axes.set_xlim(left=0)
        _seconds(axes)
        if panel not in drawn:
            _empty(axes, "no run here had a sample after a peak of returnable memory")
    if at_end:
        _footnote(
            figure,
            f"left out, their peak was their last sample (nothing after it): {len(at_end)} of "
            f"{len(db.sources)} runs",
        )
    layout.legend(figure)
    return figure


_BINS_PER_OCTAVE = 4


def lock_wait_figure(db: LogDB) -> Figure | str:
    """Histogram of zone-lock waits (log bins) by requester (line style); without debug lines,
    why it cannot be drawn."""
    totals = db.sql(
        "SELECT run, requester_class, count(*), count(*) FILTER (WHERE wait_ns <= 0) "
        "FROM zone_requests GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    if not totals:
        return f"no zone request lines (info level); {DEBUG_HINT}"
    bins = db.sql(
        f"SELECT run, requester_class, CAST(floor(log2(wait_ns) * {_BINS_PER_OCTAVE}) AS BIGINT)"
        " AS bin, count(*) FROM zone_requests WHERE wait_ns > 0 GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    counts: dict[tuple[str, str], dict[int, int]] = {
        (run, requester): {} for run, requester, *_ in totals
    }
    for run, requester, bin_index, count in bins:
        counts[run, requester][bin_index] = count
    requesters = sorted({requester for _, requester, *_ in totals})
    styles = dict(zip(requesters, cycle(_LINESTYLES), strict=False))
    layout = _layout(db, styled=False)
    xlabel = f"wait for the zone lock (log scale, {_BINS_PER_OCTAVE} bins per octave)"
    figure, blocks = _panels(layout, 1, 4.5, xlabel)
    most = [0.0] * len(blocks)
    for line in layout.series:
        for requester in requesters:
            found = [counts[run, requester] for run in line.runs if (run, requester) in counts]
            waited = [index for one in found for index in one]
            if not waited:  # no run of the line, or every request got the lock at once
                continue
            low, high = min(waited), max(waited)
            mean = [fmean(one.get(index, 0) for one in found) for index in range(low, high + 1)]
            edges = [2 ** (index / _BINS_PER_OCTAVE) for index in range(low, high + 2)]
            most[line.panel] = max(most[line.panel], *mean)
            blocks[line.panel][0].stairs(
                mean, edges, **{**layout.look(line), "linestyle": styles[requester]}
            )
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, NullFormatter

    with_unit = FuncFormatter(lambda value, _: format_duration(value))
    ylabel = "requests" + (" (mean of the seeds)" if layout.pooled else "")
    for (axes,), panel_most in zip(blocks, most, strict=True):
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(with_unit)  # tick labels carry the unit: ns, us, ms
        low_x, high_x = axes.get_xlim()
        if high_x < 20 * low_x:  # under about a decade there is no major tick: label minor ones
            axes.xaxis.set_minor_formatter(with_unit)
        else:
            axes.xaxis.set_minor_formatter(NullFormatter())
        if panel_most >= 100:  # a long tail needs a log axis to show; few counts read plain
            axes.set_yscale("log")
        axes.set_ylabel(ylabel + (" (log scale)" if panel_most >= 100 else ""))
        axes.grid(alpha=0.3, which="both")
        if not panel_most:
            _empty(axes, "no request waited for the lock")
    _title(figure, "Zone-lock wait: requests that queued for the lock, by requester")
    runs = len({run for run, *_ in totals})
    handles: list[Artist] = []
    for requester in requesters:
        requests = sum(n for _, r, n, _ in totals if r == requester)
        at_once = sum(zero for _, r, _, zero in totals if r == requester)
        label = f"{requester} ({requests:,} requests"
        label += f" in {runs} runs" if runs > 1 else ""
        label += f", {100 * at_once / requests:.1f}% did not wait)"
        handles.append(Line2D([], [], color="black", linestyle=styles[requester], label=label))
    layout.legend(figure, handles, spread="")
    return figure


def worker_timeline_figure(db: LogDB) -> Figure | str:
    """Each worker's passes: waiting out its delay, then polling; without a worker, why not."""
    passes = db.sql(
        "SELECT p.run, p.worker, p.wake_t / 1e9, coalesce(p.first_poll_t, p.sleep_t, r.end_ns)"
        " / 1e9, coalesce(p.sleep_t, r.end_ns) / 1e9 FROM worker_passes AS p JOIN runs AS r "
        "USING (run) ORDER BY ALL"
    ).fetchall()
    if not passes:
        return "no hinting worker lines (policy none?)"
    sent = db.sql("SELECT run, worker, t / 1e9 FROM reports ORDER BY ALL").fetchall()
    order = {run: index for index, (run,) in enumerate(_run_rows(db, ()))}
    rows = sorted(
        dict.fromkeys((run, worker) for run, worker, *_ in passes),
        key=lambda row: (order[row[0]], row[1]),
    )  # runs of one combination of factors next to each other
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
    axes.set_xlabel("virtual time")
    _seconds(axes)
    axes.grid(alpha=0.3, axis="x")
    figure.legend(fontsize="small", loc="outside lower center", ncols=3)
    return figure


_FINISHED = "no run finished (no run_end line)"


@dataclass(frozen=True)
class _Measure:
    """A number per run that a sweep is run to compare, for a panel of ``sweep.png``."""

    title: str
    sql: str  # over the run's run_end line (e) and its row of the return report (r)
    units: Sequence[tuple[str, float]]
    absent: str = _FINISHED  # why no run may have it


_MEASURES = (
    _Measure(
        "workload throughput, faults/s per vCPU",
        "CAST(e.workload->>'faults_per_s_per_vcpu' AS DOUBLE)",
        _COUNT_UNITS,
    ),
    _Measure("zone-lock wait, p99", "CAST(e.lock_wait_ns->>'p99' AS DOUBLE)", _TIME_UNITS),
    _Measure("CPU time spent hinting", "e.hinting_cpu_ns", _TIME_UNITS),
    _Measure("memory returned to the host", "e.memory_returned_bytes", _SIZE_UNITS),
    _Measure(
        "time to return 90% of the peak",
        "r.t90_s * 1e9",
        _TIME_UNITS,
        "no run returned 90% of its peak of returnable memory",
    ),
    _Measure("peak memory isolated for hinting", "e.peak_isolated_bytes", _SIZE_UNITS),
)


def sweep_figure(db: LogDB) -> Figure | str:
    """The measures a sweep compares against one of its factors (x: the numeric one with most
    values), a line per combination of the others; without factors, why it cannot be drawn."""
    if not _is_sweep(db):
        return "one run, or runs of unrelated configs: no factor to draw the measures against"
    values = {key: _distinct(db, key) for key in db.factors}
    x = _widest(db.factors, values)
    numeric = _numeric(values[x])
    # 1, 4, 16, 64 vCPUs evenly apart (a log axis); categories at 0, 1, 2...
    logarithmic = numeric and min(values[x]) > 0 and max(values[x]) >= 8 * min(values[x])
    spaced = [
        math.log2(value) if logarithmic else value if numeric else index
        for index, value in enumerate(values[x])
    ]
    position = dict(zip(values[x], spaced, strict=True))

    def unspaced(at: float) -> float:
        return float(2**at) if logarithmic else at

    rows = db.sql(
        f"SELECT runs.run, runs.{quote_name(x)}, {', '.join(m.sql for m in _MEASURES)} "
        "FROM runs LEFT JOIN (SELECT * FROM events WHERE event = 'run_end') AS e USING (run) "
        f"LEFT JOIN ({_per_run_sql(db, 'return')}) AS r USING (run)"
    ).fetchall()
    layout = _layout(db, x=x, facets=False, known=values)
    # lines side by side, not on top of one another where they agree
    width = 0.3 * min((b - a for a, b in pairwise(spaced)), default=1) / len(layout.series)
    figure = _figure(2, 3.2)
    grid = figure.subplots(2, 3, sharex=True)
    for column, (measure, axes) in enumerate(zip(_MEASURES, grid.flat, strict=True), start=2):
        largest = max((row[column] for row in rows if row[column] is not None), default=0)
        scale, unit = _unit(largest, measure.units)
        points = {
            row[0]: [(position[row[1]], row[column] / scale)]
            for row in rows
            if row[column] is not None
        }
        for index, line in enumerate(layout.series):
            shift = (index - (len(layout.series) - 1) / 2) * width
            pooled = [
                (unspaced(at + shift), mean, low, high)
                for at, mean, low, high in _pooled(points, line.runs)
            ]
            look = layout.look(line)
            if not numeric:  # categories: no line between them
                look["linestyle"] = "none"
            _bars(axes, pooled, **look)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        if points:
            axes.set_title(measure.title + (f" ({unit})" if unit else ""), fontsize="medium")
        else:
            axes.set_title(measure.title, fontsize="medium")
            _empty(axes, measure.absent)
    from matplotlib.ticker import NullLocator

    axes = grid.flat[0]
    if logarithmic:
        axes.set_xscale("log", base=2)
    axes.set_xticks([unspaced(at) for at in spaced], [str(value) for value in values[x]])
    axes.xaxis.set_minor_locator(NullLocator())
    if not numeric:
        axes.set_xlim(-0.5, len(values[x]) - 0.5)
    for axes in grid[-1]:
        axes.set_xlabel(x)
        for label in axes.get_xticklabels() if not numeric else ():  # names would run together
            label.set(rotation=30, horizontalalignment="right", rotation_mode="anchor")
    others = [key for key in db.factors if key != x]
    _title(
        figure,
        f"The sweep's measures against {x}"
        + (f", a line per {' x '.join(others)}" if others else "")
        + (" (mean of the seeds)" if layout.pooled else ""),
    )
    layout.legend(figure, spread="bars")
    return figure


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


# File name -> the figure, or why these logs cannot give it.
FIGURES: dict[str, Callable[[LogDB], Figure | str]] = {
    "memory.png": memory_figure,
    "returned.png": returned_figure,
    "lock_wait.png": lock_wait_figure,
    "worker_timeline.png": worker_timeline_figure,
    "sweep.png": sweep_figure,
}


def write_plots(db: LogDB, out_dir: Path) -> tuple[list[Path], list[str]]:
    """Every figure these logs support, as PNG files; and a note for each one left out."""
    written, notes = [], []
    for name, draw in FIGURES.items():
        drawn = draw(db)
        if isinstance(drawn, str):
            notes.append(f"{name}: {drawn}")
        else:
            written.append(_save(drawn, out_dir / name))
    return written, notes
