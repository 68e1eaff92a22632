"""Reproducible runs: trio's scheduling switch, and per-actor random streams from one seed.

trio shuffles each batch of runnable tasks on purpose, so that code does not come to rely
on an order. A simulation must rely on one: the same seed must give the same log. trio's only
switch for that is private (the one pytest-trio and Hypothesis flip); this module is the one
place that touches it, and tests/test_determinism.py fails loudly if a trio release moves it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, MutableSequence
from contextlib import contextmanager
from typing import Any

import trio

_trio_run_module = trio._core._run

MAX_SEED = (1 << 64) - 1  # seeds are 0..2^64-1: the widest integer a log line holds (orjson)


def trio_supports_deterministic_scheduling() -> bool:
    """True when the private switch this module relies on is where we expect it."""
    return hasattr(_trio_run_module, "_ALLOW_DETERMINISTIC_SCHEDULING") and isinstance(
        getattr(_trio_run_module, "_r", None), random.Random
    )


@contextmanager
def deterministic_scheduling(seed: int) -> Iterator[None]:
    """Within the block, trio orders each batch of runnable tasks from ``seed`` alone."""
    if not trio_supports_deterministic_scheduling():
        raise RuntimeError(
            f"trio {trio.__version__} no longer has the private scheduling switch pagehint "
            "uses for reproducible runs; pin trio to a supported version (see pyproject.toml)"
        )
    previous_flag = _trio_run_module._ALLOW_DETERMINISTIC_SCHEDULING
    previous_stream = _trio_run_module._r
    _trio_run_module._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    _trio_run_module._r = _BatchOrder(seed)
    try:
        yield
    finally:
        _trio_run_module._ALLOW_DETERMINISTIC_SCHEDULING = previous_flag  # type: ignore[misc]
        _trio_run_module._r = previous_stream


class _BatchOrder(random.Random):
    """trio's batch-ordering stream, seeded. A virtual-time run's scheduler passes mostly run
    one task (the clock wakes one timer per pass), and ``Random.shuffle`` of fewer than two
    items draws nothing: skipping its Python body then orders, and draws, exactly the same."""

    def shuffle(self, x: MutableSequence[Any]) -> None:
        if len(x) > 1:
            super().shuffle(x)


def derive_seed(seed: int, *names: object) -> int:
    """A 64-bit seed from a run seed and names, identical in every process.

    Uses a cryptographic hash rather than ``hash()``, which varies with PYTHONHASHSEED.
    """
    text = "\x1f".join([str(seed), *map(str, names)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def stream_for(seed: int, *names: object) -> random.Random:
    """An independent random stream for one actor (or any named consumer) of a run."""
    return random.Random(derive_seed(seed, *names))
