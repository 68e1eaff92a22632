"""``pagehint designs``: the installed hinting designs, with their knobs and defaults."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
import tomli_w
from rich.console import Console
from rich.table import Table

from pagehint.protocol.units import Nanos

from .base import DesignConfig, Policy
from .registry import broken_designs, installed_designs

HELP = "list the installed hinting designs, with their knobs and defaults"
DESCRIPTION = (
    "List every installed hinting design (the entry-point group pagehint.designs: pagehint's "
    "own and any plugin's) with its description, where it comes from, and each [policy] knob "
    "it takes with its default for the default guest. Plugins that do not load are listed "
    "with why. A design not installed can still be named by import path: "
    "policy.name = 'package.module:Class'."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def describe(name: str, design: type[Policy]) -> dict[str, Any]:
    """A design as ``pagehint designs`` shows it: its knobs resolved for the default guest
    (and its default kernel)."""
    # Imported here: the scenario imports the designs, not the other way round.
    from ..scenario import MODEL
    from ..scenario.effective import resolve
    from ..scenario.schema import CONVERTER

    scenario = MODEL.load({"policy": {"name": name}}, "pagehint designs")
    hinting = resolve(scenario)  # with the default guest kernel's values for its knobs
    limits = hinting.limits
    resolved = {
        "capacity": limits.capacity,
        "min_order": limits.min_order,
        "delay": CONVERTER.unstructure(Nanos(limits.delay_ns)),
    }
    written = CONVERTER.unstructure(hinting.config, DesignConfig)
    knobs = {key: resolved.get(key, value) for key, value in written.items() if key != "name"}
    return {
        "name": name,
        "description": design.description,
        "from": f"{design.__module__}:{design.__qualname__}",
        "knobs": knobs,
    }


def command(args: argparse.Namespace) -> int:
    """``pagehint designs``: always 0."""
    listed = [describe(name, design) for name, design in installed_designs().items()]
    broken = broken_designs()
    if args.json:
        document = {"designs": listed, "broken": broken}
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return 0
    table = Table(title="Installed hinting designs (policy.name)", title_justify="left")
    for column in ("name", "description", "knobs (defaults for the default guest)", "from"):
        table.add_column(column)
    for design in listed:
        knobs = "\n".join(
            f"{key} = {tomli_w.dumps({'v': value}).partition('=')[2].strip()}"
            for key, value in design["knobs"].items()
        )
        table.add_row(design["name"], design["description"], knobs, design["from"])
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(table)
    for name, problem in broken.items():
        console.print(f"left out: {name}: {problem}", highlight=False)
    return 0
