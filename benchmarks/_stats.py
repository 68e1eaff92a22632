"""Helpers shared by the benchmarks: interleaved repeats and min/median/max summaries.

The machines these run on are shared and noisy, so absolute times drift by tens of percent
between runs. Each repeat runs every variant one right after the other in the same process
(rotating which goes first), so all of them see the same machine state; ratios are computed
per repeat and then summarised, and every figure is reported as min / median / max.

Import as ``from _stats import ...``: the benchmarks are run as scripts
(``python benchmarks/<name>.py``), which puts this directory first on ``sys.path``.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

Spread = dict[str, float]  # {"min": .., "median": .., "max": ..}
STATS = ("min", "median", "max")

_T = TypeVar("_T")


def spread(values: Iterable[float]) -> Spread:
    """min / median / max of one figure over the repeats."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("spread() of no values")
    return dict(zip(STATS, (ordered[0], statistics.median(ordered), ordered[-1]), strict=True))


def interleave(
    variants: Mapping[str, Callable[[], _T]], repeats: int, *, warmup_rounds: int = 1
) -> dict[str, list[_T]]:
    """Run every variant once per repeat, back to back, rotating which goes first.

    ``warmup_rounds`` leading rounds warm caches (imports, structlog's logger cache) and are
    dropped; a benchmark whose single run lasts seconds can pass 0.
    """
    names = list(variants)
    samples: dict[str, list[_T]] = {name: [] for name in names}
    for round_number in range(repeats + warmup_rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            value = variants[name]()
            if round_number >= warmup_rounds:
                samples[name].append(value)
    return samples


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Element-wise ``numerators[i] / denominators[i]``: one ratio per repeat."""
    return [top / bottom for top, bottom in zip(numerators, denominators, strict=True)]


def relative_errors(values: Sequence[float], references: Sequence[float]) -> list[float]:
    """Element-wise ``|value - reference| / |reference|`` (0 when both are 0)."""
    errors = []
    for value, reference in zip(values, references, strict=True):
        if reference == 0:
            errors.append(0.0 if value == 0 else float("inf"))
        else:
            errors.append(abs(value - reference) / abs(reference))
    return errors


Targets = Mapping[str, tuple[float, str]]  # figure -> (bound, "max" or "min")


def target_met(targets: Targets, key: str, value: float) -> bool:
    bound, kind = targets[key]
    return value <= bound if kind == "max" else value >= bound


def target_note(targets: Targets, key: str, value: float) -> str:
    """For a figure with a target, whether the target is met (rich markup); else its name."""
    if key not in targets:
        return key
    bound, kind = targets[key]
    met = target_met(targets, key, value)
    sign = "<=" if kind == "max" else ">="
    return f"[{'green' if met else 'red'}]target {sign} {bound:g}: {'met' if met else 'MISSED'}"
