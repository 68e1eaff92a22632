"""`pagehint analyze --plot` on a sweep of 36 runs (and a compare of two): the figures stay
readable.

What a reader needs of them: legends beside the panels, never over a panel or the title; a
legend entry per value of a factor, not per run; panels big enough to read; and no line that
cannot be seen (a lone point is a marker) nor a time axis of a single instant.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING

import pytest

from pagehint.actors.analysis import open_run
from pagehint.runtime.harness.logdb import LogDB

from conftest import CONFIGS, log_records, run_cli, run_sweep

pytest.importorskip("matplotlib")

import numpy as np
from matplotlib.legend import Legend
from matplotlib.lines import Line2D

from pagehint.actors.analysis.plots import FIGURES, returned_figure, sweep_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

VCPUS = (1, 2, 4)  # three panels: two abreast, and one alone below
POLICIES = ("none", "scanner", "page_reporting", "bitmap")
SEEDS = 3
# 3 x 4 x 3 seeds = 36 runs, short but long enough (1 ms samples) for memory to come back,
# at debug level for the zone-lock figure.
SWEEP = f"""
base = "{CONFIGS / "contention.toml"}"
seed = 3
replicates = {SEEDS}
paired = ["policy.name"]
[set]
"run.duration" = "10ms"
"run.sample_interval" = "1ms"
"run.baseline" = false
"guest.memory" = "1GiB"
"policy.delay" = "1ms"
"run.log_level" = "debug"
[grid]
"guest.vcpus" = {list(VCPUS)}
"policy.name" = {list(POLICIES)}
"""
# Legend entries besides one per factor value: the spread of the seeds, 50/90/99% markers.
EXTRA_ENTRIES = 4


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_sweep(tmp_path_factory.mktemp("sweep32"), SWEEP, workers=2)


@pytest.fixture(scope="module")
def db(sweep: Path) -> Iterator[LogDB]:
    with open_run(sweep) as opened:
        assert len(opened.sources) == len(VCPUS) * len(POLICIES) * SEEDS
        yield opened


@pytest.fixture(scope="module")
def figures(db: LogDB) -> dict[str, Figure]:
    """Every figure of the sweep, laid out as in its PNG."""
    drawn = {}
    for name, draw in FIGURES.items():
        figure = draw(db)
        assert not isinstance(figure, str), f"{name} left out: {figure}"
        figure.draw_without_rendering()  # lays it out, as saving it does
        drawn[name] = figure
    return drawn


def xdata(line: Line2D) -> list[float]:
    return [float(x) for x in np.asarray(line.get_xdata(), dtype=float)]


def legends(figure: Figure) -> list[Legend]:
    inside = [axes.get_legend() for axes in figure.axes]
    return [*figure.legends, *(legend for legend in inside if legend is not None)]


@pytest.mark.parametrize("name", list(FIGURES))
def test_legends_lie_beside_the_panels_and_the_title(figures: dict[str, Figure], name: str) -> None:
    figure = figures[name]
    (legend,) = legends(figure)
    box = legend.get_window_extent()
    for axes in figure.axes:  # the axes with their tick labels, axis labels and titles
        around = axes.get_tightbbox()
        assert around is not None and not box.overlaps(around), axes.get_title()
    for text in figure.texts:  # the title, a footnote
        assert not box.overlaps(text.get_window_extent()), text.get_text()


@pytest.mark.parametrize("name", list(FIGURES))
def test_a_legend_entry_per_factor_value_not_per_run(figures: dict[str, Figure], name: str) -> None:
    figure = figures[name]
    (legend,) = legends(figure)
    entries = [text.get_text() for text in legend.get_texts()]
    assert len(entries) <= len(VCPUS) + len(POLICIES) + EXTRA_ENTRIES
    assert not any("seed=" in entry for entry in entries)


@pytest.mark.parametrize("name", list(FIGURES))
def test_panels_keep_a_readable_size(figures: dict[str, Figure], name: str) -> None:
    figure = figures[name]
    for axes in figure.axes:
        box = axes.get_window_extent()
        assert box.width / figure.dpi >= 2 and box.height / figure.dpi >= 1.2


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_panel_shows_data_or_says_why_not(figures: dict[str, Figure], name: str) -> None:
    for axes in figures[name].axes:
        assert axes.has_data() or axes.texts, axes.get_title()


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_line_can_be_seen(figures: dict[str, Figure], name: str) -> None:
    """A line through one x has no length: it must be a marker. No axis spans nothing."""
    figure = figures[name]
    for axes in figure.axes:
        for low, high in (axes.get_xlim(), axes.get_ylim()):
            assert low != high
        for line in axes.get_lines():
            if len(set(xdata(line))) == 1:
                assert line.get_marker() not in (None, "None", "", " "), axes.get_title()


def test_the_memory_figures_pool_seeds_in_a_panel_per_vcpu_count(
    figures: dict[str, Figure],
) -> None:
    figure = figures["memory.png"]
    titles = [axes.get_title(loc="left") for axes in figure.axes]
    assert [title for title in titles if title] == [f"vcpus={n}" for n in VCPUS]
    for axes in figure.axes:  # a line per policy (and 50/90/99% markers), not per run
        assert len([line for line in axes.get_lines() if len(xdata(line)) > 1]) == 4


def test_the_sweep_figure_draws_the_mean_of_the_seeds_against_vcpus(
    sweep: Path, figures: dict[str, Figure]
) -> None:
    figure = figures["sweep.png"]
    throughput = figure.axes[0]
    assert throughput.get_title() == "workload throughput, faults/s per vCPU (millions)"
    lowest = figure.axes[-1]  # the panels share the x axis; the lowest ones label it
    assert [tick.get_text() for tick in lowest.get_xticklabels()] == [str(n) for n in VCPUS]
    assert lowest.get_xlabel() == "guest.vcpus"
    assert len(throughput.containers) == len(POLICIES)  # error bars per policy, not per run
    index = log_records(sweep / "index.jsonl")
    (legend,) = legends(figure)
    entry = {
        text.get_text(): handle
        for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }["policy=bitmap"]
    assert isinstance(entry, Line2D)
    (bitmap,) = [
        line
        for line in throughput.get_lines()
        if line.get_color() == entry.get_color() and line.get_marker() == "o"
    ]
    expected = [
        fmean(
            row["metrics"]["faults/s/vCPU"] / 1e6
            for row in index
            if row["params"] == {"guest.vcpus": vcpus, "policy.name": "bitmap"}
        )
        for vcpus in VCPUS
    ]
    assert np.asarray(bitmap.get_ydata()).tolist() == pytest.approx(expected)


def test_a_return_that_starts_at_the_last_sample_is_left_out_saying_why(tmp_path: Path) -> None:
    """Samples 10 ms apart in a 10 ms run: each run's peak is its last sample, so there is no
    time after it; a figure would have a time axis of one instant."""
    for policy in ("none", "page_reporting"):
        run_cli("contention.toml", tmp_path / policy, "run.duration=10ms", f"policy.name={policy}")
    with open_run([tmp_path / "none", tmp_path / "page_reporting"]) as two:
        why = returned_figure(two)
        assert isinstance(why, str) and "run.duration" in why
        assert not isinstance(sweep_figure(two), str)  # policy.name: a factor of two values
