"""Pure cores of the guest: workload generators, the trace parser, the host's backing bitmap."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pagehint.actors import workloads
from pagehint.actors.mm.host_memory import GuestBacking
from pagehint.actors.workloads import Loop, Map, Think, TraceError, Unmap, parse_perf_script


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


def test_perf_script_lines_are_parsed_and_others_skipped() -> None:
    trace = parse_perf_script(PERF.splitlines(keepends=True))
    assert [(e.kind, e.cpu, e.pfn, e.order) for e in trace.events] == [
        ("alloc", 2, 0x686C8, 0),
        ("free", 3, 0x686C8, 0),
    ]
    assert trace.events[0].time_ns == 7321_204525000
    assert trace.skipped == 2  # the failed allocation and the sched event


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("garbage\n", "not a perf script event line"),
        ("bash 1 [000] 1.0: kmem:mm_page_alloc: page=0x1 order=0\n", "missing pfn= field"),
        (
            "bash 1 [000] 1.0: kmem:mm_page_free: pfn=0xZZ order=0\n",
            "pfn= or order= is not a number",
        ),
    ],
)
def test_malformed_trace_lines_name_their_line_number(line: str, problem: str) -> None:
    with pytest.raises(TraceError, match=rf"trace.txt:3: {problem}"):
        parse_perf_script(["# header\n", "\n", line], "trace.txt")


def test_replay_keeps_recorded_gaps_and_skips_frees_of_untraced_pages() -> None:
    trace = parse_perf_script(PERF.splitlines(keepends=True))
    ops = workloads.take(workloads.replay(trace.events, trace.start_ns, 1.0), 4, step_ns=0)
    assert ops == [Map(0x686C8, 1, 0), Loop(), Think(76_000), Unmap(0x686C8)]


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
