"""Guest kernel profiles: each switches what it claims, and the per-CPU lists follow each
kernel's rules (a property test over sequences of allocations and frees)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pagehint.actors.designs import PageReportingConfig, PageReportingPolicy
from pagehint.actors.mm.buddy import BuddyAllocator, Watermarks
from pagehint.actors.mm.kernels import DEFAULT_KERNEL, KERNELS
from pagehint.actors.mm.pcp import PcpRules, PcpSizes, PerCpuPages, zone_batchsize
from pagehint.actors.scenario import Scenario, build_guest
from pagehint.actors.scenario.building import make_policy
from pagehint.actors.scenario.effective import applied, pcp_sizes, resolve
from pagehint.runtime import ActorSystem
from pagehint.runtime.harness.cli import main

from conftest import load_scenario

GiB = 1 << 30
THP = 9


def guest_on(kernel: str, **sections: Any) -> Scenario:
    """A 1 GiB, 2-vCPU guest on ``kernel``, hinted by page_reporting, whose vCPUs each fault in
    one THP and free it."""
    base = {
        "run": {"duration": "3s", "sample_interval": "10ms", "baseline": False},
        "guest": {"memory": "1GiB", "vcpus": 2, "boot_memory": "32MiB", "kernel": kernel},
        "workload": {"name": "memhog", "size": "2MiB", "thp": True, "loops": 1},
        "policy": {"name": "page_reporting", "delay": "50ms"},
    }
    return load_scenario(base, **sections)


BOOT_PAGES = (32 << 20) // 4096


async def test_a_thp_freed_on_5_14_waits_on_the_freeing_cpu_s_list_unreported(
    actor_system: ActorSystem,
) -> None:
    guest = build_guest(actor_system, guest_on("5.14"))
    await actor_system.sleep_ns(2_000_000_000)  # freed long ago; reporting has made passes
    assert guest.worker is not None and guest.worker.counters.batches > 0
    allocator = guest.zone.allocator
    for vcpu in guest.vcpus:
        # A refill took two THPs (max(batch >> 9, 2)); the freed one went on the freeing
        # CPU's list and its cold end, the unused one, was drained back to the zone.
        [pfn] = vcpu.pcp.lists[THP]
        assert vcpu.pcp.count == 512
        # On a per-CPU list the zone counts the block as allocated: the reporting pass, which
        # walks the zone's free lists, cannot see it, so its pages stay backed on the host.
        assert allocator.state_of(pfn).name == "ALLOCATED" and not allocator.is_reported(pfn)
        assert guest.backing.is_backed(pfn) and guest.backing.is_backed(pfn + 511)
    assert guest.backing.rss_pages == BOOT_PAGES + 2 * 512


async def test_before_5_14_a_freed_thp_goes_back_to_the_zone_and_is_reported(
    actor_system: ActorSystem,
) -> None:
    guest = build_guest(actor_system, guest_on("5.10"))
    await actor_system.sleep_ns(2_000_000_000)
    assert all(THP not in vcpu.pcp.lists and vcpu.pcp.count == 0 for vcpu in guest.vcpus)
    assert guest.backing.rss_pages == BOOT_PAGES  # both THPs were reported and discarded


@pytest.mark.parametrize(("kernel", "at_tail"), [("5.7", False), ("5.10", True), ("6.12", True)])
def test_reported_pages_go_back_where_the_kernel_puts_them(kernel: str, at_tail: bool) -> None:
    hinting = resolve(guest_on(kernel))
    policy = make_policy(hinting)
    assert isinstance(policy, PageReportingPolicy) and policy.tail_placement is at_tail
    allocator = BuddyAllocator(1 << 15, 11, 9)  # 128 MiB: 32 free order-10 blocks
    policy.begin_pass(allocator)
    batch = policy.fill(allocator)
    policy.drain(allocator, batch, reported=True)
    blocks = list(allocator.iter_free(10))
    reported = [pfn for pfn in blocks if allocator.is_reported(pfn)]
    expected = blocks[-len(reported) :] if at_tail else blocks[: len(reported)]
    assert reported and reported == expected


def test_an_explicit_knob_wins_over_the_kernel_and_explain_says_which_applied(
    capsys: pytest.CaptureFixture[str],
) -> None:
    head_on_new_kernel = guest_on("6.12", policy={"tail_placement": False})
    config = resolve(head_on_new_kernel).config
    assert isinstance(config, PageReportingConfig) and config.tail_placement is False
    rows = {key: (value, source) for key, value, source in applied(head_on_new_kernel)}
    assert rows["policy.tail_placement"] == ("false", "set")
    assert rows["guest.pcp_high"][1] == "guest.kernel 6.12: auto rule"
    assert rows["costs.zero_2m"][1].startswith("costs.profile ")
    assert main(["config", "--explain", "--set", "policy.tail_placement=false"]) == 0
    out = capsys.readouterr().out
    assert "policy.tail_placement = false" in out and 'guest.kernel = "6.12"' in out


def test_an_unknown_kernel_exits_2_listing_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "--set", "guest.kernel=4.19"]) == 2
    err = capsys.readouterr().err
    known = ", ".join(f'"{name}"' for name in KERNELS)
    assert "--set guest.kernel=4.19: unknown kernel 4.19" in err and known in err
    assert main(["config", "--set", "guest.kernel=5.1"]) == 2  # what TOML makes of 5.10
    assert "quote the name" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kernel", "high_min", "high_max"),
    [
        ("5.7", 6 * 63, 6 * 63),  # pageset_set_batch: high = 6 * batch
        ("5.14", "low/vcpus", "low/vcpus"),  # zone_highsize from the low watermark
        ("6.12", "low/vcpus", "managed/8/vcpus"),  # auto-tuned between the two
    ],
)
def test_per_cpu_high_follows_the_kernel(kernel: str, high_min: Any, high_max: Any) -> None:
    config = guest_on(kernel, guest={"memory": "8GiB", "vcpus": 4})
    pages = (8 * GiB) // 4096
    low = Watermarks.linux_default(pages).low
    figures = {"low/vcpus": max(low // 4, 4 * 63), "managed/8/vcpus": pages // 8 // 4}
    sizes = pcp_sizes(config)
    assert sizes.batch == zone_batchsize(pages) == 63
    assert sizes.high_min == figures.get(high_min, high_min)
    assert sizes.high_max == figures.get(high_max, high_max)
    fixed = pcp_sizes(guest_on(kernel, guest={"pcp_high": 1000}))
    assert (fixed.high_min, fixed.high_max) == (1000, 1000)  # set: no tuning


def test_the_default_kernel_is_a_current_one() -> None:
    assert KERNELS[DEFAULT_KERNEL].pcp_rules == "auto" and KERNELS[DEFAULT_KERNEL].thp_on_pcp


# -- the per-CPU lists, by rule ----------------------------------------------------------------
SIZES = {
    "fixed": PcpSizes(63, 378, 378),
    "scaled": PcpSizes(63, 640, 640),
    "auto": PcpSizes(63, 640, 16384),
}


def test_fixed_lists_drain_a_batch_when_count_reaches_high() -> None:
    pcp = PerCpuPages("fixed", SIZES["fixed"])
    assert pcp.free(0, list(range(377))) == []  # 377 pages: one short of high
    drains = pcp.free(0, [377])
    assert drains == [(0, list(range(63)))]  # the cold end, batch pages (5.7: >= high)
    assert pcp.count == 378 - 63


def test_auto_tuned_high_rises_with_frees_in_a_row_and_decays_once_a_second() -> None:
    pcp = PerCpuPages("auto", SIZES["auto"], (0, THP))
    pcp.free(0, list(range(5000)))
    assert pcp.high > 640  # raised to hold the pages freed in a row
    assert pcp.count < pcp.high
    high_before, count_before = pcp.high, pcp.count
    drained = sum(len(pfns) << order for order, pfns in pcp.decay())
    assert pcp.high == max(high_before - high_before // 8, 640, count_before - (63 << 5))
    assert pcp.count == min(count_before, pcp.high) and drained == count_before - pcp.count
    for _ in range(40):
        pcp.decay()
    assert pcp.high == 640 and pcp.count <= 640


RULES: list[PcpRules] = ["fixed", "scaled", "auto"]
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["free0", "freeTHP", "take0", "takeTHP", "decay"]), st.integers(1, 300)
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(rules=st.sampled_from(RULES), steps=STEPS, below_high=st.booleans())
def test_per_cpu_lists_conserve_pages_and_stay_bounded(
    rules: PcpRules, steps: list[tuple[str, int]], below_high: bool
) -> None:
    """Whatever the sequence, the lists hold what was put in less what was taken or drained,
    ``count`` is their size in pages, and after a free the list is under its high mark."""
    pcp = PerCpuPages(rules, SIZES[rules], (0,) if rules == "fixed" else (0, THP))
    next_pfn, held, drained = 0, 0, 0
    for action, amount in steps:
        order = THP if action.endswith("THP") else 0
        if not pcp.holds(order):
            continue  # 5.7 and 5.10 keep order 0 only
        if action.startswith("free"):
            blocks = min(amount, 4) if order else amount
            pfns = [next_pfn + (i << order) for i in range(blocks)]
            next_pfn += blocks << order
            drains = pcp.free(order, pfns, below_high)
            held += blocks << order
            drained += sum(len(p) << o for o, p in drains)
            assert pcp.count < max(pcp.high, pcp.high_min) + (1 << order)
        elif action.startswith("take"):
            if not pcp.lists[order]:
                refill = pcp.refill_size(order, below_high)
                assert refill >= 1 and (order == 0 or refill >= 2 or pcp.batch == 1)
                pfns = [next_pfn + (i << order) for i in range(refill)]
                next_pfn += refill << order
                pcp.add(order, pfns)
                held += refill << order
            held -= len(pcp.take(order, amount)) << order
        else:
            drained += sum(len(p) << o for o, p in pcp.decay())
        assert pcp.count == sum(len(p) << o for o, p in pcp.lists.items())
        assert pcp.count == held - drained
        assert SIZES[rules].high_min <= pcp.high <= SIZES[rules].high_max
