"""``pagehint.testing``: the contract every hinting design keeps, runnable from your own tests.

    from pagehint.testing import check_design

    def test_my_design_keeps_the_contract():
        check_design(MyDesign, knobs={"threshold": 8})

``check_design`` runs the design on a small guest (two vCPUs each fault in 256 MiB of THP once,
free it and go idle) in virtual time, and raises ``DesignContractError`` naming the first
property it breaks:

- ``conservation``: free + isolated + lent pages are every page of the zone at every sample,
  and the allocator's own invariants hold (checked by the monitor as the run goes);
- ``no_discard_in_use``: the host never discards a page that is not isolated in a report;
- ``put_back``: after device resets, stalls and slow-downs (reports lost or failed), every
  isolated page goes back to the free lists or is still in a report in flight;
- ``determinism``: the same seed gives the same log, record for record;
- ``returns_memory``: a design whose class says ``returns_memory = True`` gives some of the
  freed memory back to the host once the run is past its delay.

Each property runs in a scenario of its own, so a failure names the property it broke. The runs
last the design's delay plus one virtual second: shorten a long delay with ``knobs``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from pagehint.actors.designs import Policy
from pagehint.actors.designs.registry import find_design, hand_over
from pagehint.actors.host import DiscardedPageInUse
from pagehint.actors.scenario import MODEL, Scenario
from pagehint.actors.scenario.effective import resolve
from pagehint.protocol.units import Nanos
from pagehint.runtime import ActorCrashed, MemoryLog, run_simulation

__all__ = ["PROPERTIES", "DesignContractError", "check_design"]

PROPERTIES = {
    "conservation": "page conservation (free + isolated + lent = every page, at every sample)",
    "no_discard_in_use": "no discard of a page that is not isolated",
    "put_back": "everything put back after a device reset or a failed report",
    "determinism": "the same seed gives the same log",
    "returns_memory": "returns memory on an idle guest with free memory, past its delay",
}


class DesignContractError(AssertionError):
    """A design broke a property of the contract; ``property`` names which (see PROPERTIES)."""

    def __init__(self, design: str, prop: str, detail: str) -> None:
        self.design = design
        self.property = prop
        super().__init__(f"design {design!r} breaks {prop}, {PROPERTIES[prop]}: {detail}")


@attrs.frozen
class ContractReport:
    """What a design did in the contract's runs, for a test that wants to look further."""

    design: str
    returned_bytes: int
    reports: int


def _scenario(name: str, knobs: Mapping[str, Any], seed: int, faults: bool) -> Scenario:
    small = {
        "run": {"duration": "1s", "sample_interval": "10ms", "full_check_every": 5},
        # Each vCPU frees 1 GiB: enough merged MAX_ORDER-1 blocks per CPU for a design that
        # hints per CPU at a threshold (v9's 128 x 4 MiB), on kernels that park some on per-CPU
        # lists (5.14+).
        "guest": {"memory": "4GiB", "vcpus": 2, "boot_memory": "32MiB"},
        "workload": {"name": "memhog", "size": "1GiB", "thp": True, "loops": 1},
        "policy": {**knobs, "name": name},
    }
    first = MODEL.load(small, f"check_design({name})")
    delay = resolve(first).limits.delay_ns
    run = attrs.evolve(first.run, duration=Nanos(delay + 10**9), seed=seed, baseline=False)
    scenario = attrs.evolve(first, run=run)
    if faults:  # from the first pass on: a stall holds reports in flight and a reset drops them
        ms = 1_000_000
        schedule = [
            {"kind": "stall", "at": delay, "duration": 300 * ms},
            {"kind": "reset", "at": delay + 150 * ms},
            {"kind": "slowdown", "at": delay + 400 * ms, "duration": 200 * ms, "factor": 20.0},
            {"kind": "stall", "at": delay + 650 * ms, "duration": 200 * ms},
            {"kind": "reset", "at": delay + 700 * ms},
        ]
        for fault in schedule:
            fault.update({key: f"{fault[key]}ns" for key in ("at", "duration") if key in fault})
        document = {**MODEL.unstructure(scenario), "faults": schedule}
        scenario = MODEL.load(document, f"check_design({name})")
    return scenario


def _run(scenario: Scenario, log: MemoryLog | None = None) -> dict[str, Any]:
    return run_simulation(
        lambda system: MODEL.run(system, scenario), seed=scenario.run.seed, log=log
    )


def _attempt(name: str, prop: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one property's scenario; a crash is that property broken (or a discard of a page
    in use, wherever it happens)."""
    try:
        return run()
    except ActorCrashed as crash:
        if isinstance(crash.cause, DiscardedPageInUse):
            raise DesignContractError(name, "no_discard_in_use", str(crash)) from crash
        raise DesignContractError(name, prop, str(crash)) from crash


def check_design(
    design: type[Policy] | str, *, knobs: Mapping[str, Any] | None = None, seed: int = 0
) -> ContractReport:
    """Run ``design`` (a class, an installed name or an import path) through the contract.

    ``knobs`` are its ``[policy]`` keys for the runs (e.g. ``{"delay": "50ms"}``). Raises
    ``DesignContractError`` naming the first property broken; a knob the design does not take
    is a ``ConfigError`` as in a scenario.
    """
    name = design if isinstance(design, str) else hand_over(design)
    knobs = dict(knobs or {})
    steady = _scenario(name, knobs, seed, faults=False)
    first, again = MemoryLog(level="debug"), MemoryLog(level="debug")
    summary = _attempt(name, "conservation", lambda: _run(steady, first))
    _attempt(name, "determinism", lambda: _run(steady, again))
    one, other = first.records(), again.records()
    if one != other:
        pairs = enumerate(zip(one, other, strict=False))
        index = next((i for i, (a, b) in pairs if a != b), min(len(one), len(other)))
        raise DesignContractError(
            name, "determinism", f"two runs with seed {seed} differ from log record {index + 1}"
        )
    _attempt(name, "put_back", lambda: _run(_scenario(name, knobs, seed, faults=True)))
    returned = int(summary["memory_returned_bytes"])
    if find_design(name).returns_memory and returned == 0:
        raise DesignContractError(
            name,
            "returns_memory",
            f"nothing returned in {steady.run.duration / 1e9:g} s (virtual) after two vCPUs "
            "freed 2 GiB of touched memory",
        )
    return ContractReport(name, returned, int(summary["virtio"]["reports"]))
