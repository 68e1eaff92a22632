"""The ``pagehint`` command."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Table

from ..clock import NS_PER_S
from ..determinism import MAX_SEED
from ..errors import PagehintError
from ..log import RunLog
from ..system import ActorSystem, run_simulation
from ..version import VERSION
from .config import (
    ConfigError,
    apply_overrides,
    apply_values,
    config_hash,
    flatten,
    load_toml,
    notices_shown_as,
    override_origins,
    to_toml,
)
from .dask import WORKER_TIMEOUT_S
from .demo import run_demo
from .logdb import LOG_NAME, write_copy
from .model import Model, Progress, check_fits, execute, load_config, load_model
from .rundirs import RESULT_FILE_ORDER, claimed, output_directory
from .sweep import (
    RUNS,
    RunSpec,
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
    with (out / LOG_NAME).open("wb") as log_file:
        log = RunLog(log_file, level=args.log_level)
        log.write_header(seed=args.seed, scenario="demo")

        async def main(system: ActorSystem) -> dict[str, object]:
            return await run_demo(system, clients=args.clients, requests=args.requests)

        summary = run_simulation(main, seed=args.seed, log=log)
    summary["wall_s"] = round(time.perf_counter() - started, 3)
    write_copy(out / LOG_NAME)  # before summary.json, as a model's run writes them
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


def _bounded_integer(
    what: str, low: int, high: int | None = None, *, bounds: str
) -> Callable[[str], int]:
    """An argparse type: an integer within ``low..high``, else a message saying ``what`` is
    expected or the ``bounds`` it must keep."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


_seed = _bounded_integer("an integer", 0, MAX_SEED, bounds="within 0..2^64-1")  # what a log holds
_workers = _bounded_integer("a number of processes", 1, bounds="at least 1")


SET_RESULTS = ("index.jsonl", RUNS)  # a comparison's or sweep's


def _run(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    config, source = _load(model, args)
    stem = Path(source).stem if source.endswith(".toml") else "default"
    default = Path("runs") / f"{stem}-seed{model.seed(config)}"
    check_fits(model, config)  # before a directory is made for it
    with claimed(args.out, default, RESULT_FILE_ORDER, force=args.force) as (out, said):
        if said:
            print(f"pagehint: {said}", file=sys.stderr)
        bar = Console(stderr=True) if sys.stderr.isatty() and not args.quiet else None
        with run_progress(model, config, bar) as progress:
            code, result = execute(model, config, out, progress)
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
    given = override_origins(args.overrides)
    for config in configs:
        base, source = _scenario_document(model, config, args.overrides)
        path = Path(source)
        for variant in args.variants or [""]:
            pairs = [pair for pair in variant.split(",") if pair.strip()]
            document = apply_overrides(base, pairs, "--variant")
            origins = given | override_origins(pairs, "--variant")
            if args.seed is not None:
                document = apply_values(document, {"run.seed": args.seed}, "--seed")
            label = (path.stem if len(configs) > 1 else "") + (f"[{variant}]" if variant else "")
            specs.append(comparison_spec(label or path.stem, document, source, origins))
    _refuse_twins(specs)
    validate(args.model, specs)
    default = Path("runs") / "compare"
    with claimed(args.out, default, SET_RESULTS, force=args.force) as (out, said):
        if said:
            print(f"pagehint: {said}", file=sys.stderr)
        rows = _execute(args, specs, out)
    _console().print(comparison_table(model, rows))
    print(f"runs: {out}")
    return 0 if all(row["status"] == "ok" for row in rows) else 1


def _refuse_twins(specs: list[RunSpec]) -> None:
    """A comparison of a run with itself says nothing: one scenario (or variant) named twice
    is bad input, named as the user gave it."""
    seen: dict[str, RunSpec] = {}
    for spec in specs:
        key = config_hash(orjson.dumps(spec.document, option=orjson.OPT_SORT_KEYS).decode())
        if key in seen:
            raise ConfigError(
                "compare",
                [
                    f"{seen[key].label} and {spec.label} are the same scenario: name each "
                    "scenario or variant once"
                ],
            )
        seen[key] = spec


def _execute(args: argparse.Namespace, specs: list[RunSpec], out: Path) -> list[dict[str, Any]]:
    """Every spec's run, on the executor the options chose, with a bar of runs."""
    with (
        open_executor(args.workers, args.scheduler, args.worker_timeout) as executor,
        _progress(len(specs)) as done,
    ):
        rows = execute_all(args.model, specs, out, executor, done)
    reused = sum(bool(row.get("resumed")) for row in rows)
    if reused:
        print(f"pagehint: reused {reused} finished run(s) of {len(rows)} in {out}", file=sys.stderr)
    return rows


def _sweep(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    sweep_file = _named_file(model, args.sweep, "sweeps")
    sweep = load_sweep(sweep_file)
    overrides = apply_overrides({}, args.overrides)
    specs = expand(sweep, flatten(overrides), override_origins(args.overrides))
    validate(args.model, specs)
    text = sweep_file.read_text(encoding="utf-8")

    def its_own(directory: Path) -> bool:  # this sweep, interrupted: resume it
        earlier = directory / "sweep.toml"
        return earlier.is_file() and earlier.read_text(encoding="utf-8") == text

    default = Path("runs") / sweep_file.stem
    results = ("sweep.toml", *SET_RESULTS)
    with claimed(args.out, default, results, force=args.force, resumes=its_own) as (out, said):
        if said:
            print(f"pagehint: {said}", file=sys.stderr)
        (out / "sweep.toml").write_text(text, encoding="utf-8")
        rows = _execute(args, specs, out)
    _console().print(sweep_table(model, sweep, rows))
    failed = [row for row in rows if row["status"] != "ok"]
    for row in failed:
        print(
            f"failed: {row['label']} replicate {row['replicate']}: {row['error']}", file=sys.stderr
        )
    print(f"{len(rows) - len(failed)} of {len(rows)} runs ok; index: {out / 'index.jsonl'}")
    return 1 if failed else 0


@contextmanager
def run_progress(model: Model, config: Any, console: Console | None) -> Iterator[Progress | None]:
    """A bar of virtual time simulated against the run's duration (and its baseline's), with
    wall time elapsed and left, on ``console``; None (no bar) without a console, or when the
    model does not say how long its runs are."""
    duration = getattr(model, "duration_ns", None)
    if console is None or duration is None:
        yield None
        return
    total = duration(config)
    which = ["run", *(["baseline"] if model.baseline(config) is not None else [])]
    with RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[virtual]} virtual"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks = {
            name: bar.add_task(
                "baseline (policy none)" if name == "baseline" else "run",
                total=total,
                virtual=f"0s / {total / NS_PER_S:g}s",
                start=name == "run",
            )
            for name in which
        }

        started = {"run"}

        def reached(name: str, now_ns: int) -> None:
            if name not in started:  # the baseline's clock starts when it does
                started.add(name)
                bar.start_task(tasks[name])
            shown = f"{now_ns / NS_PER_S:.3g}s / {total / NS_PER_S:g}s"
            bar.update(tasks[name], completed=now_ns, virtual=shown)

        yield reached


@contextmanager
def _progress(total: int) -> Iterator[Callable[[dict[str, Any]], None]]:
    with RichProgress(
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
        "--scheduler",
        metavar="ADDRESS",
        help="run on the Dask cluster at ADDRESS (tcp://HOST:PORT) instead; its workers send "
        "each run's files back, so they need no filesystem shared with this machine",
    )
    parser.add_argument(
        "--worker-timeout",
        type=float,
        default=WORKER_TIMEOUT_S,
        metavar="SECONDS",
        help="how long to wait for the Dask cluster to have a worker "
        f"(default: {WORKER_TIMEOUT_S:g})",
    )


def _add_force_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the earlier results in --out (without it, they are refused)",
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
    run.add_argument(
        "--quiet", action="store_true", help="no progress bar (there is none unless on a terminal)"
    )
    run.add_argument(
        "--out", type=Path, help="run directory (default: runs/NAME-seedN, or a fresh one beside)"
    )
    _add_force_option(run)
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
    compare.add_argument(
        "--out", type=Path, help="directory for the runs (default: runs/compare, or a fresh one)"
    )
    _add_force_option(compare)
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
    sweep.add_argument(
        "--out",
        type=Path,
        help="sweep directory (default: runs/SWEEP-NAME); resumed if it holds this sweep",
    )
    _add_force_option(sweep)
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


class Terminated(BaseException):
    """SIGTERM, raised where the command is, so that it ends as an interrupt does: workers
    stopped, the index written. A BaseException, so that no ``except Exception`` takes it."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextmanager
def _sigterm_ends_the_command() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set a handler; a command run elsewhere keeps the default
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    with _sigterm_ends_the_command():
        return _handle(args)


def _handle(args: argparse.Namespace) -> int:
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
        return 128 + signal.SIGINT
    except Terminated:
        print("pagehint: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BrokenPipeError:
        # The reader left (pagehint config --explain | head): stop quietly, as a tool that
        # SIGPIPE ends does, and keep Python from complaining about stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
