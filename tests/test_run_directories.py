"""Results on disk are whole or visibly incomplete: Dask runs written where the client asked,
one command per directory, interrupted sweeps whose index agrees with their runs, and no
earlier results mixed into or overwritten by a later command."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from pagehint.actors.analysis.database import open_run
from pagehint.runtime.harness.cli import main, run_progress
from pagehint.runtime.harness.model import execute, load_model
from pagehint.runtime.harness.rundirs import exclusive

from conftest import exit_code, log_records, write_sweep

FAST = ["--set", "run.duration=5ms", "--set", "run.baseline=false", "--set", "guest.memory=1GiB"]
GUEST = load_model("guest")
GRID = '[grid]\n"guest.vcpus" = [1, 2]\n"policy.name" = ["none", "bitmap"]\n'


def short_sweep(directory: Path, body: str = GRID) -> Path:
    """A sweep of short churn runs, ``body`` its factors."""
    common = '[set]\n"run.duration" = "5ms"\n"run.baseline" = false\n"guest.memory" = "256MiB"\n'
    return write_sweep(directory, f"seed = 7\n{common}{body}")


def index_rows(out: Path) -> list[dict[str, object]]:
    return log_records(out / "index.jsonl")


# -- Dask ---------------------------------------------------------------------------------------


@pytest.fixture
def remote_worker(tmp_path: Path) -> Iterator[str]:
    """A Dask scheduler, and one worker process started in a directory of its own."""
    distributed = pytest.importorskip("distributed")
    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    with distributed.LocalCluster(n_workers=0, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1"],
            cwd=elsewhere,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with distributed.Client(address) as client:
                client.wait_for_workers(1, timeout=60)
            yield address
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert not any(elsewhere.rglob("*.json")), "the worker wrote runs in its own directory"


def test_dask_runs_land_where_the_client_asked(
    tmp_path: Path, remote_worker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_cwd = tmp_path / "client-cwd"
    client_cwd.mkdir()
    sweep = short_sweep(tmp_path)
    monkeypatch.chdir(client_cwd)
    assert main(["sweep", str(sweep), "--scheduler", remote_worker, "--out", "relative"]) == 0
    rows = index_rows(client_cwd / "relative")
    assert len(rows) == 4 and all(row["status"] == "ok" for row in rows)
    for row in rows:
        run = client_cwd / "relative" / str(row["dir"])
        assert (run / "summary.json").is_file() and (run / "log.jsonl").is_file()
    assert len(open_run(client_cwd / "relative").sources) == 4  # analysis takes the sweep


@pytest.mark.parametrize("address", ["notanaddress", "http://localhost:8786", "tcp://:x"])
def test_a_malformed_scheduler_address_is_bad_input(
    capsys: pytest.CaptureFixture[str], address: str, tmp_path: Path
) -> None:
    argv = ["sweep", str(short_sweep(tmp_path)), "--scheduler", address, "--out", str(tmp_path)]
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert f"--scheduler: {address}:" in err and "Traceback" not in err


@pytest.mark.parametrize("reply", [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"])
def test_a_listener_that_is_not_a_scheduler_is_an_error_within_10_s(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reply: bytes
) -> None:
    pytest.importorskip("distributed")
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def answer() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            held.append(connection)
            if reply:
                connection.sendall(reply)

    threading.Thread(target=answer, daemon=True).start()
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    started = time.monotonic()
    argv = ["sweep", str(short_sweep(tmp_path)), "--scheduler", address, "--out", str(tmp_path)]
    try:
        assert exit_code(argv) == 2
    finally:
        server.close()
    assert time.monotonic() - started < 15
    assert f"--scheduler: {address}:" in capsys.readouterr().err


def test_a_scheduler_without_workers_is_an_error_after_the_stated_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=0, dashboard_address=None) as cluster:
        argv = ["sweep", str(short_sweep(tmp_path)), "--scheduler", cluster.scheduler_address]
        assert exit_code([*argv, "--worker-timeout", "1", "--out", str(tmp_path / "o")]) == 2
    assert "the scheduler has no workers (waited 1 s; --worker-timeout)" in capsys.readouterr().err


# -- one command per directory ------------------------------------------------------------------


def test_a_second_sweep_into_a_busy_directory_exits_2_naming_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with exclusive(out):  # what the first sweep holds while it runs
        argv = ["sweep", str(short_sweep(tmp_path)), "--workers", "1", "--out", str(out)]
        assert exit_code(argv) == 2
    assert f"is being written by another pagehint (pid {os.getpid()})" in capsys.readouterr().err
    assert not (out / "index.jsonl").exists()


def test_a_run_into_an_earlier_run_is_refused_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["run", "idle", *FAST, "--out", str(out)]) == 0
    first = (out / "summary.json").read_bytes()
    capsys.readouterr()
    assert exit_code(["run", "idle", *FAST, "--seed", "9", "--out", str(out)]) == 2
    earlier = "config.toml, log.jsonl, log.parquet, summary.json"
    assert f"holds earlier results ({earlier}); pass --force" in capsys.readouterr().err
    assert (out / "summary.json").read_bytes() == first
    assert main(["run", "idle", *FAST, "--seed", "9", "--out", str(out), "--force"]) == 0
    assert log_records(out / "log.jsonl")[0]["seed"] == 9


def test_a_run_without_out_writes_a_fresh_directory_beside_an_earlier_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "idle", *FAST]) == 0
    assert main(["run", "idle", *FAST]) == 0
    said = capsys.readouterr()
    assert "runs/idle-seed0 holds earlier results: this run's are in runs/idle-seed0-2" in said.err
    assert (tmp_path / "runs/idle-seed0/summary.json").is_file()
    assert (tmp_path / "runs/idle-seed0-2/summary.json").is_file()


def test_a_compare_into_an_earlier_comparison_is_refused_and_twins_are_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    variants = ["--variant", "policy.name=none", "--variant", "policy.name=bitmap"]
    argv = ["compare", "idle", *FAST, *variants, "--workers", "1", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    assert exit_code(argv) == 2
    assert "holds earlier results (index.jsonl, runs)" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    twice = ["compare", "idle", "idle", *FAST, "--workers", "1", "--out", str(tmp_path / "t")]
    assert exit_code(twice) == 2
    assert "idle and idle are the same scenario" in capsys.readouterr().err


def test_analyze_reads_only_the_runs_its_index_lists_and_a_resume_says_what_it_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    argv = ["sweep", str(short_sweep(tmp_path)), "--workers", "1", "--out", str(out)]
    assert main(argv) == 0
    assert main(argv) == 0
    assert f"reused 4 finished run(s) of 4 in {out}" in capsys.readouterr().err
    stray = out / "runs" / "from-an-earlier-sweep"
    assert main(["run", "idle", *FAST, "--out", str(stray)]) == 0
    names = {source.run for source in open_run(out).sources}
    assert len(names) == 4 and not any("earlier" in name for name in names)


# -- interrupts ---------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process parents from /proc")
def test_sigterm_ends_the_workers_and_leaves_an_index_that_agrees_with_the_runs(
    tmp_path: Path,
) -> None:
    sweep = short_sweep(tmp_path, '[zip]\n"run.duration" = ["5ms", "60s", "60s"]\n')
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pagehint.runtime.harness.cli", "sweep", str(sweep)]
    process = subprocess.Popen(
        [*command, "--workers", "2", "--out", str(out)], stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the short run done, a long one under way
        done = list(out.glob("runs/*/summary.json"))
        started = [log for log in out.glob("runs/*/log.jsonl") if log.stat().st_size > 0]
        if done and len(started) >= 2 and len(children_of(process.pid)) >= 2:
            break
        time.sleep(0.1)
    workers = children_of(process.pid)
    assert workers, "the sweep never started its workers"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    time.sleep(1)
    assert not [pid for pid in workers if alive(pid)], "workers outlived the sweep"
    rows = {str(row["dir"]): row for row in index_rows(out)}
    for run in (out / "runs").iterdir():
        row = rows[f"runs/{run.name}"]  # every run directory is in the index
        assert (row["status"] == "ok") == (run / "summary.json").is_file()
        assert (row["status"] == "interrupted") == (
            not (run / "summary.json").is_file() and not (run / "error.json").is_file()
        )
    assert sum(row["status"] == "ok" for row in rows.values()) == 1


# -- progress of a long run ---------------------------------------------------------------------


def test_a_run_reports_its_virtual_time_from_the_monitor_s_samples(tmp_path: Path) -> None:
    model = GUEST
    config = model.load({"run": {"duration": "300ms", "sample_interval": "50ms"}}, "<test>")
    reached: list[tuple[str, int]] = []
    code, _ = execute(
        model, config, tmp_path / "run", lambda which, ns: reached.append((which, ns))
    )
    assert code == 0
    for which in ("run", "baseline"):
        times = [ns for name, ns in reached if name == which]
        # a sample every 50 ms from 0, and the final one the run takes at its end
        assert times == [*range(0, 300_000_000, 50_000_000), 300_000_000]


def test_the_progress_bar_shows_virtual_time_on_a_terminal_and_nothing_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = GUEST.load({"run": {"duration": "100ms", "baseline": False}}, "<test>")
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=120)
    with run_progress(GUEST, config, terminal) as progress:
        assert progress is not None
        progress("run", 50_000_000)
    assert "0.05s / 0.1s virtual" in screen.getvalue()  # its last frame, drawn as it stops
    with run_progress(GUEST, config, None) as progress:
        assert progress is None
    assert main(["run", "idle", *FAST, "--out", str(tmp_path / "quiet")]) == 0
    assert "virtual" not in capsys.readouterr().err  # stderr is not a terminal under pytest
