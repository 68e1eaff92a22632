"""pytest plugin (registered by entry point): async tests against actors in virtual time.

A test that asks for the ``actor_system`` fixture (or carries ``@pytest.mark.pagehint``) runs
under pagehint's virtual clock with reproducible scheduling, so ``await system.sleep_ns(...)``
of simulated seconds takes microseconds and a failing example replays exactly. The seed is
``@pytest.mark.pagehint(seed=N)``, else ``--pagehint-seed`` (default 0).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import trio

from .clock import SimClock, VirtualClock
from .determinism import deterministic_scheduling
from .log import MemoryLog
from .system import ActorSystem, open_actor_system

_FIXTURES_NEEDING_VIRTUAL_TIME = {"actor_system", "virtual_clock"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--pagehint-seed",
        type=int,
        default=0,
        help="seed for pagehint's virtual-time tests (default 0)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pagehint(seed=N): run this async test in pagehint virtual time with seed N"
    )


def _seed_of(item: pytest.Item) -> int:
    marker = item.get_closest_marker("pagehint")
    if marker is not None and "seed" in marker.kwargs:
        return int(marker.kwargs["seed"])
    return int(item.config.getoption("--pagehint-seed"))


def _run_in_virtual_time(
    fn: Callable[[], Any],
    *,
    seed: int,
    clock: trio.abc.Clock | None = None,
    instruments: Sequence[trio.abc.Instrument] = (),
) -> Any:
    """A runner for pytest-trio: our clock unless the test brought one of ours."""
    sim_clock = clock if isinstance(clock, SimClock) else VirtualClock()
    with deterministic_scheduling(seed):
        return trio.run(fn, clock=sim_clock, instruments=instruments)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _FIXTURES_NEEDING_VIRTUAL_TIME or item.get_closest_marker("pagehint"):
            runner = functools.partial(_run_in_virtual_time, seed=_seed_of(item))
            item.add_marker(pytest.mark.trio(run=runner), append=False)


@pytest.fixture
def pagehint_seed(request: pytest.FixtureRequest) -> int:
    """The seed of this test's run."""
    item = request.node
    assert isinstance(item, pytest.Item)
    return _seed_of(item)


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """The test's virtual clock (pytest-trio passes a requested clock fixture to trio.run)."""
    return VirtualClock()


@pytest.fixture
def pagehint_log() -> MemoryLog:
    """The run log of ``actor_system``, in memory, at debug level: ``.records(event)``."""
    return MemoryLog()


@pytest.fixture
async def actor_system(pagehint_seed: int, pagehint_log: MemoryLog) -> AsyncIterator[ActorSystem]:
    """A running actor system in virtual time; stopped cleanly after the test."""
    async with open_actor_system(seed=pagehint_seed, log=pagehint_log) as system:
        yield system
