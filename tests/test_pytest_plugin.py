"""The pytest plugin, used as a user would: a fresh suite with no conftest."""

from __future__ import annotations

import pytest

from pagehint.runtime.pytest_plugin import NO_PYTEST_TRIO

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


DEADLOCKED_SUITE = """
import attrs
import trio
from pagehint.runtime import Actor, handles


@attrs.frozen
class Ping:
    pass


@attrs.frozen
class Pong:
    pass


class Pinger(Actor):
    @handles(Ping)
    async def ping(self, message):
        return await self.system.lookup("ponger").ask(Pong())


class Ponger(Actor):
    @handles(Pong)
    async def pong(self, message):
        return await self.system.lookup("pinger").ask(Ping())


async def test_sleeps_forever(actor_system):
    await trio.sleep_forever()


async def test_actors_ask_each_other(actor_system):
    actor_system.spawn(Pinger("pinger"))
    actor_system.spawn(Ponger("ponger"))
    await actor_system.lookup("pinger").ask(Ping())


async def test_receives_what_nobody_sends(actor_system):
    _, receive = trio.open_memory_channel(0)
    await receive.receive()


async def test_the_next_test_runs(actor_system):
    await actor_system.sleep_ns(10**9)
"""


def test_a_deadlocked_test_fails_naming_the_waits_instead_of_hanging(
    pytester: pytest.Pytester,
) -> None:
    # No trio_mode: the plugin marks its own tests. The timeout turns a hang into a failure.
    pytester.makepyfile(test_stuck=DEADLOCKED_SUITE)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(
        [
            "E *DeadlockError: deadlock at t=0 ns: every task waits, and no timer, *",
            "  *task \"<test 'test_sleeps_forever'>\" waits at test_stuck.py:*"
            " in test_sleeps_forever: await trio.sleep_forever()",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "  *actor 'pinger', handling Ping(), waits for 'ponger' to answer Pong() (asked*",
            "  *actor 'ponger', handling Pong(), waits for 'pinger' to answer Ping() (asked*",
            "  *task \"<test 'test_actors_ask_each_other'>\" waits for 'pinger' to answer*",
        ]
    )
    result.stdout.fnmatch_lines(["  *test_receives_what_nobody_sends: await receive.receive()"])


def test_without_pytest_trio_a_test_fails_saying_what_to_install(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_seed="async def test_seed(actor_system):\n    assert actor_system.seed == 0\n"
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "-p", "no:trio")
    result.assert_outcomes(errors=1)
    assert NO_PYTEST_TRIO in result.stdout.str()
    assert "pip install pytest-trio" in NO_PYTEST_TRIO
