"""The ``pagehint`` command."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from .config import ConfigError, apply_overrides, load_toml
from .demo import run_demo
from .errors import PagehintError
from .log import RunLog
from .model import execute, load_model
from .system import ActorSystem, run_simulation
from .version import VERSION

DEFAULT_SCENARIO = Path("configs/default.toml")


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


def _run(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    path: Path | None = args.config
    if path is None and DEFAULT_SCENARIO.exists():
        path = DEFAULT_SCENARIO
    document = load_toml(path) if path is not None else {}
    source = str(path) if path is not None else "(built-in defaults)"
    config = model.load(apply_overrides(document, args.overrides), source)
    if args.seed is not None:
        config = model.with_seed(config, args.seed)
    stem = path.stem if path is not None else "default"
    out: Path = args.out or Path("runs") / f"{stem}-seed{model.seed(config)}"
    code, result = execute(model, config, out)
    console = Console()
    if code == 0:
        console.print(model.summary_table(result))
        console.print(f"run directory: {out}")
    else:
        console.print(f"[red]run failed[/red]: {result['error']}", highlight=False)
        console.print(f"run directory (incomplete, see error.json): {out}")
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pagehint",
        description="Model guest free page hinting as trio actors in virtual time.",
    )
    parser.add_argument("--version", action="version", version=f"pagehint {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a scenario into a run directory",
        description="Run a scenario (TOML) and write config.toml, log.jsonl and summary.json. "
        "Exit 0 on success, 2 on bad input, 1 when the run itself fails.",
    )
    run.add_argument(
        "config", nargs="?", type=Path, help=f"scenario file (default: {DEFAULT_SCENARIO})"
    )
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set guest.vcpus=16 (repeatable)",
    )
    run.add_argument("--seed", type=int, help="override run.seed")
    run.add_argument("--out", type=Path, help="run directory (default: runs/NAME-seedN)")
    run.add_argument("--model", default="guest", help=argparse.SUPPRESS)
    run.set_defaults(handler=_run)
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
    try:
        return int(args.handler(args))
    except ConfigError as error:
        print(f"pagehint: bad input\n{error}", file=sys.stderr)
        return 2
    except PagehintError as error:
        print(f"pagehint: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pagehint: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
