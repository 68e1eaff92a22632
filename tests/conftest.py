"""Helpers the test files share: scenarios from small documents, runs in virtual time and
through the CLI, the model's extra commands, and copies of run directories with edited logs.

Test files import them by name (``from conftest import load_scenario``): pytest puts this
folder on ``sys.path``, and mypy finds it beside the files it checks.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
import trio

from pagehint.actors.scenario import MODEL, Scenario
from pagehint.runtime import MemoryLog, VirtualClock, run_simulation
from pagehint.runtime.harness.cli import main

ROOT = Path(__file__).parent.parent
CONFIGS = ROOT / "configs"

_T = TypeVar("_T")


def load_scenario(base: Mapping[str, Any], **sections: Any) -> Scenario:
    """``base`` with ``sections`` laid over it, loaded as ``pagehint run`` loads a file.

    A section's keys are merged into the table of that name, except a ``workload`` that names
    another workload (its keys are another workload's) and values that are not tables
    (``faults``): those replace what ``base`` has.
    """
    document = dict(base)
    for name, values in sections.items():
        current = document.get(name)
        if (
            isinstance(current, Mapping)
            and isinstance(values, Mapping)
            and (name != "workload" or values.get("name", current["name"]) == current["name"])
        ):
            document[name] = {**current, **values}
        else:
            document[name] = values
    return MODEL.load(document, "<test>")


def run_scenario(config: Scenario, log: MemoryLog | None = None) -> dict[str, Any]:
    """Run ``config`` in virtual time with its own seed, as ``pagehint run`` does without a
    baseline; its summary."""
    return run_simulation(lambda system: MODEL.run(system, config), seed=config.run.seed, log=log)


def run_in_virtual_time(
    async_fn: Callable[[], Awaitable[_T]], clock: trio.abc.Clock | None = None
) -> _T:
    """``trio.run`` on pagehint's virtual clock (or ``clock``)."""
    return trio.run(async_fn, clock=clock or VirtualClock())


def run_cli(config: str | Path, out: Path, *overrides: str) -> Path:
    """``pagehint run CONFIG --out OUT --set OVERRIDE ...``, which must succeed; OUT.

    ``config`` is a path, or a file name in the project's configs/.
    """
    argv = ["run", str(CONFIGS / config), "--out", str(out)]
    for override in overrides:
        argv += ["--set", override]
    assert main(argv) == 0
    return out


def exit_code(argv: list[str]) -> int:
    """``pagehint ARGV``'s exit code, argparse's own exits (``SystemExit``) included."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def write_sweep(directory: Path, body: str, name: str = "sweep.toml") -> Path:
    """A sweep file over configs/churn.toml with ``body`` (its seed, tables, factors)."""
    path = directory / name
    path.write_text(f'base = "{CONFIGS / "churn.toml"}"\n{body}')
    return path


def run_sweep(directory: Path, text: str, workers: int = 1) -> Path:
    """``pagehint sweep`` of a sweep file with ``text`` into DIRECTORY/out, which must
    succeed; the sweep directory."""
    (directory / "sweep.toml").write_text(text)
    out = directory / "out"
    argv = ["sweep", str(directory / "sweep.toml"), "--workers", str(workers), "--out", str(out)]
    assert main(argv) == 0
    return out


class ModelCommand(Protocol):
    """A module registered under ``pagehint.commands`` (``analyze``, ``check``)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def command(self, args: argparse.Namespace) -> int: ...


def run_command(module: ModelCommand, *argv: str) -> int:
    """A model command as the CLI runs it: its arguments parsed from ``argv``; its exit code."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.command(parser.parse_args(list(argv)))


def read_summary(run_dir: Path) -> dict[str, Any]:
    summary: dict[str, Any] = orjson.loads((run_dir / "summary.json").read_bytes())
    return summary


def log_records(path: Path, *, drop_wall_clock: bool = False) -> list[dict[str, Any]]:
    """A log's records; without the header's wall-clock fields if asked, for comparisons."""
    records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    if drop_wall_clock:
        for record in records:
            for key in [key for key in record if key.startswith("wall")]:
                del record[key]
    return records


def copy_run(source: Path, target: Path, edit: Callable[[list[bytes]], list[bytes]]) -> Path:
    """A copy of run directory ``source`` at ``target`` whose log is ``edit(lines)``.

    The lines keep their line ends, so an edit can cut one short or leave one blank.
    """
    shutil.copytree(source, target)
    lines = (target / "log.jsonl").read_bytes().splitlines(keepends=True)
    (target / "log.jsonl").write_bytes(b"".join(edit(lines)))
    return target
