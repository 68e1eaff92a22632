"""pytest plugin (registered by entry point): async tests against actors in virtual time.

A test that asks for the ``actor_system`` fixture (or carries ``@pytest.mark.pagehint``) runs
under pagehint's virtual clock with reproducible scheduling, so ``await system.sleep_ns(...)``
of simulated seconds takes microseconds and a failing example replays exactly. The seed is
``@pytest.mark.pagehint(seed=N)``, else ``--pagehint-seed`` (default 0).

A test that deadlocks (every task waits, and no timer, trio deadline, thread or I/O can wake
one) fails with ``DeadlockError`` naming what each actor waits on, instead of hanging.

The tests run through pytest-trio, which pagehint does not depend on (a simulator should not
pull in pytest): ``pip install 'pagehint[test]'`` brings it. Without it, such a test fails at
setup saying so.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import trio

from .clock import SimClock, VirtualClock
from .deadlock import watch_for_deadlock
from .determinism import deterministic_scheduling
from .log import MemoryLog
from .system import ActorSystem, open_actor_system

_FIXTURES_NEEDING_VIRTUAL_TIME = {"actor_system", "virtual_clock"}

NO_PYTEST_TRIO = (
    "pagehint's virtual-time tests (fixtures actor_system, virtual_clock; "
    "@pytest.mark.pagehint) run through pytest-trio, which is not installed or is disabled "
    "(-p no:trio): pip install pytest-trio, or pip install 'pagehint[test]'"
)


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
    __tracebackhide__ = True  # a failure shows the test, not the runner
    sim_clock = clock if isinstance(clock, SimClock) else VirtualClock()
    with deterministic_scheduling(seed):
        return trio.run(watch_for_deadlock, fn, clock=sim_clock, instruments=instruments)


def _needs_virtual_time(item: pytest.Item) -> bool:
    fixtures = set(getattr(item, "fixturenames", ()))
    return bool(fixtures & _FIXTURES_NEEDING_VIRTUAL_TIME or item.get_closest_marker("pagehint"))


def _has_pytest_trio(config: pytest.Config) -> bool:
    return config.pluginmanager.has_plugin("trio")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _has_pytest_trio(config):
        return  # the trio marker would be unknown; each such test fails at setup instead
    for item in items:
        if _needs_virtual_time(item):
            runner = functools.partial(_run_in_virtual_time, seed=_seed_of(item))
            item.add_marker(pytest.mark.trio(run=runner), append=False)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Without pytest-trio pytest fails such a test with no word of what to install."""
    if _needs_virtual_time(item) and not _has_pytest_trio(item.config):
        pytest.fail(NO_PYTEST_TRIO, pytrace=False)


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
