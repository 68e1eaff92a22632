"""The ``pagehint`` command."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..determinism import MAX_SEED
from ..errors import PagehintError
from ..log import RunLog
from ..system import ActorSystem, run_simulation
from ..version import VERSION
from .config import (
    ConfigError,
    apply_overrides,
    apply_values,
    flatten,
    load_toml,
    notices_shown_as,
    override_origins,
    to_toml,
)
from .demo import run_demo
from .model import Model, execute, load_config, load_model, output_directory
from .sweep import (
    comparison_spec,
    comparison_table,
    execute_all,
    expand,
    load_sweep,
    open_executor,
    sweep_table,
    validate,
)

DEFAULT_SCENARIO = Path("configs/default.toml")
COMMAND_ENTRY_POINT_GROUP = "pagehint.commands"


def _console() -> Console:
    """Tables at full width even when piped (rich would fold them to 80 columns)."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _demo(args: argparse.Namespace) -> int:
    out = output_directory(args.out)
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


def _installed_example(model: Model, name: str, folder: str = "") -> Path | None:
    if model.examples is None:
        return None
    path = model.examples / folder / f"{name}.toml"
    return path if path.is_file() else None


def _named_file(model: Model, argument: Path, folder: str = "") -> Path:
    """A file argument as given, or else the model's installed example of that name.

    Anything that looks like a path (a suffix, a directory part) or exists is taken as given;
    a missing file is reported when it is read.
    """
    if argument.exists() or argument.suffix or len(argument.parts) > 1:
        return argument
    installed = _installed_example(model, str(argument), folder)
    if installed is not None:
        return installed
    names = (
        sorted(p.stem for p in (model.examples / folder).glob("*.toml")) if model.examples else []
    )
    listing = f" (installed: {', '.join(names)})" if names else ""
    raise ConfigError(
        str(argument), [f"no such file, nor the name of an installed example{listing}"]
    )


def _scenario_file(model: Model, config: Path | None) -> Path | None:
    """The scenario a command runs: the one named, else ./configs/default.toml in a project
    checkout, else the model's installed default (else None: the schema's defaults)."""
    if config is not None:
        return _named_file(model, config)
    if DEFAULT_SCENARIO.exists():
        return DEFAULT_SCENARIO
    return _installed_example(model, "default")


def _scenario_document(
    model: Model, config: Path | None, overrides: list[str]
) -> tuple[dict[str, Any], str]:
    """The scenario file (or the default one) with overrides applied, and its name."""
    path = _scenario_file(model, config)
    document = load_toml(path) if path is not None else {}
    source = str(path) if path is not None else "(built-in defaults)"
    return apply_overrides(document, overrides), source


def _load(model: Model, args: argparse.Namespace) -> tuple[Any, str]:
    document, source = _scenario_document(model, args.config, args.overrides)
    config = load_config(model, document, source, override_origins(args.overrides))
    if args.seed is not None:
        config = model.with_seed(config, args.seed)
    return config, source


def _seed(text: str) -> int:
    """``--seed``: a seed a run can log, 0..2^64-1."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be within 0..2^64-1, got {text}")
    return seed


def _workers(text: str) -> int:
    """``--workers``: at least one process."""
    try:
        workers = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes, got {text!r}") from None
    if workers < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {workers}")
    return workers


def _run(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    config, source = _load(model, args)
    stem = Path(source).stem if source.endswith(".toml") else "default"
    out = output_directory(args.out or Path("runs") / f"{stem}-seed{model.seed(config)}")
    code, result = execute(model, config, out)
    console = _console()
    if code == 0:
        console.print(model.summary_table(result))
        console.print(f"run directory: {out}")
    else:
        console.print(f"[red]run failed[/red]: {result['error']}", highlight=False)
        console.print(f"run directory (incomplete, see error.json): {out}")
    return code


def _config(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    config, _ = _load(model, args)
    if args.explain:
        print("\n".join(model.explain(config)).strip())
        return 0
    print(to_toml(model.unstructure(config)), end="")
    return 0


def _compare(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    configs: list[Path | None] = args.configs or [None]
    specs = []
    for config in configs:
        base, source = _scenario_document(model, config, args.overrides)
        path = Path(source)
        for variant in args.variants or [""]:
            pairs = [pair for pair in variant.split(",") if pair.strip()]
            document = apply_overrides(base, pairs, "--variant")
            origins = override_origins(args.overrides) | override_origins(pairs, "--variant")
            if args.seed is not None:
                document = apply_values(document, {"run.seed": args.seed}, "--seed")
            label = (path.stem if len(configs) > 1 else "") + (f"[{variant}]" if variant else "")
            specs.append(comparison_spec(label or path.stem, document, source, origins))
    validate(args.model, specs)
    out = output_directory(args.out or Path("runs") / "compare")
    with open_executor(args.workers, args.scheduler) as executor, _progress(len(specs)) as done:
        rows = execute_all(args.model, specs, out, executor, done)
    _console().print(comparison_table(model, rows))
    print(f"runs: {out}")
    return 0 if all(row["status"] == "ok" for row in rows) else 1


def _sweep(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    sweep_file = _named_file(model, args.sweep, "sweeps")
    sweep = load_sweep(sweep_file)
    overrides = apply_overrides({}, args.overrides)
    specs = expand(sweep, flatten(overrides), override_origins(args.overrides))
    validate(args.model, specs)
    out = output_directory(args.out or Path("runs") / sweep_file.stem)
    (out / "sweep.toml").write_text(sweep_file.read_text(encoding="utf-8"), encoding="utf-8")
    with open_executor(args.workers, args.scheduler) as executor, _progress(len(specs)) as done:
        rows = execute_all(args.model, specs, out, executor, done)
    _console().print(sweep_table(model, sweep, rows))
    failed = [row for row in rows if row["status"] != "ok"]
    for row in failed:
        print(
            f"failed: {row['label']} replicate {row['replicate']}: {row['error']}", file=sys.stderr
        )
    print(f"{len(rows) - len(failed)} of {len(rows)} runs ok; index: {out / 'index.jsonl'}")
    return 1 if failed else 0


@contextmanager
def _progress(total: int) -> Iterator[Callable[[dict[str, Any]], None]]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=not sys.stderr.isatty(),
        console=Console(stderr=True),
    ) as progress:
        task = progress.add_task("runs", total=total)
        yield lambda row: progress.advance(task)


def _add_scenario_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set guest.vcpus=16 (repeatable)",
    )
    parser.add_argument("--seed", type=_seed, help="override run.seed")
    parser.add_argument("--model", default="guest", help=argparse.SUPPRESS)


def _add_executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers", type=_workers, default=os.cpu_count() or 1, help="processes (default: CPUs)"
    )
    parser.add_argument(
        "--scheduler", metavar="ADDRESS", help="run on the Dask cluster at ADDRESS instead"
    )


def _add_model_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Commands a model package registers (analyze, check): found by entry point, so the
    runtime never imports the model (actors -> protocol -> runtime)."""
    for point in sorted(entry_points(group=COMMAND_ENTRY_POINT_GROUP), key=lambda p: p.name):
        module = point.load()
        parser = commands.add_parser(point.name, help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(parser)
        parser.set_defaults(handler=module.command)


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
        "config",
        nargs="?",
        type=Path,
        help=f"scenario file, or the name of an installed example such as memhog (default: "
        f"{DEFAULT_SCENARIO} if present, else the installed default)",
    )
    _add_scenario_options(run)
    run.add_argument("--out", type=Path, help="run directory (default: runs/NAME-seedN)")
    run.set_defaults(handler=_run)

    config = commands.add_parser(
        "config", help="print a scenario resolved with every default, or --explain every key"
    )
    config.add_argument("config", nargs="?", type=Path, help="as for run")
    config.add_argument("--explain", action="store_true", help="document every config key")
    _add_scenario_options(config)
    config.set_defaults(handler=_config)

    compare = commands.add_parser(
        "compare",
        help="run scenarios (or variants of one) with the same seed, side by side",
        description="Run each CONFIG (or each --variant of one) with the same seed and print "
        "one table of outcomes, with differences relative to the first.",
    )
    compare.add_argument("configs", nargs="*", type=Path, metavar="CONFIG")
    compare.add_argument(
        "--variant",
        dest="variants",
        action="append",
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="one column per variant, e.g. --variant policy.name=none (repeatable)",
    )
    _add_scenario_options(compare)
    _add_executor_options(compare)
    compare.add_argument("--out", type=Path, help="directory for the runs (default: runs/compare)")
    compare.set_defaults(handler=_compare)

    sweep = commands.add_parser(
        "sweep",
        help="run a grid of factors over a base scenario, replicated over seeds",
        description="Run every combination of a sweep file's factors into one directory with "
        "an index; resumes an interrupted sweep; a failed run does not stop the others.",
    )
    sweep.add_argument(
        "sweep", type=Path, metavar="SWEEP", help="sweep file, or an installed one's name"
    )
    _add_scenario_options(sweep)
    _add_executor_options(sweep)
    sweep.add_argument("--out", type=Path, help="sweep directory (default: runs/SWEEP-NAME)")
    sweep.set_defaults(handler=_sweep)
    _add_model_commands(commands)
    demo = commands.add_parser("demo", help="run the two-actor runtime demo")
    demo.add_argument("--seed", type=_seed, default=0)
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
        with notices_shown_as(lambda notice: print(f"pagehint: notice: {notice}", file=sys.stderr)):
            code = int(args.handler(args))
            sys.stdout.flush()  # within reach of the BrokenPipeError handler below
            return code
    except ConfigError as error:
        print(f"pagehint: bad input\n{error}", file=sys.stderr)
        return 2
    except PagehintError as error:
        print(f"pagehint: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pagehint: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (pagehint config --explain | head): stop quietly, as a tool that
        # SIGPIPE ends does, and keep Python from complaining about stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
