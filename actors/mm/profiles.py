"""Hardware cost profiles: every cost of the model derived from sourced facts, per host machine.

The numbers live once, in ``cost_profiles.toml`` next to this module: for each cost a formula
over facts, and for each profile the facts measured on that machine (or the closest one that has
them), each with its source. This module reads it for the runtime (``costs_for``) and renders it
for ``docs/costs.md`` (``render_markdown``), so the document and the code cannot disagree.
"""

from __future__ import annotations

import ast
import functools
import importlib.resources
import operator
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from pagehint.protocol.units import Nanos

from .costs import Costs

# Every unit in base units: ns for time, bytes per ns for bandwidth (1 GB/s), cycles per ns.
UNITS = {"ns": 1.0, "us": 1000.0, "GB/s": 1.0, "GHz": 1.0, "cycles": 1.0, "count": 1.0}
_OPERATORS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


@attrs.frozen
class Fact:
    """One sourced figure."""

    value: float
    unit: str
    source: str
    estimate: bool = False

    @property
    def base_value(self) -> float:
        return self.value * UNITS[self.unit]


@attrs.frozen
class CostRule:
    """One cost: what it is and how it follows from facts."""

    key: str
    doc: str
    formula: str


@attrs.frozen
class Profile:
    """A host machine: its CPU and every fact the formulas need."""

    name: str
    cpu: str
    why: str
    facts: Mapping[str, Fact]  # the common facts, with this profile's own in their place

    def evaluate(self, formula: str) -> float:
        """A formula over this profile's facts, in ns."""
        return _evaluate(ast.parse(formula, mode="eval").body, self.facts)

    def costs(self) -> Costs:
        return Costs(
            **{rule.key: Nanos(round(self.evaluate(rule.formula))) for rule in cost_rules()}
        )


def _evaluate(node: ast.expr, facts: Mapping[str, Fact]) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name):
        return facts[node.id].base_value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left, facts), _evaluate(node.right, facts)
        return _OPERATORS[type(node.op)](left, right)
    raise ValueError(f"not a cost formula: {ast.unparse(node)!r}")


@functools.cache
def _document() -> dict[str, Any]:
    text = importlib.resources.files(__package__).joinpath("cost_profiles.toml").read_text()
    return tomllib.loads(text)


def _fact(document: Mapping[str, Any]) -> Fact:
    return Fact(
        float(document["value"]),
        document["unit"],
        " ".join(document["source"].split()),
        document.get("estimate", False),
    )


@functools.cache
def cost_rules() -> tuple[CostRule, ...]:
    """Each cost's documentation and formula, in the order of ``Costs``' fields."""
    costs = _document()["costs"]
    return tuple(
        CostRule(field.name, costs[field.name]["doc"], costs[field.name]["formula"])
        for field in attrs.fields(Costs)
    )


@functools.cache
def profiles() -> dict[str, Profile]:
    """Every profile by name, with its facts resolved."""
    document = _document()
    common = {name: _fact(fact) for name, fact in document["facts"].items()}
    return {
        name: Profile(
            name,
            profile["cpu"],
            " ".join(profile["why"].split()),
            common | {key: _fact(fact) for key, fact in profile["facts"].items()},
        )
        for name, profile in document["profiles"].items()
    }


def default_profile() -> str:
    name: str = _document()["default"]
    return name


@functools.cache
def costs_for(profile: str) -> Costs:
    """The costs of a named profile (``KeyError`` for an unknown one)."""
    return profiles()[profile].costs()


def render_markdown() -> str:
    """The tables of ``docs/costs.md``: each cost per profile, then each fact with its source."""
    machines = list(profiles().values())
    lines = [
        "| cost | " + " | ".join(f"`{p.name}`" for p in machines) + " | formula |",
        "|---|" + "---:|" * len(machines) + "---|",
    ]
    for rule in cost_rules():
        values = " | ".join(_ns(getattr(costs_for(p.name), rule.key)) for p in machines)
        lines.append(f"| `{rule.key}` | {values} | `{rule.formula}` |")
    lines += ["", "What each cost is:", ""]
    lines += [f"- `{rule.key}`: {rule.doc}" for rule in cost_rules()]
    for profile in machines:
        lines += ["", f"### `{profile.name}`", "", f"{profile.cpu}. {profile.why}", ""]
        lines += ["| fact | value | source |", "|---|---:|---|"]
        for name, fact in sorted(profile.facts.items()):
            marker = " (estimate)" if fact.estimate else ""
            lines.append(f"| `{name}` | {fact.value:g} {fact.unit}{marker} | {fact.source} |")
    return "\n".join(lines) + "\n"


def _ns(value: int) -> str:
    if value >= 10_000:
        return f"{value / 1000:,.1f} us"
    return f"{value:,} ns"


if __name__ == "__main__":
    print(render_markdown(), end="")
