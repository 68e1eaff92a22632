"""Config as an interface: explain, print, compare, sweep (process pool and Dask), resume."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pagehint.actors.scenario import GuestModel
from pagehint.runtime import ActorSystem
from pagehint.runtime.harness.cli import main
from pagehint.runtime.harness.config import load_toml
from pagehint.runtime.harness.model import RunFailed, load_model
from pagehint.runtime.harness.sweep import (
    Executor,
    execute_all,
    expand,
    load_sweep,
    with_baseline_filled,
)

from conftest import CONFIGS, write_sweep

FAST = {"run.duration": "5ms", "run.baseline": "false", "guest.memory": "256MiB"}


GRID = """
seed = 11
replicates = 2
paired = ["policy.name"]
[set]
"run.duration" = "5ms"
"run.baseline" = false
"guest.memory" = "256MiB"
[grid]
"guest.vcpus" = [1, 2]
"policy.name" = ["none", "bitmap"]
"""


def index_rows(out: Path) -> list[dict[str, Any]]:
    rows = [orjson.loads(line) for line in (out / "index.jsonl").read_bytes().splitlines()]
    for row in rows:
        row.pop("dir")
        row.pop("resumed", None)
    return rows


def test_explain_documents_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--explain"]) == 0
    text = capsys.readouterr().out
    for expected in (
        "[guest]",
        'memory = "4GiB"',
        "# Guest memory: one zone of this size.",
        "[policy]",
        "PAGE_REPORTING_CAPACITY",
        "[[faults]]",
        "kind = (required)",
        "[workload]  # one of several: this is Memhog",
        "zone_lock_per_block",
    ):
        assert expected in text, expected


def test_config_prints_the_resolved_scenario_with_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["config", str(CONFIGS / "default.toml"), "--set", "guest.vcpus=6", "--seed", "9"]
    assert main(args) == 0
    resolved = tmp_path / "resolved.toml"
    resolved.write_text(capsys.readouterr().out)
    document = load_toml(resolved)
    assert document["guest"]["vcpus"] == 6 and document["run"]["seed"] == 9
    assert document["guest"]["max_order"] == 11  # defaults filled in, not only what was set
    GuestModel().load(document, str(resolved))  # and it loads back


def test_sweep_expands_grid_times_replicates_with_paired_seeds(tmp_path: Path) -> None:
    specs = expand(load_sweep(write_sweep(tmp_path, GRID)))
    assert len(specs) == 2 * 2 * 2
    seeds = {(s.params["guest.vcpus"], s.params["policy.name"], s.replicate): s.seed for s in specs}
    assert seeds[(1, "none", 0)] == seeds[(1, "bitmap", 0)]  # paired: same workload
    assert seeds[(1, "none", 0)] != seeds[(2, "none", 0)]
    assert seeds[(1, "none", 0)] != seeds[(1, "none", 1)]
    assert len({spec.run_id for spec in specs}) == len(specs)
    again = expand(load_sweep(write_sweep(tmp_path, GRID)))
    assert [spec.seed for spec in again] == [spec.seed for spec in specs]


def test_zip_walks_in_step(tmp_path: Path) -> None:
    body = '[zip]\n"guest.vcpus" = [1, 2, 4]\n"workload.mean_size" = ["1MiB", "2MiB", "4MiB"]\n'
    specs = expand(load_sweep(write_sweep(tmp_path, body)))
    assert [(s.params["guest.vcpus"], s.params["workload.mean_size"]) for s in specs] == [
        (1, "1MiB"),
        (2, "2MiB"),
        (4, "4MiB"),
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("replicate = 2\n", "replicate: unknown key; did you mean 'replicates'?"),
        ('[zip]\n"guest.vcpus" = [1, 2]\n"policy.name" = ["none"]\n', "same length"),
        ('[grid]\n"guest.vcpus" = 4\n', "grid.guest.vcpus: expected a non-empty list"),
        (
            '[grid]\n"guest.vcpu" = [1, 2]\n',
            "grid.guest.vcpu = 1 (run vcpu=1, replicate 0): unknown key; did you mean 'vcpus'?",
        ),
        (
            '[grid]\n"guest.vcpus" = [1, 100000]\n',
            "grid.guest.vcpus = 100000 (run vcpus=100000, replicate 0): must be within 1..4096",
        ),
    ],
)
def test_bad_sweeps_exit_2_before_running_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, expected: str
) -> None:
    out = tmp_path / "out"
    assert main(["sweep", str(write_sweep(tmp_path, body)), "--out", str(out)]) == 2
    assert expected in capsys.readouterr().err
    assert not (out / "index.jsonl").exists()


def test_sweep_results_do_not_depend_on_worker_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = write_sweep(tmp_path, GRID)
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["sweep", str(sweep), "--workers", "1", "--out", str(one)]) == 0
    assert main(["sweep", str(sweep), "--workers", "2", "--out", str(two)]) == 0
    assert index_rows(one) == index_rows(two)
    assert len(index_rows(one)) == 8
    assert "8 of 8 runs ok" in capsys.readouterr().out


def submit_inline(fn: Callable[..., Any], /, *args: Any) -> Any:
    """Run a job at once in this process, so that a test can patch what the job calls."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    future.set_result(fn(*args))
    return future


INLINE = Executor(submit_inline, ships_files=False, stop=lambda: None)


def test_a_failing_run_is_recorded_and_the_others_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = GuestModel.run

    async def run_or_fail(self: GuestModel, system: ActorSystem, config: Any) -> Any:
        if config.guest.vcpus == 2:
            raise RunFailed("injected failure for two vCPUs", {})
        return await real_run(self, system, config)

    monkeypatch.setattr(GuestModel, "run", run_or_fail)
    specs = expand(load_sweep(write_sweep(tmp_path, GRID)))
    rows = execute_all("guest", specs, tmp_path / "out", INLINE)
    failed = [row for row in rows if row["status"] == "failed"]
    assert len(failed) == 4 and all(row["params"]["guest.vcpus"] == 2 for row in failed)
    assert all("injected failure" in row["error"] for row in failed)
    assert all(row["metrics"]["faults/s/vCPU"] > 0 for row in rows if row["status"] == "ok")
    assert len(index_rows(tmp_path / "out")) == 8


def test_an_interrupted_sweep_resumes_without_redoing_finished_runs(tmp_path: Path) -> None:
    specs = expand(load_sweep(write_sweep(tmp_path, GRID)))
    out = tmp_path / "out"
    execute_all("guest", specs, out, INLINE)
    # As if interrupted: one run never finished.
    unfinished = out / "runs" / specs[3].run_id / "summary.json"
    unfinished.unlink()
    rows = execute_all("guest", specs, out, INLINE)
    resumed = [row.get("resumed", False) for row in rows]
    assert resumed.count(False) == 1 and resumed[3] is False
    assert unfinished.exists()


def test_compare_runs_variants_with_the_same_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["compare", str(CONFIGS / "churn.toml"), "--out", str(tmp_path / "cmp")]
    args += [arg for key, value in FAST.items() for arg in ("--set", f"{key}={value}")]
    args += ["--variant", "policy.name=none", "--variant", "policy.name=bitmap", "--workers", "1"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "[policy.name=none]" in table and "[policy.name=bitmap]" in table
    assert "faults/s/vCPU" in table and "lock wait p99" in table
    runs = sorted((tmp_path / "cmp" / "runs").iterdir())
    seeds = {load_toml(run / "config.toml")["run"]["seed"] for run in runs}
    assert len(runs) == 2 and seeds == {1}


def test_dask_cluster_runs_the_sweep(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    sweep = write_sweep(tmp_path, GRID)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        out = tmp_path / "dask"
        assert (
            main(["sweep", str(sweep), "--scheduler", cluster.scheduler_address, "--out", str(out)])
            == 0
        )
    local = tmp_path / "local"
    assert main(["sweep", str(sweep), "--workers", "1", "--out", str(local)]) == 0
    assert index_rows(out) == index_rows(local)


def test_unreachable_scheduler_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = write_sweep(tmp_path, GRID)
    code = main(["sweep", str(sweep), "--scheduler", "tcp://127.0.0.1:1", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err  # nothing listens there: connect retries until the deadline
    assert "--scheduler: tcp://127.0.0.1:1: " in err and "10 s" in err


def _row(policy: str, vcpus: int, rate: float, replicate: int = 0) -> dict[str, Any]:
    metrics = {"faults/s/vCPU": rate, "throughput vs none": 1.0 if policy == "none" else None}
    params = {"policy.name": policy, "guest.vcpus": vcpus}
    return {"status": "ok", "params": params, "replicate": replicate, "metrics": metrics}


def test_a_run_without_its_own_baseline_takes_only_its_paired_one() -> None:
    model = load_model("guest")
    rows = [_row("none", 1, 100.0), _row("none", 2, 50.0), _row("bitmap", 2, 40.0)]
    (_, _, paired_fill) = with_baseline_filled(model, rows, ["policy.name"])
    assert paired_fill["metrics"]["throughput vs none"] == 0.8  # vcpus 2's none run, not 1's
    (_, _, unpaired) = with_baseline_filled(model, rows)  # other designs, other seeds: none
    assert unpaired["metrics"]["throughput vs none"] is None
    compared = [{**row, "params": {}} for row in rows]  # a compare's rows: the first baseline
    assert with_baseline_filled(model, compared)[2]["metrics"]["throughput vs none"] == 0.4
