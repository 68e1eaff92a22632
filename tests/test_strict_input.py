"""Strict inputs: a user's mistake is exit 2 with a message naming where it was made (file and
key, ``--set``, ``--variant``) and what was expected; never a traceback, never exit 1, never a
run computed from a value the user did not mean."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagehint.runtime.harness.cli import main
from pagehint.runtime.harness.config import flatten, load_toml
from pagehint.runtime.harness.sweep import RunSpec, run_spec

from conftest import CONFIGS, exit_code, read_summary

TINY_RUN = ["--set", "run.duration=2ms", "--set", "run.baseline=false"]


def bad_input(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``pagehint ARGV``, expecting bad input: exit 2 and no traceback; its stderr."""
    code = exit_code(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "CattrsError" not in err and "typing." not in err
    return err


def scenario_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


# -- values are taken as written --------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("run.baseline=no", '--set run.baseline=no: expected true or false, got "no"'),
        ("guest.vcpus=2.9", "--set guest.vcpus=2.9: expected an integer, got 2.9"),
        ("guest.vcpus=true", "--set guest.vcpus=true: expected an integer, got true"),
        ("run.duration=5", "--set run.duration=5: a duration needs a unit"),
        ("guest.memory=4096", "--set guest.memory=4096: a size needs a unit"),
        ("guest.memory=4gb", '"4gb" is ambiguous'),
        ("run.seed=18446744073709551616", "must be within 0..2^64-1"),
        ("run.sample_interval=10us", "run.sample_interval=10us: must be at least 1ms"),
        ("host.reclaim_interval=0", "host.reclaim_interval=0: must be at least 1ms"),
        ("run.log_level=loud", 'expected one of "debug", "info", "warning", "error", got "loud"'),
        ("host.backing=5", "--set host.backing=5: expected a quoted string, got 5"),
        ("workload.time_scale=nan", "expected a finite number, got nan"),
        ("faults=3", "--set faults=3: expected an array, got 3"),
        ("run=5", "--set run=5: expected a table, got 5"),
    ],
)
def test_a_bad_set_is_blamed_on_the_set_and_says_what_was_expected(
    capsys: pytest.CaptureFixture[str], override: str, expected: str
) -> None:
    argv = ["config", "trace" if "time_scale" in override else "idle", "--set", override]
    err = bad_input(capsys, argv)
    assert expected in err
    assert "default.toml" not in err and "idle.toml" not in err  # the file is not to blame


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('[guest]\nshuffle = "false"\n', 'guest.shuffle: expected true or false, got "false"'),
        ('[host]\nreporting = "no"\n', 'host.reporting: expected true or false, got "no"'),
        ("[guest]\nvcpus = 2.9\n", "guest.vcpus: expected an integer, got 2.9"),
        ("[run]\nduration = 5\n", "run.duration: a duration needs a unit"),
        ('[guest]\nmemory = "4GB"\n', 'guest.memory: "4GB" is ambiguous'),
    ],
)
def test_a_bad_value_in_a_file_names_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, expected: str
) -> None:
    path = scenario_file(tmp_path, table)
    assert f"{path}: {expected}" in bad_input(capsys, ["run", str(path), "--out", str(tmp_path)])
    assert not (tmp_path / "summary.json").exists()


def test_booleans_spelled_out_and_a_bare_zero_are_accepted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["config", "idle", "--set", "run.baseline=false", "--set", "host.stagger=0"]
    assert main(argv) == 0
    resolved = capsys.readouterr().out
    assert "baseline = false" in resolved and 'stagger = "0ns"' in resolved


def test_a_size_that_is_not_whole_kib_is_written_with_its_unit_and_reloads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["config", "memhog", "--set", "workload.size=1000000B", "--set", "host.batch_size=6K"]
    assert main(argv) == 0
    written = tmp_path / "resolved.toml"
    written.write_text(capsys.readouterr().out)
    document = flatten(load_toml(written))
    assert document["workload.size"] == "1000000B" and document["host.batch_size"] == "6KiB"
    assert main(["config", str(written)]) == 0
    assert capsys.readouterr().out == written.read_text()


def test_the_largest_seed_runs_and_logs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["run", "idle", *TINY_RUN, "--seed", str((1 << 64) - 1), "--out", str(out)]
    assert main(argv) == 0
    assert read_summary(out)["status"] == "ok"


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "idle", "--seed", str(1 << 64)],
        ["run", "idle", "--seed", "-1"],
        ["compare", "idle", "--workers", "0"],
        ["sweep", "contention", "--workers", "0"],
    ],
)
def test_bad_options_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    bad_input(capsys, argv)


def test_a_bad_variant_is_blamed_on_the_variant(capsys: pytest.CaptureFixture[str]) -> None:
    err = bad_input(capsys, ["compare", "idle", "--variant", "guest.vcpus=x", "--workers", "1"])
    assert '--variant guest.vcpus=x (run [guest.vcpus=x]): expected an integer, got "x"' in err
    err = bad_input(capsys, ["compare", "idle", "--variant", "guest.vcpus", "--workers", "1"])
    assert "--variant: expected KEY.PATH=VALUE, got 'guest.vcpus'" in err


def test_a_reader_that_leaves_early_ends_the_command_quietly() -> None:
    """``pagehint config --explain | head``: the pipe closes before the first write."""
    command = [sys.executable, "-m", "pagehint.runtime.harness.cli", "config", "--explain"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait() == 128 + signal.SIGPIPE and err == ""


def test_an_out_that_is_a_file_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    for command in (["run", "idle", *TINY_RUN], ["sweep", "contention"], ["compare", "idle"]):
        err = bad_input(capsys, [*command, "--out", str(taken)])
        assert f"--out: {taken}: cannot be made a directory" in err
    assert taken.read_text() == "not a directory"


@pytest.fixture
def small_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine of 64 MiB, too small for any run: a real one holds the largest guest, 16 TiB."""
    monkeypatch.setattr("pagehint.runtime.harness.model.machine_memory_bytes", lambda: 64 << 20)


@pytest.mark.usefixtures("small_machine")
def test_a_guest_the_machine_cannot_simulate_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["run", "idle", *TINY_RUN, "--set", "guest.memory=16TiB", "--out", str(out)]
    err = bad_input(capsys, argv)
    assert "scenario: too large for this machine: the simulator would need about" in err
    assert "host page state" in err and not any(out.glob("*"))


@pytest.mark.usefixtures("small_machine")
def test_a_sweep_worker_records_a_refusal_as_that_run_s_error(tmp_path: Path) -> None:
    document = {"guest": {"memory": "16TiB"}, "workload": {"name": "idle"}}
    spec = RunSpec("r0-huge", "memory=16TiB", {}, 0, 0, document, "sweep.toml")
    row = run_spec("guest", spec, str(tmp_path / "r0-huge"))
    assert row["status"] == "failed" and "too large for this machine" in row["error"]
    assert not (tmp_path / "r0-huge").exists()


# -- fuzz: every outcome is exit 0 or exit 2 --------------------------------------------------

KEYS = [
    *sorted(flatten(load_toml(CONFIGS / "default.toml"))),
    "guest.kernel",
    "guest.pcp_high",
    "host.memory",
    "host.discard",
    "host.backing",
    "policy.name",
    "policy.capacity",
    "workload.name",
    "costs.profile",
    "costs.zero_2m",
    "nonsense.key",
]
SCALARS = st.one_of(
    st.integers(min_value=-(1 << 70), max_value=1 << 70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "yes", "no", '""', "[]", "{}", "[1, 2]", "{a = 1}"]),
    st.builds(
        "{}{}".format,
        st.sampled_from(["0", "1", "2.5", "64", "4096", "-3", ".5", "1e3"]),
        st.sampled_from(["", "B", "KiB", "MiB", "gb", "G", "ns", "ms", "s", "min", "parsecs"]),
    ),
    st.text(max_size=12),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(KEYS), text=SCALARS)
def test_fuzzed_sets_through_config_exit_0_or_2(key: str, text: str) -> None:
    assert exit_code(["config", "--set", f"{key}={text}"]) in (0, 2)


# Values a run of a few milliseconds can afford: sizes and counts of small guests.
RUN_KEYS = {
    "guest.vcpus": st.integers(min_value=-2, max_value=64).map(str),
    "guest.memory": st.sampled_from(["0", "1MiB", "64MiB", "1GiB", "3GiB", "12345B", "-1G"]),
    "guest.boot_memory": st.sampled_from(["0", "4KiB", "1000B", "900MiB", "2GiB"]),
    "guest.max_order": st.integers(min_value=-1, max_value=22).map(str),
    "guest.pageblock_order": st.integers(min_value=-1, max_value=12).map(str),
    "guest.kernel": st.sampled_from(['"5.7"', "5.10", '"6.12"', "4.19", "x"]),
    "guest.pcp_high": st.integers(min_value=-1, max_value=5000).map(str),
    "policy.name": st.sampled_from(["none", "bitmap", "scanner", "percpu_capture", "x.y:Z"]),
    "policy.capacity": st.integers(min_value=-1, max_value=600).map(str),
    "policy.min_order": st.integers(min_value=-1, max_value=12).map(str),
    "virtio.queue_size": st.integers(min_value=-1, max_value=2048).map(str),
    "host.batch_size": st.sampled_from(["0", "4KiB", "2MiB", "1GiB", "3"]),
    "host.backing": st.sampled_from(['"4k"', '"thp"', '"hugetlb-1g"', '"nope"']),
    "host.memory": st.sampled_from(["0", "1MiB", "600MiB", "4GiB"]),
    "workload.name": st.sampled_from(["idle", "memhog", "churn", "page_fault2", "trace"]),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sets=st.dictionaries(st.sampled_from(sorted(RUN_KEYS)), st.just(""), min_size=1, max_size=4)
    .flatmap(
        lambda chosen: st.fixed_dictionaries({key: RUN_KEYS[key] for key in chosen}),
    )
    .map(lambda chosen: [f"{key}={value}" for key, value in chosen.items()])
)
def test_fuzzed_runs_of_a_few_milliseconds_exit_0_or_2(
    tmp_path_factory: pytest.TempPathFactory, sets: list[str]
) -> None:
    out = tmp_path_factory.mktemp("fuzz") / "run"
    argv = ["run", "--set", "guest.memory=1GiB", *TINY_RUN, "--out", str(out)]
    for text in sets:
        argv += ["--set", text]
    code = exit_code(argv)
    assert code in (0, 2)
    assert (out / "summary.json").exists() == (code == 0)
