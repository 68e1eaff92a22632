"""`pagehint run`: run directories, exit codes, bad input, determinism across processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pagehint.runtime.harness.cli import main

from conftest import CONFIGS, log_records, read_summary

SHORT = ["--set", "run.duration=20ms", "--set", "guest.memory=512MiB", "--set", "guest.vcpus=2"]


def test_run_writes_config_log_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["run", str(CONFIGS / "default.toml"), "--out", str(out), *SHORT]) == 0
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["status"] == "ok"
    assert summary["workload"]["faults"] > 0
    assert set(summary["lock_wait_ns"]) == {"p50", "p99", "max"}
    assert summary["host"]["rss_bytes_end"] > 0
    header = log_records(out / "log.jsonl", drop_wall_clock=True)[0]
    assert header["event"] == "header" and header["seed"] == 0 and header["model"] == "guest"
    assert "vcpus = 2" in (out / "config.toml").read_text()
    assert "zone lock wait" in capsys.readouterr().out


def test_resolved_config_reruns_to_the_same_log(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["run", str(CONFIGS / "churn.toml"), "--out", str(first), *SHORT]) == 0
    assert main(["run", str(first / "config.toml"), "--out", str(second)]) == 0
    assert log_records(first / "log.jsonl", drop_wall_clock=True) == log_records(
        second / "log.jsonl", drop_wall_clock=True
    )


def test_seeded_run_is_identical_in_two_processes(tmp_path: Path) -> None:
    logs = []
    for hash_seed in ("0", "977"):
        out = tmp_path / f"hash{hash_seed}"
        command = [sys.executable, "-m", "pagehint.runtime.harness.cli", "run"]
        command += [str(CONFIGS / "churn.toml"), "--out", str(out), *SHORT, "--seed", "5"]
        command += ["--set", "run.log_level=debug", "--set", "run.duration=300ms"]
        subprocess.run(command, check=True, env=dict(os.environ, PYTHONHASHSEED=hash_seed))
        logs.append(log_records(out / "log.jsonl", drop_wall_clock=True))
    assert len(logs[0]) > 200  # a line per zone request: any reordering shows
    assert logs[0] == logs[1]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["guest.vcpu=4"], "--set guest.vcpu=4: unknown key; did you mean 'vcpus'?"),
        (["guest.vcpus=four"], '--set guest.vcpus=four: expected an integer, got "four"'),
        (["guest.memory=lots"], '--set guest.memory=lots: a size needs a unit, such as "64MiB"'),
        (["run.duration=3 parsecs"], "--set run.duration=3 parsecs: a duration needs a unit"),
        (
            ["guest.boot_memory=8GiB"],
            "--set guest.boot_memory=8GiB: 8GiB plus the zone's high watermark",
        ),
        (
            ["guest.memory=20MiB", "guest.boot_memory=19.5MiB"],
            "(852KiB) does not fit in guest.memory 20MiB",
        ),
        (["guest.pcp_high=10"], "guest.pcp_high (10) must be at least pcp->batch (63)"),
        (
            ["workload.name=fork_bomb"],
            "--set workload.name=fork_bomb: unknown workload 'fork_bomb'; choose one of",
        ),
        (["nonsense"], "expected KEY.PATH=VALUE"),
    ],
)
def test_bad_input_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: list[str], expected: str
) -> None:
    out = tmp_path / "run"
    args = ["run", str(CONFIGS / "default.toml"), "--out", str(out)]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()


def test_toml_syntax_error_names_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[guest]\nvcpus = 4\nmemory = 4GiB\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "bad.toml: TOML syntax error" in err and "line 3" in err


def test_missing_scenario_file_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read the scenario file" in capsys.readouterr().err


def test_malformed_trace_line_is_reported_with_its_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.txt"
    good = "bash 1 [000] 10.000001: kmem:mm_page_alloc: page=0x1 pfn=0x10 order=0 gfp_flags=X\n"
    trace.write_text(good + "this is not perf output\n")
    scenario = tmp_path / "s.toml"
    scenario.write_text('[workload]\nname = "trace"\npath = "t.txt"\n')
    assert main(["run", str(scenario), "--out", str(tmp_path / "run")]) == 2
    assert "t.txt:2: expected an event line of perf script" in capsys.readouterr().err


def test_running_out_of_memory_is_an_event_not_a_crash(tmp_path: Path) -> None:
    out = tmp_path / "oom"
    assert main(["run", str(CONFIGS / "oom.toml"), "--out", str(out)]) == 0
    summary = read_summary(out)
    assert summary["workload"]["oom_kills"] > 0
    assert summary["zone"]["failed_allocations"] > 0
    events = {record["event"] for record in log_records(out / "log.jsonl")}
    assert {"alloc_failed", "oom_kill"} <= events


def test_every_shipped_config_loads() -> None:
    from pagehint.actors.scenario import MODEL
    from pagehint.runtime.harness.config import load_toml

    for path in sorted(CONFIGS.glob("*.toml")):
        MODEL.load(load_toml(path), str(path))


def test_outside_a_checkout_the_installed_examples_are_run_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pagehint.actors.scenario import MODEL
    from pagehint.runtime.harness.config import load_toml

    monkeypatch.chdir(tmp_path)  # no configs/ here: what a user of an installed pagehint sees
    installed = {path.name for path in MODEL.examples.glob("*.toml")}
    assert installed == {path.name for path in CONFIGS.glob("*.toml")}
    assert main(["run", "--set", "run.duration=2s"]) == 0  # the default scenario, installed
    config = (tmp_path / "runs/default-seed0/config.toml").read_text()
    default = load_toml(CONFIGS / "default.toml")
    assert f'name = "{default["workload"]["name"]}"' in config
    assert main(["run", "trace", *SHORT]) == 0  # its trace file resolves next to it
    summary = orjson.loads((tmp_path / "runs/trace-seed0/summary.json").read_bytes())
    assert summary["workload"]["faults"] > 0


def test_an_unknown_example_name_is_bad_input_listing_the_installed_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "memhgo"]) == 2
    assert "memhgo: no such file, nor the name of an installed example" in capsys.readouterr().err
    assert main(["sweep", "contetnion"]) == 2
    err = capsys.readouterr().err
    assert "(installed: contention)" in err
    assert not (tmp_path / "runs").exists()  # nothing half-written
