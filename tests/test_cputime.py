"""Where the guest's time goes: every vCPU's time by kind sums to the time simulated; hinting,
interrupts and TLB shootdowns land on the vCPUs that run them; phased workloads and start
jitter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagehint.actors.cputime import HINTING, IDLE, INTERRUPT, KINDS, CpuTime
from pagehint.actors.designs.registry import installed_designs
from pagehint.actors.scenario import Scenario
from pagehint.actors.scenario.outcomes import ABOUT
from pagehint.runtime import MemoryLog
from pagehint.runtime.harness.cli import main

from conftest import load_scenario, read_summary, run_cli, run_scenario

HINTING_DESIGNS = [name for name, design in installed_designs().items() if design.returns_memory]
MS = 1_000_000


def per_vcpu(summary: dict[str, Any], kind: str) -> list[int]:
    vcpus = summary["cpu_time_ns"]["vcpus"]
    return [vcpus[name][kind] for name in sorted(vcpus)]


# -- the ledger alone --------------------------------------------------------------------------
def test_a_halted_vcpu_takes_a_charge_in_its_idle_time_and_a_running_one_owes_it() -> None:
    cpu = CpuTime()
    end = cpu.plan_idle(0, (), 1000)
    cpu.charge(HINTING, 300, 100)  # runs on the idle CPU: no delay
    assert end == 1000 and cpu.owed_ns == 0
    assert cpu.totals[HINTING] == 300 and cpu.totals[IDLE] == 700
    cpu.charge(INTERRUPT, 900, 200)  # only 300 ns of idle time are left after the hinting
    assert cpu.owed_ns == 300 and cpu.totals[INTERRUPT] == 600
    cpu.woke()
    assert cpu.in_guest_mode(500)  # woken: in guest mode again
    assert cpu.busy(1000, 0, 0, 0, 50) == 1350  # the owed 300 ns delay what runs next
    assert sum(cpu.totals) == 1350 == sum(cpu.settled(1350))
    assert sum(cpu.settled(1100)) == 1100  # a sleep in progress is cut at the time asked


# -- the invariant, over random scenarios --------------------------------------------------------
WORKLOADS = st.sampled_from(
    [
        {"name": "page_fault1", "mapping": "8MiB"},
        {"name": "page_fault1", "mapping": "16MiB", "thp": True},
        {"name": "churn", "mean_size": "256KiB", "max_live": "16MiB"},
        {"name": "memhog", "size": "32MiB", "loops": 2, "pause": "3ms"},
        {
            "name": "phases",
            "phases": [
                {"name": "memhog", "size": "64MiB", "loops": 1},
                {"name": "page_fault1", "thp": True, "duration": "10ms", "tasks": 1},
                {"name": "churn", "duration": "5ms"},
            ],
        },
    ]
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    workload=WORKLOADS,
    design=st.sampled_from(["none", *HINTING_DESIGNS]),
    kernel=st.sampled_from(["5.10", "6.12"]),
    vcpus=st.integers(1, 3),
    duration_ms=st.integers(5, 40),
    jitter=st.sampled_from([None, "0ns", "50us"]),
    lazy=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_every_vcpu_s_time_by_kind_sums_to_the_time_simulated(
    workload: dict[str, Any],
    design: str,
    kernel: str,
    vcpus: int,
    duration_ms: int,
    jitter: str | None,
    lazy: bool,
    seed: int,
) -> None:
    policy: dict[str, Any] = {"name": design}
    if design in ("page_reporting", "percpu_capture"):
        policy |= {"delay": "1ms"} if design == "page_reporting" else {"threshold": 4}
    guest: dict[str, Any] = {"memory": "512MiB", "vcpus": vcpus, "boot_memory": "16MiB"}
    guest |= {"kernel": kernel} | ({"start_jitter": jitter} if jitter else {})
    config = load_scenario(
        {
            "run": {"duration": f"{duration_ms}ms", "seed": seed, "sample_interval": "1ms"},
            "guest": guest,
            "workload": workload,
            "policy": policy,
            "host": {"discard": "free" if lazy else "dontneed"},
        }
    )
    summary = run_scenario(config)  # every vCPU checks the sum at every operation, too
    for name, times in summary["cpu_time_ns"]["vcpus"].items():
        assert sum(times.values()) == config.run.duration, name
        assert min(times.values()) >= 0, (name, times)
    guest_times = summary["cpu_time_ns"]["guest"]
    assert sum(guest_times.values()) == vcpus * config.run.duration
    assert summary["hinting_cpu_ns"] == guest_times["hinting"]
    if design == "none":
        assert summary["hinting_cpu_ns"] == 0
    # Figures that mean what they say, whatever the scenario.
    assert 0 <= summary["zone"]["lock_utilisation"] <= 1
    returned = [summary["time_to_return_s"][level] for level in ("50", "90", "99")]
    reached = [t for t in returned if t is not None]
    assert reached == sorted(reached) and returned[: len(reached)] == reached
    assert summary["false_ooms"] <= summary["workload"]["oom_kills"]


# -- hinting runs on a vCPU ------------------------------------------------------------------
def _thp_trace(path: Path, cpu: int, blocks: int, free_at_s: float) -> Path:
    """perf script lines: CPU ``cpu`` allocates ``blocks`` THP-sized blocks, then frees them."""
    lines = []
    for index in range(blocks):
        pfn = 0x10000 + index * 512
        lines.append(
            f"memhog 100 [{cpu:03d}] {5000 + index * 1e-5:.6f}: kmem:mm_page_alloc: "
            f"page=0xffffea0000000000 pfn={pfn:#x} order=9 migratetype=1 gfp_flags=GFP_USER"
        )
    for index in range(blocks):
        pfn = 0x10000 + index * 512
        lines.append(
            f"memhog 100 [{cpu:03d}] {5000 + free_at_s + index * 1e-5:.6f}: kmem:mm_page_free: "
            f"page=0xffffea0000000000 pfn={pfn:#x} order=9"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def freed_on_vcpu1(tmp_path: Path, design: str, **guest: Any) -> Scenario:
    """Two vCPUs; only vCPU 1 allocates 256 MiB of THP-sized blocks and, 100 ms in, frees them.
    The guest kernel is 5.10, so the blocks go straight back to the zone."""
    trace = _thp_trace(tmp_path / "trace.txt", cpu=1, blocks=128, free_at_s=0.1)
    knobs: dict[str, dict[str, Any]] = {
        "page_reporting": {"delay": "20ms"},
        "percpu_capture": {"threshold": 8},
    }
    policy = {"name": design, **knobs.get(design, {})}
    return load_scenario(
        {
            "run": {"duration": "400ms", "baseline": False, "sample_interval": "10ms"},
            "guest": {"memory": "1GiB", "vcpus": 2, "kernel": "5.10", **guest},
            "workload": {"name": "trace", "path": str(trace)},
            "policy": policy,
        }
    )


@pytest.mark.parametrize("design", ["none", *HINTING_DESIGNS])
def test_hinting_costs_cpu_time_with_every_design_but_none(tmp_path: Path, design: str) -> None:
    summary = run_scenario(freed_on_vcpu1(tmp_path, design))
    if design == "none":
        assert summary["hinting_cpu_ns"] == 0
    else:
        assert summary["memory_returned_bytes"] > 0
        assert summary["hinting_cpu_ns"] > 0


def test_page_reporting_s_work_runs_on_the_vcpu_that_queued_it(tmp_path: Path) -> None:
    queued = run_scenario(freed_on_vcpu1(tmp_path, "page_reporting"))
    # vCPU 0 registered the driver, which queues the first pass; vCPU 1's frees queued the
    # later ones, and the system workqueue runs delayed work on the queuing CPU.
    assert all(ns > 0 for ns in per_vcpu(queued, "hinting"))
    pinned = run_scenario(freed_on_vcpu1(tmp_path, "page_reporting", hinting_vcpu=0))
    assert per_vcpu(pinned, "hinting")[1] == 0 < per_vcpu(pinned, "hinting")[0]


def test_percpu_capture_hints_inline_on_the_freeing_vcpu_whatever_the_pin(
    tmp_path: Path,
) -> None:
    summary = run_scenario(freed_on_vcpu1(tmp_path, "percpu_capture", hinting_vcpu=0))
    assert summary["worker"]["batches"] > 0
    vcpu0, vcpu1 = per_vcpu(summary, "hinting")
    assert vcpu0 == 0 < vcpu1


@pytest.mark.parametrize("taker", [0, 1])
def test_the_used_buffer_interrupt_lands_on_the_configured_vcpu(tmp_path: Path, taker: int) -> None:
    summary = run_scenario(freed_on_vcpu1(tmp_path, "page_reporting", interrupt_vcpu=taker))
    interrupts = per_vcpu(summary, "interrupt")
    assert summary["virtio"]["interrupts"] > 0
    assert interrupts[taker] > 0 and interrupts[1 - taker] == 0


# -- TLB shootdowns --------------------------------------------------------------------------
def busy_while_reported(tasks: int, **sections: Any) -> Scenario:
    """Four vCPUs memhog 1 GiB in all, then ``tasks`` of them fault THPs while page_reporting
    gives the freed memory back (the others halt)."""
    return load_scenario(
        {
            "run": {"duration": "400ms", "baseline": False, "sample_interval": "10ms"},
            "guest": {"memory": "2GiB", "vcpus": 4},
            "workload": {
                "name": "phases",
                "phases": [
                    {"name": "memhog", "size": "256MiB", "loops": 1},
                    {"name": "page_fault1", "thp": True, "duration": "1s", "tasks": tasks},
                ],
            },
            "policy": {"name": "page_reporting", "delay": "50ms"},
        },
        **sections,
    )


def test_a_shootdown_interrupts_each_vcpu_in_guest_mode() -> None:
    one, four = (run_scenario(busy_while_reported(tasks))["host"] for tasks in (1, 4))
    assert one["tlb_flushes"] > 0 and four["tlb_flushes"] > 0
    assert one["shootdowns"] == one["tlb_flushes"]  # only the one running vCPU
    assert four["shootdowns"] == 4 * four["tlb_flushes"]


def test_a_discard_costs_halted_vcpus_nothing_and_unmapped_ranges_nothing() -> None:
    halted = run_scenario(
        busy_while_reported(1, workload={"name": "memhog", "size": "256MiB", "loops": 1})
    )
    assert halted["host"]["tlb_flushes"] > 0 and halted["host"]["shootdowns"] == 0
    assert sum(per_vcpu(halted, "shootdown")) == 0
    # An idle guest's first pass reports memory it never touched: nothing mapped, no flush.
    untouched = run_scenario(busy_while_reported(1, workload={"name": "idle"}))
    assert untouched["host"]["discards"] > 0 and untouched["host"]["tlb_flushes"] == 0


def test_madv_free_unmaps_too_so_the_next_touch_is_an_exit() -> None:
    config = busy_while_reported(4, host={"discard": "free"})
    summary = run_scenario(config)
    assert summary["host"]["tlb_flushes"] > 0 and summary["host"]["shootdowns"] > 0
    assert summary["host"]["remaps"] > 0  # touched again before the host reclaimed them


# -- phases and jitter -----------------------------------------------------------------------
def test_a_phased_workload_runs_its_phases_in_order_and_reports_each() -> None:
    config = busy_while_reported(2)
    log = MemoryLog()
    summary = run_scenario(config, log)
    phases = summary["phases"]
    assert [(p["index"], p["name"]) for p in phases] == [(0, "memhog"), (1, "page_fault1")]
    assert phases[0]["vcpus"] == 4 and phases[0]["loops"] == 4  # memhog once on each vCPU
    assert phases[1]["vcpus"] == 2  # page_fault1's two tasks: its rate is theirs
    assert phases[1]["faults"] > 0 and phases[1]["faults_per_s_per_vcpu"] > 0
    assert sum(p["faults"] for p in phases) == summary["workload"]["faults"]
    marks = [r for r in log.records() if r["event"] == "phase"]
    for vcpu in ("vcpu0", "vcpu3"):
        assert [m["index"] for m in marks if m["actor"] == vcpu] == [0, 1]
    # vCPUs 2 and 3 had no task in page_fault1: they halted through it.
    idle = per_vcpu(summary, "idle")
    assert idle[2] > idle[0] and idle[3] > idle[1]
    for phase in phases:
        assert sum(phase["cpu_time_ns"].values()) == pytest.approx(phase["vcpu_s"] * 1e9, abs=1e3)


def test_vcpus_start_with_a_seeded_jitter_unless_it_is_zero() -> None:
    def starts(jitter: str | None, seed: int) -> list[int]:
        guest = {"vcpus": 4} | ({"start_jitter": jitter} if jitter else {})
        config = load_scenario(
            {
                "run": {"duration": "2ms", "seed": seed, "baseline": False},
                "guest": guest,
                "workload": {"name": "page_fault1"},
                "policy": {"name": "none"},
            }
        )
        log = MemoryLog(level="debug")
        run_scenario(config, log)
        first = {}
        for record in log.records():
            if record["event"] == "zone_alloc" and record["requester"] not in first:
                first[record["requester"]] = record["t"] - record["wait_ns"]
        return [first[f"vcpu{cpu}"] for cpu in range(4)]

    default = starts(None, 1)
    assert len(set(default)) == 4 and max(default) < 1298  # within one 4 KiB fault's time
    assert default == starts(None, 1) != starts(None, 2)  # seeded
    assert starts("0ns", 1) == [0, 0, 0, 0]  # lockstep


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"workload": {"name": "phases", "phases": []}}, "workload.phases: a phased workload"),
        (
            {"workload": {"name": "phases", "phases": [{"name": "memhog"}, {"name": "x"}]}},
            "workload.phases[1].name: unknown workload 'x'",
        ),
        (
            {"workload": {"name": "phases", "phases": [{"name": "churn"}, {"name": "idle"}]}},
            "workload.phases[0].duration: a churn phase never ends by itself",
        ),
        (
            {"workload": {"name": "phases", "phases": [{"name": "idle", "tasks": 9}]}},
            "workload.phases[0].tasks: 9 tasks, but guest.vcpus = 4",
        ),
        ({"guest": {"hinting_vcpu": 4}}, "guest.hinting_vcpu: no vCPU 4; guest.vcpus = 4"),
        ({"guest": {"interrupt_vcpu": -1}}, "guest.interrupt_vcpu: no vCPU -1"),
        ({"guest": {"start_jitter": "2s"}}, "guest.start_jitter: must be within 0..run.duration"),
    ],
)
def test_bad_phases_jitter_or_vcpu_index_exit_2_naming_the_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    document: dict[str, Any],
    expected: str,
) -> None:
    scenario = tmp_path / "bad.toml"
    base = {"run": {"duration": "1s"}, "guest": {"vcpus": 4}} | document
    if "guest" in document:
        base["guest"] = {"vcpus": 4} | document["guest"]
    scenario.write_text(tomli_w.dumps(base))
    assert main(["config", str(scenario)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_the_summary_documents_every_kind() -> None:
    assert all(f"{kind} (" in ABOUT["cpu_time_ns"] for kind in KINDS)


def test_each_phase_is_compared_with_the_same_phase_without_hinting(tmp_path: Path) -> None:
    scenario = tmp_path / "phased.toml"
    document = {
        "run": {"duration": "400ms", "sample_interval": "10ms", "baseline": True},
        "guest": {"memory": "2GiB", "vcpus": 4},
        "workload": {
            "name": "phases",
            "phases": [
                {"name": "memhog", "size": "256MiB", "loops": 1},
                {"name": "page_fault1", "thp": True, "duration": "1s"},
            ],
        },
        "policy": {"name": "page_reporting", "delay": "50ms"},
    }
    scenario.write_text(tomli_w.dumps(document))
    summary = read_summary(run_cli(scenario, tmp_path / "run"))
    faulting = summary["phases"][-1]
    # The shootdowns of page_reporting's discards delay the faulting vCPUs.
    assert summary["host"]["shootdowns"] > 0
    assert faulting["throughput_rel_to_none"] < 1.0
