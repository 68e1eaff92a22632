"""The pytest plugin, used as a user would: a fresh suite with no conftest."""

from __future__ import annotations

import pytest

USER_SUITE = """
import attrs
import pytest
from pagehint.runtime import Actor, handles


@attrs.frozen
class Tick:
    pass


class Timer(Actor):
    @handles(Tick)
    async def tick(self, message):
        await self.sleep_ns(10**9)
        return self.now_ns


async def test_an_hour_of_virtual_time_is_instant(actor_system):
    timer = actor_system.spawn(Timer("timer"))
    for _ in range(3600):
        await timer.ask(Tick())
    assert actor_system.now_ns == 3600 * 10**9


@pytest.mark.pagehint(seed=99)
async def test_seed_from_marker(actor_system, pagehint_seed):
    assert pagehint_seed == 99 == actor_system.seed


async def test_log_fixture_sees_the_run(actor_system, pagehint_log):
    actor_system.log.info("hello", answer=42)
    (record,) = pagehint_log.records("hello")
    assert record["answer"] == 42 and record["actor"] == "runtime"


async def test_a_failing_assertion_fails(actor_system):
    assert actor_system.now_ns == 1
"""


def test_user_suite_gets_fixtures_without_conftest(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_user=USER_SUITE)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*test_a_failing_assertion_fails*"])


def test_seed_option_reaches_the_fixture(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(
        test_seed="async def test_seed(actor_system):\n    assert actor_system.seed == 1234\n"
    )
    result = pytester.runpytest_subprocess("-q", "--pagehint-seed", "1234")
    result.assert_outcomes(passed=1)
