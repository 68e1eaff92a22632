"""Hinting end to end: each design gives memory back, and nothing is lost on the way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagehint.actors.designs import Batch, Limits, PageReportingConfig, PageReportingPolicy
from pagehint.actors.designs.registry import installed_designs
from pagehint.actors.host import DiscardedPageInUse
from pagehint.actors.mm.buddy import BlockState, BuddyAllocator
from pagehint.actors.mm.host_memory import GuestBacking
from pagehint.actors.scenario import MODEL, Scenario, build, building
from pagehint.runtime import ActorCrashed, ActorSystem, MemoryLog
from pagehint.runtime.harness.config import load_toml

from conftest import CONFIGS, load_scenario, run_scenario

MiB = 1 << 20
# Every installed design that hints (pagehint's four, and a plugin's if one is installed).
POLICIES = [name for name, design in installed_designs().items() if design.returns_memory]


def scenario(design: str = "page_reporting", **sections: Any) -> Scenario:
    """A 1 GiB guest whose two vCPUs memhog 256 MiB of THP once each, hinted by ``design``."""
    base = {
        "run": {"duration": "1500ms", "sample_interval": "10ms", "baseline": False},
        "guest": {"memory": "1GiB", "vcpus": 2, "boot_memory": "32MiB"},
        "workload": {"name": "memhog", "size": "256MiB", "thp": True, "loops": 1},
        # page_reporting's 2 s delay shortened, so short runs see several passes
        "policy": {"name": design, "delay": "50ms"}
        if design == "page_reporting"
        else {"name": design},
    }
    return load_scenario(base, **sections)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_design_gives_freed_memory_back(policy: str) -> None:
    # 640 MiB per vCPU: a design that hints per CPU at a threshold (v9: 128 x 4 MiB) needs
    # over 512 MiB of merged memory freed on one CPU, and 5.14+ kernels park some of it on
    # per-CPU lists.
    summary = run_scenario(scenario(policy, guest={"memory": "4GiB"}, workload={"size": "640MiB"}))
    freed = 2 * 640 * MiB
    assert summary["memory_returned_bytes"] >= 0.75 * freed
    assert summary["host"]["rss_bytes_end"] <= summary["host"]["rss_bytes_peak"] - 0.7 * freed
    worker = summary["worker"]
    assert worker["wakeups"] >= 1 and worker["polls"] >= worker["batches"] >= 1
    assert summary["virtio"]["kicks"] >= 1 and summary["host"]["discards"] >= 1
    assert summary["time_to_return_s"]["50"] is not None


def test_without_hinting_the_host_keeps_everything() -> None:
    summary = run_scenario(scenario("none"))
    assert summary["memory_returned_bytes"] == 0
    assert summary["host"]["rss_bytes_end"] == summary["host"]["rss_bytes_peak"]
    assert summary["time_to_return_s"] == {"50": None, "90": None, "99": None}
    assert summary["throughput_rel_to_none"] == 1.0


def test_a_phased_runs_baseline_keeps_the_baselines_own_rate() -> None:
    # The baseline's phases must not stand in for its whole-run figures.
    def summary(rate: float, phase_rates: list[float]) -> dict[str, Any]:
        return {
            "workload": {"faults": 100, "faults_per_s_per_vcpu": rate, "completed_s": None},
            "phases": [{"faults_per_s_per_vcpu": phase_rate} for phase_rate in phase_rates],
            "host": {"rss_bytes_end": 0},
            "lock_wait_ns": {"mean": 0.0},
        }

    ours = summary(30.0, [10.0, 40.0])
    MODEL.fold_baseline(ours, summary(60.0, [20.0, 50.0]))
    assert ours["baseline"]["faults_per_s_per_vcpu"] == 60.0
    assert ours["throughput_rel_to_none"] == 0.5
    assert [phase["throughput_rel_to_none"] for phase in ours["phases"]] == [0.5, 0.8]


def test_page_reporting_waits_its_two_second_delay() -> None:
    kernel_default = {"name": "page_reporting", "delay": "2s"}  # PAGE_REPORTING_DELAY
    early = run_scenario(scenario(policy=kernel_default, run={"duration": "1900ms"}))
    assert early["memory_returned_bytes"] == 0
    late = run_scenario(scenario(policy=kernel_default, run={"duration": "2500ms"}))
    assert late["memory_returned_bytes"] > 0


def test_worker_logs_every_wakeup_poll_and_sleep() -> None:
    log = MemoryLog(level="info")
    summary = run_scenario(scenario("scanner"), log)
    assert len(log.records("worker_wake")) == summary["worker"]["wakeups"]
    assert len(log.records("worker_poll")) == summary["worker"]["polls"]
    assert len(log.records("worker_sleep")) == summary["worker"]["wakeups"]
    reports = log.records("report")
    assert len(reports) == summary["worker"]["batches"]
    assert all(record["pages"] <= 64 * MiB // 4096 for record in reports)


class _ReportsWithoutIsolating(PageReportingPolicy):
    """A broken design: it hands the host free blocks it never took off the free lists."""

    def fill(self, allocator: BuddyAllocator) -> Batch:
        order = self.max_order - 1
        pfn = allocator.first_free(order)
        blocks = () if pfn is None else ((pfn, order),)
        return Batch(blocks, 1, last=True)


def test_host_discarding_a_page_the_guest_may_use_fails_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        building,
        "make_policy",
        lambda config: _ReportsWithoutIsolating(
            Limits(32, 9, 11, 10_000_000), PageReportingConfig()
        ),
    )
    with pytest.raises(ActorCrashed) as caught:
        run_scenario(scenario("page_reporting"))
    assert caught.value.actor == "host"
    assert isinstance(caught.value.cause, DiscardedPageInUse)
    assert "the guest may be using it" in str(caught.value)


FAULTS = [
    {"kind": "stall", "at": "1ms", "duration": "500ms"},
    {"kind": "reset", "at": "200ms"},
]


async def test_reported_pages_stay_isolated_until_the_host_acknowledges(
    actor_system: ActorSystem,
) -> None:
    machine = build(actor_system, scenario("scanner", faults=FAULTS))
    guest = machine.guests[0]
    assert guest.worker is not None
    await actor_system.sleep_ns(150_000_000)  # memory freed; the host is stalled
    allocator = guest.zone.allocator
    assert guest.worker.in_flight, "a report should be waiting on the stalled host"
    for flight in guest.worker.in_flight.values():
        for pfn, _ in flight.batch.blocks:
            assert allocator.state_of(pfn) is BlockState.ISOLATED
    assert allocator.isolated_pages == guest.worker.isolated_pages > 0


async def test_device_reset_mid_report_returns_every_isolated_page(
    actor_system: ActorSystem,
) -> None:
    machine = build(actor_system, scenario("scanner", faults=FAULTS))
    guest = machine.guests[0]
    assert guest.worker is not None
    await actor_system.sleep_ns(150_000_000)
    assert guest.zone.allocator.isolated_pages > 0
    await actor_system.sleep_ns(60_000_000)  # just after the reset, still inside the stall
    assert guest.worker.counters.dropped >= 1
    assert guest.zone.allocator.isolated_pages == guest.worker.isolated_pages
    assert guest.device.counters.resets == 1
    await actor_system.sleep_ns(1_000_000_000)  # the host resumes; hinting goes on
    assert guest.backing.discarded_pages > 0
    guest.monitor.check_conservation()
    guest.zone.allocator.check_invariants()


def test_host_supplied_batch_size_bounds_what_is_isolated() -> None:
    summary = run_scenario(scenario("scanner", host={"batch_size": "16MiB"}))
    assert summary["peak_isolated_bytes"] <= 16 * MiB
    supplied_by_guest = run_scenario(scenario("scanner"))
    assert supplied_by_guest["peak_isolated_bytes"] == 64 * MiB
    assert summary["worker"]["batches"] >= 3 * supplied_by_guest["worker"]["batches"]


def test_poisoning_guest_reports_only_if_the_host_offers_page_poison() -> None:
    refused = run_scenario(scenario(guest={"page_poison": True}, host={"page_poison": False}))
    assert refused["worker"]["batches"] == 0 and refused["memory_returned_bytes"] == 0
    # Negotiated, but QEMU skips the discard for a non-zero poison value: acked, not returned.
    poisoned = run_scenario(scenario(guest={"page_poison": True, "poison_value": 0xAA}))
    assert poisoned["worker"]["batches"] > 0 and poisoned["memory_returned_bytes"] == 0


def test_madv_free_keeps_reported_memory_until_the_host_needs_it() -> None:
    relaxed = run_scenario(scenario(host={"discard": "free"}))
    assert relaxed["memory_returned_bytes"] == 0
    assert relaxed["host"]["lazy_free_bytes"] >= 0.75 * 2 * 256 * MiB
    # Under pressure, reclaim takes lazily freed pages first, without swapping them.
    backing = GuestBacking(4096)
    backing.touch(0, 4096)
    backing.discard(0, 1024, lazy=True)
    assert backing.rss_pages == 4096 and backing.lazy_pages == 1024
    backing.touch(0, 8)  # a guest write cancels the lazy free of those pages
    assert backing.lazy_pages == 1016
    assert backing.evict(1016) == 1016
    assert (backing.swapped_pages, backing.discarded_pages, backing.rss_pages) == (0, 1016, 3080)
    assert backing.evict(10) == 10 and backing.swapped_pages == 10
    # Pages 0-7 (written again) and 1024-1025 were swapped: they come back as swap-ins.
    assert backing.touch(0, 2048) == (0, 1016, 10, 0, 0)


def test_overcommitted_host_swaps_far_less_with_hinting() -> None:
    config = MODEL.load(
        {
            **MODEL.unstructure(scenario()),
            "run": {"duration": "2s", "sample_interval": "20ms", "baseline": False},
            "guest": {"memory": "1GiB", "vcpus": 1, "boot_memory": "32MiB"},
            "workload": {"name": "memhog", "size": "768MiB", "thp": True, "pause": "300ms"},
            "host": {"guests": 3, "memory": "1536MiB", "stagger": "150ms"},
        },
        "<test>",
    )
    hinted = run_scenario(config)
    plain = run_scenario(attrs.evolve(config, policy=attrs.evolve(config.policy, name="none")))
    assert plain["host"]["swap_ins"] > 10 * max(1, hinted["host"]["swap_ins"])
    assert hinted["workload"]["faults"] > plain["workload"]["faults"]
    assert set(hinted["guests"]) == {"g0.guest", "g1.guest", "g2.guest"}


def test_false_ooms_are_counted_when_isolated_memory_would_have_served() -> None:
    path = CONFIGS / "false_oom.toml"
    config = MODEL.load(load_toml(path), str(path))
    summary = run_scenario(config)
    assert summary["false_ooms"] > 0
    assert summary["false_ooms"] <= summary["zone"]["failed_allocations"]
    assert summary["peak_isolated_bytes"] > 128 * MiB


fault_schedules = st.lists(
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["stall", "slowdown", "reset"]),
            "at": st.integers(0, 150).map(lambda ms: f"{ms}ms"),
            "duration": st.integers(1, 150).map(lambda ms: f"{ms}ms"),
            "factor": st.sampled_from([0.5, 4.0, 20.0]),
        }
    ),
    max_size=4,
)
workload_params = st.fixed_dictionaries(
    {
        "name": st.just("churn"),
        "mean_size": st.sampled_from(["512KiB", "2MiB", "8MiB"]),
        "mean_lifetime": st.sampled_from(["1ms", "10ms", "50ms"]),
        "max_live": st.sampled_from(["64MiB", "200MiB"]),
        "thp_fraction": st.sampled_from([0.0, 0.5, 1.0]),
    }
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from(POLICIES),
    faults=fault_schedules,
    workload=workload_params,
    seed=st.integers(0, 1000),
)
def test_no_page_is_lost_under_random_workloads_and_fault_schedules(
    policy: str, faults: list[dict[str, Any]], workload: dict[str, Any], seed: int
) -> None:
    config = scenario(
        policy,
        run={"duration": "150ms", "sample_interval": "2ms", "seed": seed, "baseline": False},
        guest={"memory": "512MiB", "vcpus": 2, "boot_memory": "16MiB"},
        workload=workload,
        faults=faults,
    )
    # The monitor checks conservation and the isolated-page ledger every 2 ms, the host checks
    # every discard against the guest's allocator, and the run ends with a full check: any
    # violation raises here.
    summary = run_scenario(config)
    assert summary["invariant_violations"] == 0


def test_a_slow_host_keeps_memory_isolated_longer() -> None:
    quick = run_scenario(scenario("scanner"))
    slow = run_scenario(
        scenario(
            "scanner", faults=[{"kind": "slowdown", "at": "0ms", "duration": "2s", "factor": 50.0}]
        )
    )
    assert slow["time_to_return_s"]["90"] > quick["time_to_return_s"]["90"]
    # About the same memory in the end (which blocks merge first depends on timing).
    assert slow["memory_returned_bytes"] == pytest.approx(quick["memory_returned_bytes"], rel=0.02)


def test_asynchronous_reports_with_event_index_kick_only_when_the_host_asked() -> None:
    small_reports = {"name": "percpu_capture", "capacity": 8, "threshold": 8}
    plain = run_scenario(scenario(policy=small_reports))
    suppressed = run_scenario(scenario(policy=small_reports, virtio={"event_idx": True}))
    assert plain["virtio"]["kicks"] == plain["virtio"]["reports"] > 4
    # With reports queued while the host is busy, the host asks to be kicked only for new work.
    assert suppressed["virtio"]["reports"] == plain["virtio"]["reports"]
    assert suppressed["virtio"]["kicks"] < plain["virtio"]["kicks"]
    assert suppressed["virtio"]["interrupts"] < plain["virtio"]["interrupts"]
    assert suppressed["memory_returned_bytes"] == plain["memory_returned_bytes"]


def test_asynchronous_reports_wait_for_room_when_the_virtqueue_is_full() -> None:
    # One report fills the queue: every further report waits for a completion first.
    one_at_a_time = run_scenario(
        scenario(
            policy={"name": "percpu_capture", "capacity": 8, "threshold": 8},
            virtio={"queue_size": 8},
        )
    )
    assert one_at_a_time["worker"]["queue_full"] > 0
    assert one_at_a_time["worker"]["batches"] == one_at_a_time["virtio"]["reports"] > 4
    assert one_at_a_time["memory_returned_bytes"] >= 0.75 * 2 * 256 * MiB


def test_a_violated_invariant_exits_1_and_leaves_no_summary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pagehint.runtime.harness.cli import main

    monkeypatch.setattr(
        building,
        "make_policy",
        lambda config: _ReportsWithoutIsolating(
            Limits(32, 9, 11, 10_000_000), PageReportingConfig()
        ),
    )
    out = tmp_path / "run"
    config = CONFIGS / "default.toml"
    assert main(["run", str(config), "--out", str(out), "--set", "run.duration=1s"]) == 1
    assert "actor 'host' crashed" in capsys.readouterr().out
    assert not (out / "summary.json").exists()
    error = orjson.loads((out / "error.json").read_bytes())
    assert error["status"] == "failed" and "DiscardedPageInUse" in error["error"]
    last = orjson.loads((out / "log.jsonl").read_bytes().splitlines()[-1])
    assert last["event"] == "run_failed"
