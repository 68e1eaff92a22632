"""The guest model: load, run and summarise a scenario.

Registered as the ``guest`` entry point of ``pagehint.models``, so ``pagehint run`` finds it.
"""

from __future__ import annotations

import functools
import importlib.util
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from rich.table import Table

from pagehint.protocol.units import format_duration
from pagehint.runtime import ActorSystem
from pagehint.runtime.harness.config import ConfigError, explain, structure

from ..designs import DesignConfig
from ..designs.base import COMMON_KNOBS
from ..designs.cli import describe
from ..designs.registry import installed_designs
from ..mm.kernels import KERNELS
from ..mm.profiles import profiles
from .building import build, read_trace
from .effective import applied, resolve
from .footprint import estimated_bytes
from .outcomes import format_metric, headline, summarise, summary_table
from .schema import CONVERTER, Phases, Scenario, TraceReplay, check_scenario


def _with_trace_resolved(workload: TraceReplay, base: Path, max_order: int) -> TraceReplay:
    path = str((base / workload.path).resolve())
    read_trace(path, max_order)
    return attrs.evolve(workload, path=path)


def _degenerate(config: Scenario) -> list[str]:
    """What makes a run's figures come from nothing: too short to sample, or to let the design
    run at all."""
    run, said = config.run, []
    if run.duration < run.sample_interval:
        said.append(
            f"run.duration ({format_duration(run.duration)}) is shorter than run.sample_interval "
            f"({format_duration(run.sample_interval)}): memory was sampled only at the end, so "
            "the times to return mean nothing"
        )
    delay = resolve(config).limits.delay_ns
    if config.policy.name != "none" and run.duration <= delay:
        said.append(
            f"run.duration ({format_duration(run.duration)}) is not longer than the design's "
            f"delay ({format_duration(delay)}): it never ran"
        )
    return said


class GuestModel:
    """The guest model, registered as the ``guest`` entry point of ``pagehint.models``."""

    name = "guest"

    @functools.cached_property
    def examples(self) -> Path:
        """The project's configs/, installed as the data package ``pagehint.configs``."""
        spec = importlib.util.find_spec("pagehint.configs")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("pagehint is installed without its scenario files")
        return Path(next(iter(spec.submodule_search_locations)))

    def load(self, document: dict[str, Any], source: str) -> Scenario:
        scenario = structure(CONVERTER, document, Scenario, source)
        problems = check_scenario(scenario)
        if problems:
            raise ConfigError(source, problems)
        # A trace's path is relative to the scenario file, resolved now so config.toml re-runs
        # anywhere; a bad trace is bad input, reported before the run starts.
        base = Path(source).parent if source.endswith(".toml") else Path.cwd()
        workload, max_order = scenario.workload, scenario.guest.max_order
        if isinstance(workload, TraceReplay):
            workload = _with_trace_resolved(workload, base, max_order)
        elif isinstance(workload, Phases):
            phases = tuple(
                attrs.evolve(phase, workload=_with_trace_resolved(phase.workload, base, max_order))
                if isinstance(phase.workload, TraceReplay)
                else phase
                for phase in workload.phases
            )
            workload = attrs.evolve(workload, phases=phases)
        if workload is not scenario.workload:
            scenario = attrs.evolve(scenario, workload=workload)
        return scenario

    def explain(self, config: Scenario) -> list[str]:
        """Every key; [policy] as the default design has it, then each installed design's own
        knobs (a plugin's included); then what the guest kernel and the cost profile give
        ``config``, and which of those values the scenario set itself."""
        lines = explain(Scenario, CONVERTER, defaults=Scenario())
        for name, design in installed_designs().items():
            own = explain(design.Config, CONVERTER, "policy.", skip=COMMON_KNOBS)
            title = f'[policy]  # with name = "{name}": {design.description}'
            lines += ["", *textwrap.wrap(title, 96, subsequent_indent="#   ")]
            common = describe(name, design)["knobs"]  # resolved, as a run would use them
            shown = ", ".join(f"{key} = {common[key]}" for key in COMMON_KNOBS if key in common)
            lines += [f"# unset, for the default guest: {shown}", *own]
            if not own:
                lines.append("# (no knobs of its own)")
        kernel, profile = KERNELS[config.guest.kernel], profiles()[config.costs.profile]
        lines.append("")
        for said in (
            f'This scenario: guest.kernel = "{kernel.name}", {kernel.summary}.',
            f'costs.profile = "{profile.name}": {profile.cpu}.',
        ):
            lines += textwrap.wrap(said, 94, initial_indent="# ", subsequent_indent="#   ")
        rows = applied(config)
        width = max(len(f"{key} = {value}") for key, value, _ in rows)
        lines += [f"#   {f'{key} = {value}':<{width}}  {source}" for key, value, source in rows]
        return lines

    def unstructure(self, config: Scenario) -> dict[str, Any]:
        document: dict[str, Any] = CONVERTER.unstructure(config)
        return document

    def seed(self, config: Scenario) -> int:
        return config.run.seed

    def memory_estimate(self, config: Scenario) -> tuple[int, str]:
        return estimated_bytes(config)

    def duration_ns(self, config: Scenario) -> int:
        return config.run.duration

    def with_seed(self, config: Scenario, seed: int) -> Scenario:
        return attrs.evolve(config, run=attrs.evolve(config.run, seed=seed))

    def log_level(self, config: Scenario) -> str:
        return config.run.log_level

    def baseline(self, config: Scenario) -> Scenario | None:
        """The same scenario and seed without hinting, to measure what hinting costs."""
        if config.policy.name == "none" or not config.run.baseline:
            return None
        return attrs.evolve(config, policy=DesignConfig(name="none"))

    def fold_baseline(self, summary: dict[str, Any], baseline: Mapping[str, Any]) -> None:
        ours = summary["workload"]["faults_per_s_per_vcpu"]
        theirs = baseline["workload"]["faults_per_s_per_vcpu"]
        summary["throughput_rel_to_none"] = round(ours / theirs, 6) if theirs else None
        done, done_before = summary["workload"]["completed_s"], baseline["workload"]["completed_s"]
        if done is not None and done_before:
            summary["completion_rel_to_none"] = round(done / done_before, 6)
        for phase, base_phase in zip(
            summary.get("phases", ()), baseline.get("phases", ()), strict=False
        ):
            rate = base_phase["faults_per_s_per_vcpu"]
            phase["throughput_rel_to_none"] = (
                round(phase["faults_per_s_per_vcpu"] / rate, 6) if rate else None
            )
        summary["baseline"] = {
            "faults": baseline["workload"]["faults"],
            "faults_per_s_per_vcpu": theirs,
            "completed_s": done_before,
            "rss_bytes_end": baseline["host"]["rss_bytes_end"],
            "lock_wait_ns": baseline["lock_wait_ns"],
        }

    async def run(self, system: ActorSystem, config: Scenario) -> dict[str, Any]:
        machine = build(system, config)
        await system.sleep_until_ns(config.run.duration)
        for guest in machine.guests:
            guest.monitor.sample()  # the final sample, with a last conservation check
            guest.zone.allocator.check_invariants()
        summary = summarise(
            (config.policy.name, config.workload.name), machine, config.run.duration
        )
        if config.policy.name == "none":
            summary["throughput_rel_to_none"] = 1.0
            for phase in summary.get("phases", ()):
                phase["throughput_rel_to_none"] = 1.0
        warnings = [*summary.get("warnings", ()), *_degenerate(config)]
        if warnings:
            summary["warnings"] = warnings
        for warning in warnings:
            system.log.warning("run_warning", message=warning)
        system.log.info("run_end", **{k: v for k, v in summary.items() if k != "about"})
        return summary

    def is_baseline(self, metrics: Mapping[str, Any]) -> bool:
        """A run of policy none: its throughput relative to none is 1 by definition."""
        return bool(metrics.get("throughput vs none") == 1.0)

    def fill_from_baseline(
        self, metrics: dict[str, Any], baseline: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A run made without its own baseline (run.baseline = false): its relative throughput
        from the paired none run (same seed and parameters but the design)."""
        for relative, rate in (
            ("throughput vs none", "faults/s/vCPU"),
            ("last phase vs none", "last phase faults/s/vCPU"),
        ):
            ours, theirs = metrics.get(rate), baseline.get(rate)
            if metrics.get(relative) is None and ours is not None and theirs:
                metrics[relative] = round(ours / theirs, 6)
        return metrics

    def summary_table(self, summary: Mapping[str, Any]) -> Table:
        return summary_table(summary)

    def headline(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        return headline(summary)

    def format_metric(self, name: str, value: Any) -> str:
        return format_metric(name, value)


MODEL = GuestModel()
