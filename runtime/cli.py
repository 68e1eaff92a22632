"""The ``pagehint`` command."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from .demo import run_demo
from .log import RunLog
from .system import ActorSystem, run_simulation
from .version import VERSION


def _demo(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (out / "log.jsonl").open("wb") as log_file:
        log = RunLog(log_file, level=args.log_level)
        log.write_header(seed=args.seed, scenario="demo")

        async def main(system: ActorSystem) -> dict[str, object]:
            return await run_demo(system, clients=args.clients, requests=args.requests)

        summary = run_simulation(main, seed=args.seed, log=log)
    summary["wall_s"] = round(time.perf_counter() - started, 3)
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))

    table = Table(title=f"pagehint demo: {args.clients} clients, one server (seed {args.seed})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    latency = summary["metrics"]["client0.latency_ns"]  # type: ignore[index]
    table.add_row("virtual time", f"{summary['virtual_s']:.3f} s")
    p50_us, p99_us = latency["p50"] / 1e3, latency["p99"] / 1e3
    table.add_row("client0 latency p50 / p99", f"{p50_us:.1f} / {p99_us:.1f} us")
    mailbox = summary["server_mailbox"]
    table.add_row("server mailbox peak depth", str(mailbox["peak_depth"]))  # type: ignore[index]
    table.add_row("messages handled", str(mailbox["handled"]))  # type: ignore[index]
    table.add_row("wall time", f"{summary['wall_s']} s")
    Console().print(table)
    print(f"run directory: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pagehint",
        description="Model guest free page hinting as trio actors in virtual time.",
    )
    parser.add_argument("--version", action="version", version=f"pagehint {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser("demo", help="run the two-actor runtime demo")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--clients", type=int, default=4)
    demo.add_argument("--requests", type=int, default=1000)
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
