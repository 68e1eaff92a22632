"""Do two builds give the same results? Run the shipped scenarios with one seed, then compare.

A change that should not alter behaviour (a refactor, a speed-up) must leave every log byte for
byte as it was. Run this with the build before the change and with the build after, then
compare the two trees:

    python benchmarks/same_results.py run OUT_BEFORE      # on the commit before
    python benchmarks/same_results.py run OUT_AFTER       # on the commit after
    python benchmarks/same_results.py compare OUT_BEFORE OUT_AFTER

``run`` runs every scenario of configs/ twice with seed 1 (as shipped at info level, and 200 ms
at debug level, where every zone request is a line) and the shipped sweep, through the
installed ``pagehint`` command. ``compare`` checks every ``log.jsonl`` byte for byte but for
the header's ``wall_time`` (and, with ``--ignore-config-hash``, its ``config_hash``), every
``config.toml`` byte for byte (unless ``--ignore-config``), and every ``summary.json`` and
sweep ``index.jsonl`` but for wall-clock fields and absolute paths. Exit 0 when all agree, 1
otherwise, naming each file that differs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
SEED = "1"
DEBUG = ["--set", "run.log_level=debug", "--set", "run.duration=200ms"]
WALL_CLOCK = {"wall_s", "wall_time", "dir"}  # dir: an absolute path in a sweep's index


def run_all(out: Path) -> int:
    """Every shipped scenario, at info and at debug level, and the shipped sweep, into ``out``."""
    if out.exists():
        shutil.rmtree(out)
    failed = 0
    for config in sorted(CONFIGS.glob("*.toml")):
        for suffix, extra in (("", []), ("-debug", DEBUG)):
            target = out / f"{config.stem}{suffix}"
            argv = ["pagehint", "run", str(config), "--seed", SEED, "--out", str(target), *extra]
            failed += _run(argv, target.name)
    for sweep in sorted((CONFIGS / "sweeps").glob("*.toml")):
        target = out / f"sweep-{sweep.stem}"
        failed += _run(["pagehint", "sweep", str(sweep), "--out", str(target)], target.name)
    return 1 if failed else 0


def _run(argv: list[str], name: str) -> int:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    print(f"{name}: exit {done.returncode}")
    if done.returncode:
        print(done.stderr, file=sys.stderr)
    return 1 if done.returncode else 0


def _without_wall_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_wall_clock(v) for k, v in value.items() if k not in WALL_CLOCK}
    if isinstance(value, list):
        return [_without_wall_clock(item) for item in value]
    return value


def _same(before: Path, after: Path, *, ignore_config: bool, ignore_hash: bool) -> bool:
    if before.name == "log.jsonl":
        fields = "wall_time|config_hash" if ignore_hash else "wall_time"
        header = re.compile(rf'"({fields})":"[^"]*"'.encode())
        return bool(
            header.sub(b"", before.read_bytes(), count=2)
            == header.sub(b"", after.read_bytes(), count=2)
        )
    if before.name == "config.toml":
        return ignore_config or before.read_bytes() == after.read_bytes()
    if before.name == "summary.json":
        return bool(
            _without_wall_clock(orjson.loads(before.read_bytes()))
            == _without_wall_clock(orjson.loads(after.read_bytes()))
        )

    def rows(path: Path) -> list[bytes]:  # index.jsonl: rows in the order runs finished
        return sorted(
            orjson.dumps(_without_wall_clock(orjson.loads(line)), option=orjson.OPT_SORT_KEYS)
            for line in path.read_bytes().splitlines()
        )

    return rows(before) == rows(after)


def compare(before: Path, after: Path, *, ignore_config: bool, ignore_hash: bool) -> int:
    names = ("log.jsonl", "config.toml", "summary.json", "index.jsonl")
    counts = dict.fromkeys(names, 0)
    differ = []
    for path in sorted(p for p in before.rglob("*") if p.name in names):
        counts[path.name] += 1
        twin = after / path.relative_to(before)
        if not twin.exists() or not _same(
            path, twin, ignore_config=ignore_config, ignore_hash=ignore_hash
        ):
            differ.append(path.relative_to(before))
    missing = [
        p.relative_to(after)
        for p in after.rglob("*")
        if p.name in names and not (before / p.relative_to(after)).exists()
    ]
    for path in differ:
        print(f"differs: {path}")
    for path in missing:
        print(f"only in {after}: {path}")
    print(", ".join(f"{count} {name}" for name, count in counts.items()), "compared;", end=" ")
    print(f"{len(differ) + len(missing)} differ")
    return 1 if differ or missing or not counts["log.jsonl"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the shipped scenarios into OUT")
    run.add_argument("out", type=Path)
    both = commands.add_parser("compare", help="compare two trees that run wrote")
    both.add_argument("before", type=Path)
    both.add_argument("after", type=Path)
    both.add_argument("--ignore-config", action="store_true", help="config.toml may differ")
    both.add_argument(
        "--ignore-config-hash", action="store_true", help="the header's config_hash may differ"
    )
    args = parser.parse_args(argv)
    if args.command == "run":
        return run_all(args.out)
    return compare(
        args.before,
        args.after,
        ignore_config=args.ignore_config,
        ignore_hash=args.ignore_config_hash,
    )


if __name__ == "__main__":
    sys.exit(main())
