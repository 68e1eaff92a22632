"""The guest's actors in virtual time: per-CPU lists, the zone lock, contention, boot."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from pagehint.actors.mm.buddy import CHECK_SLICE_BLOCKS, BuddyAllocator, InvariantViolation
from pagehint.actors.mm.profiles import costs_for, default_profile
from pagehint.actors.scenario import Scenario, build_guest
from pagehint.actors.zone import Zone
from pagehint.protocol.messages import ZoneAlloc, ZoneFree
from pagehint.protocol.units import PAGE_SIZE
from pagehint.runtime import ActorStopped, ActorSystem

from conftest import load_scenario, run_scenario

# A 1 GiB guest whose two vCPUs run page_fault1 over 8 MiB, for 20 ms.
SMALL = {
    "run": {"duration": "20ms", "sample_interval": "1ms"},
    "guest": {"memory": "1GiB", "vcpus": 2},
    "workload": {"name": "page_fault1", "mapping": "8MiB"},
}


def scenario(**sections: Any) -> Scenario:
    return load_scenario(SMALL, **sections)


async def test_pcp_lists_stay_within_high_and_pages_are_all_accounted(
    actor_system: ActorSystem,
) -> None:
    config = scenario(guest={"kernel": "5.10"})  # high fixed at 6 x batch: drains in batches
    guest = build_guest(actor_system, config)
    for _ in range(40):
        await actor_system.sleep_ns(250_000)
        for vcpu in guest.vcpus:
            assert vcpu.pcp.count <= vcpu.pcp.high_max  # drained once it reaches high
        guest.monitor.check_conservation()
    assert all(vcpu.counters.loops > 0 for vcpu in guest.vcpus)
    # Refills and drains both went through the zone, in batches.
    assert guest.zone.lock_wait_ns.count > 2 * sum(v.counters.loops for v in guest.vcpus)
    guest.zone.allocator.check_invariants()


async def test_first_touch_backs_pages_on_the_host_and_costs_host_time(
    actor_system: ActorSystem,
) -> None:
    config = scenario(workload={"mapping": "4MiB"}, guest={"boot_memory": "8MiB", "vcpus": 1})
    guest = build_guest(actor_system, config)
    boot_rss = guest.backing.rss_pages
    assert boot_rss * PAGE_SIZE == 8 << 20
    vcpu = guest.vcpus[0]
    await actor_system.sleep_ns(10_000_000)
    faults, first_touches = vcpu.counters.faults, vcpu.counters.host_first_touches
    assert first_touches >= 1024  # the first loop touched fresh memory
    await actor_system.sleep_ns(10_000_000)
    # Freed pages come back from the per-CPU list and the zone's list heads: once the free
    # lists settle, later loops touch pages the host already backs, at no host cost.
    new_faults = vcpu.counters.faults - faults
    assert new_faults >= 4 * 1024
    assert vcpu.counters.host_first_touches - first_touches < new_faults // 10
    assert guest.backing.rss_pages == boot_rss + vcpu.counters.host_first_touches


def test_zone_lock_contention_grows_with_vcpu_count() -> None:
    waits, utilisations = [], []
    for vcpus in (1, 4, 16):
        summary = run_scenario(
            scenario(guest={"vcpus": vcpus, "memory": "4GiB"}, run={"duration": "30ms"})
        )
        waits.append(summary["zone"]["lock_wait_ns"]["mean"])
        utilisations.append(summary["zone"]["lock_utilisation"])
    assert waits[0] == 0  # alone, a vCPU never queues
    assert waits[0] < waits[1] < waits[2]
    assert utilisations[0] < utilisations[1] < utilisations[2]


def test_thp_faults_take_order_9_blocks_from_the_zone_before_5_14() -> None:
    config = scenario(workload={"thp": True, "mapping": "16MiB"}, guest={"kernel": "5.10"})
    summary = run_scenario(config)
    # 8 blocks per loop, one zone request to take and one to free each.
    assert summary["workload"]["loops"] > 0
    costs = config.costs.resolve()
    assert summary["zone"]["lock_hold_ns"]["max"] == costs.lock_hold_ns(1)
    assert summary["workload"]["faults"] % 512 == 0


def test_idle_guest_costs_the_host_only_its_boot_memory() -> None:
    summary = run_scenario(scenario(workload={"name": "idle"}, guest={"boot_memory": "32MiB"}))
    assert summary["host"]["rss_bytes_end"] == 32 << 20
    assert summary["workload"]["faults"] == 0


@pytest.mark.parametrize("name", ["page_fault2", "memhog", "churn"])
def test_every_workload_runs_and_conserves_pages(name: str) -> None:
    summary = run_scenario(scenario(workload={"name": name}, guest={"memory": "2GiB"}))
    assert summary["workload"]["faults"] > 0
    assert summary["invariant_violations"] == 0


async def test_sent_and_direct_requests_share_one_fifo_zone_lock(actor_system: ActorSystem) -> None:
    costs = costs_for(default_profile())
    zone = actor_system.spawn(Zone("zone", BuddyAllocator(1 << 15), costs))
    freed_by: list[str] = []
    zone.add_free_hook(lambda pfn, order, requester: freed_by.append(requester))
    hold = costs.lock_hold_ns(1)
    clock = actor_system.clock
    acquired: dict[str, int] = {}

    # vcpu0 takes the lock directly at 0 and holds it for `hold` without sleeping yet.
    (pfn,), release = await zone.request(ZoneAlloc("vcpu0", 9, 1, clock.now_ns()))
    assert release == hold

    async def worker_frees() -> None:  # sent at 0: queues behind vcpu0's hold
        await zone.ask(ZoneFree("g.worker", 9, (pfn,), clock.now_ns()))
        acquired["worker answered"] = clock.now_ns()

    async def vcpu1_allocates() -> None:  # arrives later, so it is served after the worker
        await clock.sleep_until_ns(hold // 2)
        _, vcpu1_release = await zone.request(ZoneAlloc("vcpu1", 9, 1, clock.now_ns()))
        acquired["vcpu1"] = vcpu1_release - hold

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker_frees)
        nursery.start_soon(vcpu1_allocates)

    assert acquired == {"worker answered": 2 * hold, "vcpu1": 2 * hold}
    assert zone.by_requester["worker"].wait_ns.max == hold
    assert zone.by_requester["vcpu"].wait_ns.max == 2 * hold - hold // 2
    assert freed_by == ["g.worker"]  # the free hook names who freed the block


async def test_a_sent_request_still_queued_when_the_zone_stops_fails_instead_of_hanging(
    actor_system: ActorSystem,
) -> None:
    zone = actor_system.spawn(Zone("zone", BuddyAllocator(1 << 15), costs_for(default_profile())))
    clock = actor_system.clock
    await zone.request(ZoneAlloc("vcpu0", 0, 1, clock.now_ns()))  # holds the lock a while
    outcome: list[str] = []

    async def worker_allocates() -> None:
        try:
            await zone.ask(ZoneAlloc("g.worker", 0, 1, clock.now_ns()), timeout_ns=10**9)
            outcome.append("answered")
        except ActorStopped:
            outcome.append("stopped")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker_allocates)
        await clock.sleep_until_ns(clock.now_ns() + 1)  # the request is queued at the lock
        assert zone.queued == 1
        zone.stop()
    assert outcome == ["stopped"]


async def test_the_monitor_finds_a_corrupted_allocator_within_a_round_of_slices(
    actor_system: ActorSystem,
) -> None:
    config = scenario(
        guest={"memory": "64GiB"}, workload={"name": "idle"}, run={"full_check_every": 2}
    )
    guest = build_guest(actor_system, config)
    allocator = guest.zone.allocator
    slices = -(-sum(1 for _ in allocator.iter_blocks()) // CHECK_SLICE_BLOCKS)
    assert slices >= 4  # 16,384 free 4 MiB blocks: a round of slices is several checks
    last = allocator.total_pages // 1024 - 1
    allocator._top_prev[last] = last  # the last free 4 MiB block: its link back is broken
    samples = 0
    with pytest.raises(InvariantViolation, match="broken free-list links"):
        while samples < slices * 2:  # a slice every second sample
            samples += 1
            guest.monitor.sample()
    assert samples > 2  # found when the slices reached it, not by the first one
    allocator._top_prev[last] = last - 1  # mended, for the monitor's own samples
