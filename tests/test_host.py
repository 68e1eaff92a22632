"""The host as it is: host huge pages and hugetlbfs, inhibited discards, reclaim that the faulting
guest pays for, and age-based victims."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from pagehint.actors.mm.host_memory import GuestBacking
from pagehint.actors.scenario import Scenario
from pagehint.runtime.harness.cli import main
from pagehint.runtime.harness.config import load_toml

from conftest import CONFIGS, load_scenario, run_scenario

HUGE = 512


def check_books(backing: GuestBacking) -> None:
    """What the backing counts agrees with its page sets."""
    backed, discarded, swapped = backing._backed, backing._discarded, backing._swapped
    assert backing.rss_pages == len(backed)
    assert backing.in_use_pages == len(backed) + backing.deferred_pages
    assert len(swapped) == backing.swapped_pages
    assert not backed & discarded and not backed & swapped  # never backed and gone at once
    assert len(backed) + len(discarded) + len(swapped) <= backing.total_pages
    for region in backing._huge:  # a host huge page is wholly backed
        assert backed.range_cardinality(region * HUGE, (region + 1) * HUGE) == HUGE


OPS = st.lists(
    st.tuples(
        st.sampled_from(["touch", "touch_pages", "discard", "free", "evict", "shrink"]),
        st.integers(0, 8 * HUGE - 1),
        st.sampled_from([1, 7, 256, 512, 1024]),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ops=OPS, aligned=st.booleans())
def test_host_huge_pages_keep_rss_in_use_and_huge_pages_consistent(
    ops: list[tuple[str, int, int]], aligned: bool
) -> None:
    backing = GuestBacking(8 * HUGE, HUGE)
    backing.track_age()
    for action, pfn, count in ops:
        if aligned:
            pfn -= pfn % HUGE
        count = min(count, backing.total_pages - pfn)
        before = backing.in_use_pages
        if action == "touch":
            backing.touch(pfn, count)
        elif action == "touch_pages":
            backing.touch_pages(range(pfn, pfn + count))
        elif action in ("discard", "free"):
            backing.discard(pfn, count, lazy=action == "free")
            assert backing.in_use_pages <= before  # a discard never adds host memory
        elif action == "evict":
            backing.evict(count)
        else:
            backing.release_deferred()
            assert backing.deferred_pages == 0
        check_books(backing)


def test_a_whole_aligned_discard_frees_a_huge_page_and_a_partial_one_splits_it() -> None:
    backing = GuestBacking(4 * HUGE, HUGE)
    assert backing.touch(0, 1) == (0, 0, 0, 0, 1)  # one 4 KiB touch faults in 2 MiB
    backing.touch(HUGE, HUGE)
    assert backing.huge_faults == 2 and backing.rss_pages == 2 * HUGE
    backing.discard(0, HUGE)  # whole: zap_huge_pmd frees it at once
    assert (backing.rss_pages, backing.deferred_pages) == (HUGE, 0)
    backing.discard(HUGE, 128)  # partial: split; the part leaves RSS, stays in use
    assert backing.rss_pages == HUGE - 128 and backing.deferred_pages == 128
    assert backing.in_use_pages == HUGE
    assert backing.release_deferred() == 128 and backing.in_use_pages == HUGE - 128
    # A touch of a split range is a 4 KiB refault, not another huge page.
    assert backing.touch(HUGE, 1) == (0, 1, 0, 0, 0)


def test_hugetlbfs_skips_unaligned_discards_and_returns_aligned_ones_to_the_pool() -> None:
    backing = GuestBacking(4 * HUGE, HUGE, hugetlb=True)
    backing.touch(0, 2 * HUGE)
    assert backing.discard(HUGE // 2, HUGE) == 0 and backing.skipped_discards == 1
    assert backing.rss_pages == 2 * HUGE  # QEMU ignored it
    assert backing.discard(HUGE, HUGE) == HUGE
    assert backing.pool_returned_pages == HUGE and backing.discarded_pages == 0
    assert backing.evict(HUGE) == 0  # hugetlb pages are not swapped


def test_eviction_takes_the_pages_untouched_longest() -> None:
    backing = GuestBacking(1024)
    backing.touch(0, 1024)
    backing.track_age()  # every page counts as just touched
    assert backing.evict(100) == 100  # a first pass clears the bits, the second finds victims
    first = {pfn for pfn in range(1024) if not backing.is_backed(pfn)}
    backing.touch_pages(range(100, 200))  # touched again: young
    backing.evict(100)
    second = {pfn for pfn in range(1024) if not backing.is_backed(pfn)} - first
    assert len(second) == 100 and not second & set(range(100, 200))


# -- scenarios -------------------------------------------------------------------------------
def memhog_guest(**sections: Any) -> Scenario:
    base = {
        "run": {"duration": "2s", "baseline": False, "sample_interval": "20ms"},
        "guest": {"memory": "2GiB", "vcpus": 2, "boot_memory": "64MiB"},
        "workload": {"name": "memhog", "size": "512MiB", "thp": True, "loops": 1},
        "policy": {"name": "page_reporting", "delay": "100ms"},
    }
    return load_scenario(base, **sections)


def test_hugetlbfs_1g_with_reporting_at_pageblock_order_discards_nothing_and_says_so() -> None:
    summary = run_scenario(memhog_guest(host={"backing": "hugetlb-1g"}))
    assert summary["worker"]["batches"] > 0 and summary["host"]["discards"] == 0
    assert summary["host"]["discards_skipped"] > 0
    assert "nothing was discarded" in summary["warnings"][0]
    two_mib = run_scenario(memhog_guest(host={"backing": "hugetlb-2m"}))
    assert two_mib["host"]["hugetlb_returned_bytes"] > 0
    assert two_mib["memory_returned_bytes"] == 0  # to the pool, not the host's free memory
    assert "warnings" not in two_mib


def test_inhibited_discards_acknowledge_reports_and_keep_every_page() -> None:
    summary = run_scenario(memhog_guest(host={"inhibit_discards": True}))
    assert summary["worker"]["batches"] > 0 and summary["virtio"]["interrupts"] > 0
    assert summary["host"]["discards"] == 0 and summary["memory_returned_bytes"] == 0
    assert summary["host"]["rss_bytes_end"] == summary["host"]["rss_bytes_peak"]


def test_a_guest_faults_more_slowly_on_a_host_over_its_limit() -> None:
    def memhog_rate(limit: str) -> tuple[float, int]:
        config = memhog_guest(
            host={"memory": limit}, policy={"name": "none"}, workload={"loops": 0}
        )
        summary = run_scenario(config)
        return summary["workload"]["faults_per_s_per_vcpu"], summary["host"]["direct_reclaims"]

    free, none = memhog_rate("0B")
    tight, reclaims = memhog_rate("600MiB")
    assert none == 0 and reclaims > 0
    assert tight < free  # the faulting vCPUs paid for the swap-outs


def test_with_hinting_the_overcommitted_host_swaps_less() -> None:
    scenario = CONFIGS / "overcommit.toml"
    from pagehint.actors.scenario import MODEL

    hinted = MODEL.load(load_toml(scenario), str(scenario))
    unhinted = load_scenario(
        {"policy": {"name": "none"}}
        | {k: v for k, v in load_toml(scenario).items() if k != "policy"}
    )
    with_hints, without = run_scenario(hinted), run_scenario(unhinted)
    assert without["host"]["swap_outs"] > 0
    assert with_hints["host"]["swap_outs"] < without["host"]["swap_outs"]
    assert with_hints["memory_returned_bytes"] > 0


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ({"backing": "2m"}, "host.backing: unknown backing '2m'; known: 4k, thp, hugetlb-2m"),
        ({"memory": "32MiB"}, "host.memory: 32MiB cannot even hold the guests' boot memory"),
        (
            {"memory": "4GiB", "swap_bandwidth": "0B"},
            "host.swap_bandwidth: must be positive when host.memory sets a limit",
        ),
    ],
)
def test_bad_host_input_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: dict[str, Any], expected: str
) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text(tomli_w.dumps({"guest": {"boot_memory": "64MiB"}, "host": host}))
    assert main(["config", str(scenario)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_a_guest_has_at_most_16tib_its_host_page_state_indexes_32_bit_pages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "large.toml"
    for memory, code in (("16TiB", 0), ("17TiB", 2)):  # per guest: each has its own backing
        scenario.write_text(tomli_w.dumps({"guest": {"memory": memory}, "host": {"guests": 2}}))
        assert main(["config", str(scenario)]) == code
    err = capsys.readouterr().err
    assert "guest.memory: at most 16TiB (each guest's host page-state bitmaps" in err
    assert "got 17TiB" in err and "Traceback" not in err
