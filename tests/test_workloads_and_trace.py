"""Pure cores of the guest: workload generators, the trace parser, the host's backing bitmap."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pagehint.actors import workloads
from pagehint.actors.mm.host_memory import GuestBacking
from pagehint.actors.workloads import Loop, Map, Think, TraceError, Unmap, parse_trace
from pagehint.runtime.harness.cli import main

from conftest import read_summary, run_cli


def test_page_fault1_maps_touches_and_unmaps_in_a_loop() -> None:
    ops = workloads.take(workloads.page_fault1(32768, thp=False), 6)
    assert ops == [Map(0, 32768, 0), Unmap(0), Loop(), Map(0, 32768, 0), Unmap(0), Loop()]
    assert workloads.take(workloads.page_fault1(32768, thp=True), 1) == [Map(0, 32768, 9)]


def test_page_fault2_keeps_its_file_and_copies_on_write() -> None:
    ops = workloads.take(workloads.page_fault2(100), 4)
    assert ops == [Map(1, 100, 0), Map(0, 100, 0, copy=True), Unmap(0), Loop()]


@given(seed=st.integers(0, 2**32), max_live=st.integers(1, 5000))
def test_churn_never_holds_more_than_max_live(seed: int, max_live: int) -> None:
    live: dict[int, int] = {}
    generator = workloads.churn(random.Random(seed), 64, 1_000, max_live, 0.2, 100)
    op = next(generator)
    for step in range(300):
        if isinstance(op, Map):
            assert op.region not in live
            live[op.region] = op.pages
        elif isinstance(op, Unmap):
            del live[op.region]
        assert sum(live.values()) <= max(max_live, 512)
        op = generator.send(step * 50)


def test_churn_is_reproducible_from_its_seed() -> None:
    def first_ops(seed: int) -> list[workloads.Op]:
        return workloads.take(workloads.churn(random.Random(seed), 64, 1_000, 4096, 0.2, 100), 50)

    assert first_ops(1) == first_ops(1)
    assert first_ops(1) != first_ops(2)


PERF = """\
# comment
            bash  2314 [002]  7321.204525: kmem:mm_page_alloc: page=0xffffd4f0c1a2b3c0 pfn=0x686c8 order=0 migratetype=0 gfp_flags=GFP_KERNEL
     kworker/u8:1    97 [000]  7321.204530: kmem:mm_page_alloc: page=(nil) pfn=0xffffffffffffffff order=9 migratetype=1 gfp_flags=GFP_TRANSHUGE
         swapper     0 [001]  7321.204540: sched:sched_switch: prev_comm=swapper
            bash  2314 [003]  7321.204601: kmem:mm_page_free: page=0xffffd4f0c1a2b3c0 pfn=427720 order=0

"""  # noqa: E501
TRACES = Path(__file__).parent / "traces"
# What the samples in traces/ hold: (kind, cpu, pfn, order, time_ns) in time order.
PERF_CALLCHAIN_EVENTS = [
    ("alloc", 1, 0x1A2C40, 0, 7321_204525000),
    ("alloc", 2, 0x686C8, 3, 7321_204611000),
    ("alloc", 3, 0x23E00, 9, 7321_205032000),
    ("alloc", 1, 0x1A2C41, 0, 7321_205847000),
    ("free", 0, 0x3B0A2, 0, 7321_206303000),
    ("free", 0, 0x3B0A3, 0, 7321_206305000),
    ("free", 0, 0x3B0A2, 0, 7321_206310000),  # mm_page_free_batched after mm_page_free
    ("free", 0, 0x3B0A3, 0, 7321_206312000),
    ("free", 3, 0x23E00, 9, 7321_207148000),
]
TRACE_CMD_EVENTS = [
    ("alloc", 2, 0x686C8, 0, 7321_204525000),
    ("alloc", 1, 0x1A2C40, 0, 7321_204561000),
    ("alloc", 1, 0x1A2C41, 0, 7321_204590000),
    ("alloc", 0, 0x2F5D3, 1, 7321_204602000),  # systemd-journal-412: a dash in the comm
    ("alloc", 3, 0x41B00, 2, 7321_204688000),  # trace-cmd-2290
    ("alloc", 1, 0x1A2C7E, 0, 7321_205117000),  # after a CPU:1 [58 EVENTS DROPPED] note
    ("free", 3, 0x51C04, 0, 7321_205230000),  # <idle>-0 in a softirq (..s1.)
    ("free", 2, 0x686C8, 0, 7321_205402000),
    ("alloc", 0, 0x23E00, 9, 7321_205815000),
    ("alloc", 3, 0x5A3E1, 0, 7321_206044000),  # kworker/u8:2-187
    ("free", 0, 0x3F7E2, 0, 7321_206471000),
    ("free", 2, 0x3B0A2, 0, 7321_206903000),
    ("free", 2, 0x3B0A3, 0, 7321_206905000),
    ("free", 2, 0x3B0A7, 0, 7321_206907000),
    ("free", 2, 0x3B0A2, 0, 7321_206911000),
    ("free", 2, 0x3B0A3, 0, 7321_206912000),
    ("free", 2, 0x3B0A7, 0, 7321_206914000),
    ("free", 0, 0x2F5D3, 1, 7321_207350000),
    ("free", 1, 0x1A2C40, 0, 7321_207502000),
    ("free", 0, 0x23E00, 9, 7321_208126000),
    ("free", 3, 0x41B00, 2, 7321_208377000),
]
# Each sample: its events, and how many events of other tracepoints it has.
SAMPLES = {
    "perf-script-callchain.txt": (PERF_CALLCHAIN_EVENTS, 0),
    "trace-cmd-report.txt": (TRACE_CMD_EVENTS, 3),  # kmalloc, mm_page_alloc_zone_locked, kfree
}


def _parsed(trace: workloads.Trace) -> list[tuple[str, int, int, int, int]]:
    return [(e.kind, e.cpu, e.pfn, e.order, e.time_ns) for e in trace.events]


def test_perf_script_lines_are_parsed_and_others_skipped() -> None:
    trace = parse_trace(PERF.splitlines(keepends=True), max_order=11)
    assert _parsed(trace) == [
        ("alloc", 2, 0x686C8, 0, 7321_204525000),
        ("free", 3, 0x686C8, 0, 7321_204601000),
    ]
    assert trace.skipped == 2  # the failed allocation and the sched event


@pytest.mark.parametrize("name", SAMPLES)
def test_each_recorder_sample_parses_into_its_events(name: str) -> None:
    expected, skipped = SAMPLES[name]
    with (TRACES / name).open(encoding="utf-8") as lines:
        trace = parse_trace(lines, name, max_order=11)
    assert _parsed(trace) == expected
    assert trace.skipped == skipped


def test_older_trace_cmd_layout_and_a_field_list_fallback_are_read() -> None:
    # trace-cmd before 3.3: its version line, no latency column; a kernel printing pfn in
    # decimal; and libtraceevent's fallback that lists the raw fields (no order= for a batch).
    report = """\
version = 6
cpus=2
          <idle>-0     [001]   412.100200: mm_page_free:         page=0xffffea00001d4e40 pfn=30009 order=0
            bash-2314  [000]   412.100231: mm_page_alloc:        page=0xffffea0001a1b200 pfn=427720 order=2 migratetype=0 gfp_flags=GFP_KERNEL
            bash-2314  [000]   412.100342: mm_page_free_batched: [FAILED TO PARSE] pfn=0x686c9
"""  # noqa: E501
    trace = parse_trace(report.splitlines(keepends=True), max_order=11)
    assert _parsed(trace) == [
        ("free", 1, 30009, 0, 412_100200000),
        ("alloc", 0, 427720, 2, 412_100231000),
        ("free", 0, 0x686C9, 0, 412_100342000),
    ]


ALLOC = "bash 1 [000] 1.0: kmem:mm_page_alloc: page=0x1 pfn=0x10 order=0 gfp_flags=X\n"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("garbage\n", "expected an event line of perf script"),
        ("\tffffffff81234567 __alloc_pages+0x1f ([kernel.kallsyms])\n", "expected an event line"),
        ("bash 1 [000] 1.0: kmem:mm_page_alloc: page=0x1 order=0\n", "mm_page_alloc without pfn="),
        (
            "bash 1 [000] 1.0: kmem:mm_page_alloc: page=0x1 pfn=0x686c8\n",
            r"mm_page_alloc without order= \(cut short\?\): expected pfn= and order=",
        ),
        ("bash-1  [000] 1.0: mm_page_free: page=0x1 pfn=0x20\n", "mm_page_free without order="),
        ("bash 1 [000] 1.0: kmem:mm_page_free: pfn=0xZZ order=0\n", "pfn=0xZZ is not a number"),
        (
            "bash 1 [000] 1.0: kmem:mm_page_alloc: pfn=0x10 order=11\n",
            r"order 11 is not within the guest's orders 0..10 \(guest.max_order = 11\)",
        ),
    ],
)
def test_malformed_trace_lines_name_their_line_number(line: str, problem: str) -> None:
    # Line 3: a callchain frame is only read after an event line, not after a blank one.
    with pytest.raises(TraceError, match=rf"^trace.txt:3: {problem}") as raised:
        parse_trace([ALLOC, "\n", line], "trace.txt", max_order=11)
    assert raised.value.line_number == 3


def test_a_trace_of_only_other_events_has_nothing_to_replay() -> None:
    lines = ["x 1 [000] 1.0: sched:sched_switch: prev_comm=x\n", PERF.splitlines()[2]]
    with pytest.raises(TraceError, match=r"^trace.txt: no .* \(2 other events or failed alloc"):
        parse_trace(lines, "trace.txt", max_order=11)


def test_replay_keeps_recorded_gaps_and_skips_frees_of_untraced_pages() -> None:
    trace = parse_trace(PERF.splitlines(keepends=True), max_order=11)
    ops = workloads.take(workloads.replay(trace.events, trace.start_ns, 1.0), 4, step_ns=0)
    assert ops == [Map(0x686C8, 1, 0), Loop(), Think(76_000), Unmap(0x686C8)]


# -- pagehint run on a trace ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "faults"), [("perf-script-callchain.txt", 522), ("trace-cmd-report.txt", 523)]
)
def test_each_recorder_sample_replays_through_pagehint_run(
    tmp_path: Path, name: str, faults: int
) -> None:
    run = run_cli(
        "trace.toml",
        tmp_path / "run",
        f"workload.path={TRACES / name}",
        "run.duration=20ms",
        "guest.vcpus=4",
        "policy.name=none",
    )
    # Every allocation replays within 20 ms and faults each of its pages in once: perf's
    # 1 + 8 + 512 + 1, trace-cmd's 1 + 1 + 1 + 2 + 4 + 1 + 512 + 1.
    assert read_summary(run)["workload"]["faults"] == faults


BAD_TRACES = [
    (  # an order the guest has not got (it crashed the run, exit 1, before)
        "x 1 [000] 5.000001: kmem:mm_page_alloc: page=0x1 pfn=0x400 order=11 gfp_flags=X\n",
        [],
        r"t.txt:2: order 11 is not within the guest's orders 0..10 \(guest.max_order = 11\)",
    ),
    (
        "x 1 [000] 5.000001: kmem:mm_page_alloc: page=0x1 pfn=0x400 order=10 gfp_flags=X\n",
        ["--set", "guest.max_order=10"],
        r"t.txt:2: order 10 is not within the guest's orders 0..9 \(guest.max_order = 10\)",
    ),
    (  # cut short before order=: not an order-0 allocation
        "x 1 [000] 5.000001: kmem:mm_page_alloc: page=0xffffea0001a1b200 pfn=0x686c8\n",
        [],
        r"t.txt:2: mm_page_alloc without order= \(cut short\?\)",
    ),
]


def _scenario(tmp_path: Path, trace: str) -> Path:
    (tmp_path / "t.txt").write_text(trace)
    scenario = tmp_path / "s.toml"
    scenario.write_text('[workload]\nname = "trace"\npath = "t.txt"\n')
    return scenario


@pytest.mark.parametrize(("bad", "options", "message"), BAD_TRACES)
@pytest.mark.parametrize("command", ["run", "config"])
def test_a_bad_trace_line_exits_2_naming_it_before_any_run(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    bad: str,
    options: list[str],
    message: str,
) -> None:
    scenario = _scenario(tmp_path, ALLOC + bad + ALLOC)
    out = tmp_path / "run"
    argv = [command, str(scenario), *options] + (["--out", str(out)] if command == "run" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(rf"^workload.path: \S*{message}: ", err, re.MULTILINE), err
    assert "Traceback" not in err
    assert not out.exists()  # nothing that could pass for a run's result


@pytest.mark.parametrize(
    ("trace", "message"),
    [
        ("", "t.txt: no mm_page_alloc, mm_page_free or mm_page_free_batched event to replay"),
        ("# perf script\n\n", "t.txt: no mm_page_alloc, .* event to replay: expected the text"),
        ("PERFILE2\x10\x00\x00\n", r"t.txt:1: a binary recording: convert it with perf script -i"),
    ],
)
def test_a_trace_with_nothing_to_replay_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], trace: str, message: str
) -> None:
    scenario = _scenario(tmp_path, trace)
    assert main(["run", str(scenario), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"^workload.path: \S*{message}", err, re.MULTILINE), err
    assert not (tmp_path / "run").exists()


@given(
    st.integers(1, 3000).flatmap(
        lambda total: st.tuples(
            st.just(total),
            st.lists(
                st.tuples(
                    st.sampled_from(["touch", "discard", "touch_pages"]),
                    st.integers(0, total - 1),
                    st.integers(0, 700),
                ),
                max_size=40,
            ),
        )
    )
)
def test_backing_bitmap_matches_a_set_model(case: tuple[int, list[tuple[str, int, int]]]) -> None:
    total, operations = case
    backing = GuestBacking(total)
    backed: set[int] = set()
    discarded: set[int] = set()
    first_touches = refaults = 0
    for action, start, length in operations:
        length = min(length, total - start)
        pages = set(range(start, start + length))
        if action == "discard":
            assert backing.discard(start, length) == len(pages & backed)
            discarded |= pages & backed
            backed -= pages
            continue
        fresh = pages - backed
        refaults += len(fresh & discarded)
        first_touches += len(fresh - discarded)
        discarded -= fresh
        backed |= pages
        if action == "touch":
            backing.touch(start, length)
        else:
            backing.touch_pages(range(start, start + length))
        assert backing.rss_pages == len(backed)
        assert (backing.first_touches, backing.refaults) == (first_touches, refaults)
    assert all(backing.is_backed(pfn) == (pfn in backed) for pfn in range(total))


def test_backing_refuses_pages_outside_the_guest() -> None:
    with pytest.raises(ValueError, match=r"outside the guest's 100 pages"):
        GuestBacking(100).touch(99, 2)
