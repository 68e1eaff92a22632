"""Micro-benchmarks of pagehint's runtime, each measured side by side with a peer.

What is measured:

1. ``ask`` round trip: one actor answering ``ask`` of a frozen attrs message under
   ``run_simulation`` (virtual clock, deterministic scheduling), against the idiomatic trio
   way to do the same exchange: a ping task and a pong task over two unbuffered memory
   channels under plain ``trio.run``. Reported as ns per round trip and as the ratio ours/bare.
2. Timer wake-ups: 64 tasks each sleeping through the same precomputed random schedule, on
   our ``VirtualClock`` (``sleep_until_ns``), on ``trio.testing.MockClock(autojump_threshold=0)``
   (``trio.sleep``) and on a SimPy ``Environment`` (``yield env.timeout(d)``). Reported as
   wake-ups per wall-clock second and as ratios of ours to each peer.
3. Logging: ns per call of a disabled ``debug`` call and of an enabled JSON ``info`` line
   written to a file through ``RunLog``, next to their floors: a plain Python function with
   the same signature, and ``orjson.dumps`` of the same record plus ``file.write``.

Why ratios: the machines these run on are shared and noisy, so absolute times drift by tens
of percent between runs. Each repeat runs ours and its peer one right after the other in the
same process (rotating which goes first), so both see the same machine state; the ratio of the
two is what stays stable, and it is what the targets are set on. Every figure is reported as
min/median/max over the repeats; ratios are computed per repeat, then summarised.

Run: ``python benchmarks/runtime_bench.py [--repeats N] [--quick] [--json]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, BinaryIO

import attrs
import orjson
import rich
import simpy
import structlog
import trio
import trio.testing
from _stats import STATS, Spread, interleave, ratios, spread, target_met, target_note
from rich.console import Console
from rich.table import Table

from pagehint.runtime import Actor, ActorSystem, RunLog, VirtualClock, handles, run_simulation

SEED = 20240611
TIMER_TASKS = 64
MAX_SLEEP_NS = 1_000_000  # timer durations are drawn uniformly from [1 ns, 1 ms]

# Targets on the medians: key -> (bound, whether the bound is a "max" or a "min").
TARGETS = {"ask_overhead_ratio": (1.5, "max"), "clock_speedup_vs_mockclock": (5.0, "min")}


@attrs.frozen
class Params:
    repeats: int
    ask_round_trips: int
    timer_sleeps_per_task: int
    log_calls: int

    @classmethod
    def for_run(cls, *, quick: bool, repeats: int) -> Params:
        if quick:
            return cls(repeats, ask_round_trips=8_000, timer_sleeps_per_task=128, log_calls=30_000)
        return cls(repeats, ask_round_trips=50_000, timer_sleeps_per_task=750, log_calls=250_000)


# -- 1. ask round trip -------------------------------------------------------------------------
@attrs.frozen
class Ping:
    number: int


class Echo(Actor):
    @handles(Ping)
    def answer(self, ping: Ping) -> int:
        return ping.number + 1


def ask_ns_ours(round_trips: int) -> float:
    """ns per ``await actor.ask(Ping(i))`` under ``run_simulation``."""

    async def main(system: ActorSystem) -> int:
        echo = system.spawn(Echo("echo"))
        await echo.ask(Ping(-1))  # the actor's task is running from here on
        start = time.perf_counter_ns()
        for number in range(round_trips):
            await echo.ask(Ping(number))
        return time.perf_counter_ns() - start

    return run_simulation(main, seed=SEED) / round_trips


def ask_ns_bare(round_trips: int) -> float:
    """ns per ping-pong of the same message over two unbuffered trio memory channels."""

    async def pong(
        requests: trio.MemoryReceiveChannel[Ping], replies: trio.MemorySendChannel[int]
    ) -> None:
        async for ping in requests:
            await replies.send(ping.number + 1)

    async def main() -> int:
        request_send, request_receive = trio.open_memory_channel[Ping](0)
        reply_send, reply_receive = trio.open_memory_channel[int](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pong, request_receive, reply_send)
            await request_send.send(Ping(-1))
            await reply_receive.receive()
            start = time.perf_counter_ns()
            for number in range(round_trips):
                await request_send.send(Ping(number))
                await reply_receive.receive()
            elapsed = time.perf_counter_ns() - start
            await request_send.aclose()
        return elapsed

    return trio.run(main) / round_trips


def measure_ask(params: Params) -> dict[str, Any]:
    n = params.ask_round_trips
    samples = interleave(
        {"ours": functools.partial(ask_ns_ours, n), "bare_trio": functools.partial(ask_ns_bare, n)},
        params.repeats,
    )
    return {
        "ns_per_round_trip": {name: spread(values) for name, values in samples.items()},
        "ratio_ours_over_bare": spread(ratios(samples["ours"], samples["bare_trio"])),
    }


# -- 2. timer wake-ups -------------------------------------------------------------------------
Schedule = list[list[int]]  # per task, its sleep durations in ns


def make_schedule(sleeps_per_task: int, seed: int = SEED) -> Schedule:
    rng = random.Random(seed)
    return [
        [rng.randint(1, MAX_SLEEP_NS) for _ in range(sleeps_per_task)] for _ in range(TIMER_TASKS)
    ]


def _check_end(clock_name: str, end_ns: float, schedule: Schedule) -> None:
    """Every clock must have slept through the same schedule to the same virtual end."""
    expected = max(sum(durations) for durations in schedule)
    if abs(end_ns - expected) > 1e-6 * expected:
        raise RuntimeError(f"{clock_name}: virtual time ended at {end_ns} ns, expected {expected}")


def _wakeups_per_s(schedule: Schedule, elapsed_ns: int) -> float:
    return sum(map(len, schedule)) / (elapsed_ns / 1e9)


def timers_virtual_clock(schedule: Schedule) -> float:
    """Wake-ups/s of ``VirtualClock.sleep_until_ns``."""

    async def sleeper(durations: list[int]) -> None:
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, VirtualClock)
        for duration in durations:
            await clock.sleep_until_ns(clock.now_ns() + duration)

    async def main() -> tuple[int, int]:
        start = time.perf_counter_ns()
        async with trio.open_nursery() as nursery:
            for durations in schedule:
                nursery.start_soon(sleeper, durations)
        elapsed = time.perf_counter_ns() - start
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, VirtualClock)
        return elapsed, clock.now_ns()

    elapsed, end_ns = trio.run(main, clock=VirtualClock())
    _check_end("VirtualClock", end_ns, schedule)
    return _wakeups_per_s(schedule, elapsed)


def timers_mock_clock(schedule: Schedule) -> float:
    """Wake-ups/s of ``trio.sleep`` under ``MockClock(autojump_threshold=0)``."""

    async def sleeper(durations: list[int]) -> None:
        for duration in durations:
            await trio.sleep(duration / 1e9)

    async def main() -> tuple[int, float]:
        start = time.perf_counter_ns()
        async with trio.open_nursery() as nursery:
            for durations in schedule:
                nursery.start_soon(sleeper, durations)
        return time.perf_counter_ns() - start, trio.current_time()

    elapsed, end_s = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    _check_end("MockClock", end_s * 1e9, schedule)
    return _wakeups_per_s(schedule, elapsed)


def timers_simpy(schedule: Schedule) -> float:
    """Wake-ups/s of SimPy processes doing ``yield env.timeout(d)``."""

    def sleeper(env: simpy.Environment, durations: list[int]) -> Generator[Any, Any, None]:
        for duration in durations:
            yield env.timeout(duration)

    start = time.perf_counter_ns()
    env = simpy.Environment()
    for durations in schedule:
        env.process(sleeper(env, durations))
    env.run()
    elapsed = time.perf_counter_ns() - start
    _check_end("SimPy", env.now, schedule)
    return _wakeups_per_s(schedule, elapsed)


def measure_timers(params: Params) -> dict[str, Any]:
    schedule = make_schedule(params.timer_sleeps_per_task)
    samples = interleave(
        {
            "virtual_clock": functools.partial(timers_virtual_clock, schedule),
            "mock_clock": functools.partial(timers_mock_clock, schedule),
            "simpy": functools.partial(timers_simpy, schedule),
        },
        params.repeats,
    )
    ours = samples["virtual_clock"]
    return {
        "wakeups_per_s": {name: spread(values) for name, values in samples.items()},
        "speedup_vs_mockclock": spread(ratios(ours, samples["mock_clock"])),
        "ratio_vs_simpy": spread(ratios(ours, samples["simpy"])),
    }


# -- 3. logging --------------------------------------------------------------------------------
def _per_call_ns(method: Callable[..., object], calls: int) -> float:
    """ns per ``method("event", a=1)``, the shape of a typical model log call."""
    start = time.perf_counter_ns()
    for _ in range(calls):
        method("event", a=1)
    return (time.perf_counter_ns() - start) / calls


def _plain_function(event: str, *args: Any, **fields: Any) -> None:
    """Floor of a disabled log call: a Python call with the same signature that does nothing."""


def _raw_line_writer(file: BinaryIO) -> Callable[..., None]:
    """Floor of an enabled line: the same record built, dumped by orjson and written."""

    def write(event: str, **fields: Any) -> None:
        record = {"t": 0, "actor": "x", "level": "info", "event": event}
        record.update(fields)
        file.write(orjson.dumps(record) + b"\n")

    return write


def log_ns(variant: str, calls: int) -> float:
    """ns per call of one logging variant, writing (if at all) to a fresh temp file."""
    with tempfile.TemporaryFile() as file:
        if variant == "plain_function":
            return _per_call_ns(_plain_function, calls)
        if variant == "raw_orjson_write":
            return _per_call_ns(_raw_line_writer(file), calls)
        run_log = RunLog(file, level="info")
        run_log.use_clock(lambda: 0)
        logger = run_log.logger("x")
        method = logger.debug if variant == "disabled_debug" else logger.info
        method("warm-up", a=1)  # structlog finalises a cached logger on first use
        return _per_call_ns(method, calls)


LOG_VARIANTS = ("disabled_debug", "plain_function", "enabled_info", "raw_orjson_write")


def measure_logging(params: Params) -> dict[str, Any]:
    calls = params.log_calls
    samples = interleave(
        {variant: functools.partial(log_ns, variant, calls) for variant in LOG_VARIANTS},
        params.repeats,
    )
    return {
        "ns_per_call": {name: spread(values) for name, values in samples.items()},
        "disabled_over_plain_call": spread(
            ratios(samples["disabled_debug"], samples["plain_function"])
        ),
        "enabled_over_raw_write": spread(
            ratios(samples["enabled_info"], samples["raw_orjson_write"])
        ),
    }


# -- report ------------------------------------------------------------------------------------
def render_table(report: dict[str, Any]) -> Table:
    ask, timers, logs = (report["measurements"][k] for k in ("ask", "timers", "logging"))
    # (measurement, unit or target key, number format, {variant: spread})
    sections: list[tuple[str, str, str, Mapping[str, Spread]]] = [
        ("ask round trip", "ns/round trip", ",.0f", ask["ns_per_round_trip"]),
        ("ask", "ask_overhead_ratio", ".2f", {"ours / bare": ask["ratio_ours_over_bare"]}),
        ("timers", "wake-ups/s", ",.0f", timers["wakeups_per_s"]),
        (
            "timers",
            "clock_speedup_vs_mockclock",
            ".2f",
            {"ours / MockClock": timers["speedup_vs_mockclock"]},
        ),
        ("timers", "clock_ratio_vs_simpy", ".2f", {"ours / SimPy": timers["ratio_vs_simpy"]}),
        ("logging", "ns/call", ",.1f", logs["ns_per_call"]),
        (
            "logging",
            "ratio",
            ".2f",
            {
                "disabled / plain call": logs["disabled_over_plain_call"],
                "enabled / raw write": logs["enabled_over_raw_write"],
            },
        ),
    ]
    table = Table(title="pagehint runtime benchmarks (min / median / max over repeats)")
    for column in ("measurement", "variant", "min", "median", "max", "unit / target"):
        table.add_column(column, justify="right" if column in STATS else "left")
    for measurement, note, fmt, values in sections:
        for variant, figures in values.items():
            cells = [format(figures[stat], fmt) for stat in STATS]
            table.add_row(
                measurement, variant, *cells, target_note(TARGETS, note, figures["median"])
            )
        table.add_section()
    return table


def run(params: Params, *, quick: bool) -> dict[str, Any]:
    measurements = {
        "ask": measure_ask(params),
        "timers": measure_timers(params),
        "logging": measure_logging(params),
    }
    ask, timers, logs = (measurements[k] for k in ("ask", "timers", "logging"))
    headline = {
        "ask_overhead_ratio": ask["ratio_ours_over_bare"]["median"],
        "clock_speedup_vs_mockclock": timers["speedup_vs_mockclock"]["median"],
        "clock_ratio_vs_simpy": timers["ratio_vs_simpy"]["median"],
        "log_disabled_ns": logs["ns_per_call"]["disabled_debug"]["median"],
        "log_enabled_ns": logs["ns_per_call"]["enabled_info"]["median"],
    }
    targets = {
        key: {kind: bound, "met": target_met(TARGETS, key, headline[key])}
        for key, (bound, kind) in TARGETS.items()
    }
    return {
        **headline,
        "targets": targets,
        "measurements": measurements,
        "params": {
            **attrs.asdict(params),
            "quick": quick,
            "seed": SEED,
            "timer_tasks": TIMER_TASKS,
            "timer_max_sleep_ns": MAX_SLEEP_NS,
        },
        "environment": {
            "python": platform.python_version(),
            "trio": trio.__version__,
            "simpy": simpy.__version__,
            "structlog": structlog.__version__,
            "cpus": os.cpu_count(),
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=7, help="repeats per measurement")
    parser.add_argument("--quick", action="store_true", help="small sizes: about 10 s in all")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    params = Params.for_run(quick=args.quick, repeats=args.repeats)
    started = time.perf_counter()
    report = run(params, quick=args.quick)
    report["wall_s"] = round(time.perf_counter() - started, 2)
    Console(width=120).print(render_table(report))
    rich.print(f"wall time {report['wall_s']} s")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
