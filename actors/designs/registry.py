"""Finding designs: the installed ones by name, any other by import path.

Installed designs are the entry points of the group ``pagehint.designs``; the five built-ins
are registered there by pagehint's own package metadata, exactly as a user's package registers
its design. A scenario may also name a design by import path, ``package.module:Class``, with
nothing installed. A plugin that does not load, or whose class is not a design, is reported
once (a ``ConfigNotice``) and left out; the others are unaffected.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from importlib.metadata import entry_points
from typing import Any

import attrs

from pagehint.runtime.harness.config import ConfigNotice

from .base import COMMON_KNOBS, DesignConfig, Policy

DESIGN_ENTRY_POINT_GROUP = "pagehint.designs"


class DesignNotFound(ValueError):
    """A ``policy.name`` that names no usable design; the message says why."""


def contract_problem(candidate: Any) -> str | None:
    """Why ``candidate`` is not a design (None if it is one)."""
    if not isinstance(candidate, type) or not issubclass(candidate, Policy):
        return f"{candidate!r} is not a design: a subclass of pagehint.actors.designs.Policy"
    config = candidate.Config
    if not (isinstance(config, type) and attrs.has(config) and issubclass(config, DesignConfig)):
        return f"its Config, {config!r}, is not an attrs class deriving DesignConfig"
    for field in attrs.fields(config):
        if field.default is attrs.NOTHING:
            return f"its Config knob {field.name!r} has no default"
    if [f.name for f in attrs.fields(config)][: len(COMMON_KNOBS)] != list(COMMON_KNOBS):
        return "its Config redefines a knob every design has"
    return None


@functools.cache
def _installed() -> tuple[dict[str, type[Policy]], dict[str, str]]:
    """The installed designs by name, and the broken plugins with what is wrong with each."""
    designs: dict[str, type[Policy]] = {}
    broken: dict[str, str] = {}
    for point in sorted(entry_points(group=DESIGN_ENTRY_POINT_GROUP), key=lambda p: p.name):
        try:
            candidate = point.load()
        except Exception as error:  # a plugin's import error must not break the others
            broken[point.name] = f"{point.value} does not import: {type(error).__name__}: {error}"
            continue
        problem = contract_problem(candidate)
        if problem is None:
            designs[point.name] = candidate
        else:
            broken[point.name] = f"{point.value}: {problem}"
    for name, problem in broken.items():
        warnings.warn(f"design plugin {name!r} left out: {problem}", ConfigNotice, stacklevel=2)
    return designs, broken


def installed_designs() -> dict[str, type[Policy]]:
    """Every installed design, by the name a scenario gives it (``pagehint designs``)."""
    return dict(_installed()[0])


def broken_designs() -> dict[str, str]:
    """Installed design plugins that do not load, with what is wrong with each."""
    return dict(_installed()[1])


# Designs handed over in this process (pagehint.testing's), by their import path.
_handed_over: dict[str, type[Policy]] = {}


def hand_over(design: type[Policy]) -> str:
    """Make ``design`` findable in this process by its import path, even where that path does
    not import (a class defined in a test); the name to give it in a scenario."""
    problem = contract_problem(design)
    if problem is not None:
        raise DesignNotFound(f"design {design!r}: {problem}")
    path = f"{design.__module__}:{design.__qualname__}"
    _handed_over[path] = design
    return path


def find_design(name: str) -> type[Policy]:
    """The design a scenario names: installed, or ``package.module:Class``."""
    designs, broken = _installed()
    if name in designs:
        return designs[name]
    if name in _handed_over:
        return _handed_over[name]
    if name in broken:
        raise DesignNotFound(f"design {name!r} is installed but broken: {broken[name]}")
    if ":" not in name:
        raise DesignNotFound(
            f"unknown design {name!r}; installed: {', '.join(designs)} "
            "(or give a package.module:Class import path)"
        )
    return _import(name)


@functools.cache
def _import(path: str) -> type[Policy]:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # the user's module: whatever it raises is their bad input
        raise DesignNotFound(
            f"design {path!r}: module {module_name!r} does not import: "
            f"{type(error).__name__}: {error}"
        ) from None
    candidate = getattr(module, attribute, None)
    if candidate is None:
        raise DesignNotFound(f"design {path!r}: module {module_name!r} has no {attribute!r}")
    problem = contract_problem(candidate)
    if problem is not None:
        raise DesignNotFound(f"design {path!r}: {problem}")
    return candidate  # type: ignore[no-any-return]
