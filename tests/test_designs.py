"""Designs as plugins: the contract kit, discovery by name and import path, [policy] knobs,
the one resolution of effective values, and the worked example outside the package."""

from __future__ import annotations

import functools
import os
import random
import shutil
import subprocess
import sys
import venv
import warnings
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pagehint.actors.designs import Batch, Policy, registry
from pagehint.actors.designs.bitmap import BitmapPolicy
from pagehint.actors.designs.page_reporting import PageReportingPolicy
from pagehint.actors.designs.scanner import ScannerPolicy
from pagehint.actors.mm.buddy import BuddyAllocator
from pagehint.actors.scenario import MODEL, make_policy
from pagehint.actors.scenario.effective import resolve
from pagehint.runtime.harness.cli import main
from pagehint.runtime.harness.config import ConfigError, ConfigNotice
from pagehint.testing import DesignContractError, check_design

from conftest import ROOT, read_summary, run_cli

EXAMPLE = ROOT / "examples" / "maxorder"
# page_reporting keeps its own 2 s delay: its runs last 3 s (virtual)
BUILT_INS = ["none", "scanner", "page_reporting", "percpu_capture", "bitmap"]


# -- the contract ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BUILT_INS)
def test_every_built_in_design_keeps_the_contract(name: str) -> None:
    report = check_design(name)
    if name == "none":
        assert report.returned_bytes == 0 and report.reports == 0
    else:
        assert report.returned_bytes > 0 and report.reports > 0


class ForgetsFailedReports(PageReportingPolicy):
    """Puts back only what the host acknowledged: a reset report's pages stay isolated."""

    def drain(self, allocator: BuddyAllocator, batch: Batch, reported: bool) -> None:
        if reported:
            super().drain(allocator, batch, reported)


class ReportsWithoutIsolating(ScannerPolicy):
    """Hands the host a free block it never isolated: the guest may reuse it mid-discard."""

    def fill(self, allocator: BuddyAllocator) -> Batch:
        pfn = allocator.first_free(self.max_order - 1)
        return Batch(() if pfn is None else ((pfn, self.max_order - 1),), 1, last=True)

    def drain(self, allocator: BuddyAllocator, batch: Batch, reported: bool) -> None:
        pass


class LeaksIsolatedBlocks(BitmapPolicy):
    """Isolates one block more than it reports: isolated memory no report accounts for."""

    def fill(self, allocator: BuddyAllocator) -> Batch:
        batch = super().fill(allocator)
        pfn = allocator.first_free(self.max_order - 1)
        if pfn is not None:
            allocator.isolate(pfn, self.max_order - 1)
        return batch


class DrawsFromGlobalRandom(ScannerPolicy):
    """Sizes its reports from the global random module: a seed no longer fixes the log."""

    def fill(self, allocator: BuddyAllocator) -> Batch:
        self.capacity = random.randint(1, 32)
        return super().fill(allocator)


class NeverWakes(PageReportingPolicy):
    """Says it returns memory, yet its trigger never fires."""

    def on_free(self, pfn: int, order: int, requester: str) -> bool:
        return False

    def on_register(self) -> bool:
        return False


@pytest.mark.parametrize(
    ("design", "knobs", "broken"),
    [
        (ForgetsFailedReports, {"delay": "50ms"}, "put_back"),
        (ReportsWithoutIsolating, {}, "no_discard_in_use"),
        (LeaksIsolatedBlocks, {}, "conservation"),
        (DrawsFromGlobalRandom, {}, "determinism"),
        (NeverWakes, {}, "returns_memory"),
    ],
)
def test_a_broken_design_fails_the_contract_naming_the_property(
    design: type[Policy], knobs: dict[str, Any], broken: str
) -> None:
    with pytest.raises(DesignContractError) as caught:
        check_design(design, knobs=knobs)
    assert caught.value.property == broken
    assert f"breaks {broken}" in str(caught.value) and design.__qualname__ in str(caught.value)


def test_a_knob_the_design_does_not_take_is_bad_input_in_the_kit_too() -> None:
    with pytest.raises(ConfigError, match=r"policy\.array_size: not a knob of design 'bitmap'"):
        check_design("bitmap", knobs={"array_size": 7})


# -- [policy] as a tagged union ----------------------------------------------------------------
def load(**policy: Any) -> Any:
    return MODEL.load({"policy": policy}, "<test>")


def test_only_the_chosen_design_s_knobs_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load(name="bitmap", array_size=7)
    (problem,) = caught.value.problems
    assert problem.startswith("policy.array_size: not a knob of design 'bitmap'")
    assert "it is a knob of percpu_capture" in problem and "threshold" in problem
    argv = ["run", "--set", "policy.name=bitmap", "--set", "policy.array_size=7"]
    assert main(argv) == 2
    assert "--set policy.array_size=7: not a knob of design 'bitmap'" in capsys.readouterr().err


def test_a_config_toml_of_the_flat_policy_table_still_loads() -> None:
    """What earlier versions wrote: every design's knobs, at their defaults."""
    flat = {
        "name": "page_reporting",
        "tail_placement": False,
        "batch": "64MiB",
        "array_size": 256,
        "poll_budget": 64,
    }
    with pytest.warns(ConfigNotice) as notices:
        scenario = load(**flat)
    assert sorted(str(n.message).split(" =")[0] for n in notices) == [
        "policy.array_size",
        "policy.batch",
    ]
    assert MODEL.unstructure(scenario)["policy"] == {
        "name": "page_reporting",
        "capacity": None,
        "min_order": None,
        "delay": None,
        "poll_budget": 64,
        "tail_placement": False,
    }
    # Written with another design: its knobs dropped, the kernel-decided one whatever its value.
    with pytest.warns(ConfigNotice) as notices:
        scanner = load(**{**flat, "name": "scanner", "tail_placement": True})
    assert any("policy.tail_placement = True dropped" in str(n.message) for n in notices)
    assert "tail_placement" not in MODEL.unstructure(scanner)["policy"]
    not_default = {**flat, "batch": "32MiB"}
    refused = pytest.raises(ConfigError, match=r"policy\.batch: not a knob of design 'page_")
    with refused, pytest.warns(ConfigNotice, match="array_size"):  # that one is still dropped
        load(**not_default)


def test_the_cli_shows_a_dropped_knob_as_a_notice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old.toml"
    old.write_text('[policy]\nname = "bitmap"\narray_size = 256\n')
    assert main(["config", str(old)]) == 0
    err = capsys.readouterr().err
    assert "pagehint: notice: policy.array_size = 256 dropped" in err


def test_resolved_config_carries_only_the_design_s_knobs_and_reloads(tmp_path: Path) -> None:
    out = run_cli("host_stall.toml", tmp_path / "run", "run.duration=50ms", "run.baseline=false")
    written = (out / "config.toml").read_text()
    assert 'batch = "64MiB"' in written and "array_size" not in written
    assert "threshold" not in written and "tail_placement" not in written
    assert main(["run", str(out / "config.toml"), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "log.jsonl").read_bytes().splitlines()[1:] == (
        (out / "log.jsonl").read_bytes().splitlines()[1:]
    )


# -- one resolution of effective values --------------------------------------------------------
def test_a_host_batch_the_virtqueue_cannot_hold_is_bad_input_at_load(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "--set", "host.batch_size=1GiB"]) == 2
    err = capsys.readouterr().err
    assert "--set host.batch_size=1GiB: 1GiB makes reports of 512 blocks" in err
    assert "policy.capacity" in err and "virtio.queue_size = 32" in err


def test_an_impossible_capacity_names_policy_capacity() -> None:
    with pytest.raises(ConfigError) as caught:
        load(name="page_reporting", capacity=100_000)
    (problem,) = caught.value.problems
    assert problem.startswith("policy.capacity: a report of 100000 blocks needs a virtqueue")


def test_the_resolved_values_are_what_the_run_uses() -> None:
    scenario = MODEL.load(
        {"policy": {"name": "scanner"}, "host": {"batch_size": "16MiB"}}, "<test>"
    )
    hinting = resolve(scenario)
    assert (hinting.limits.capacity, hinting.limits.min_order) == (32, 9)
    assert hinting.limits.page_limit == 4096  # the host's 16 MiB replaces the scanner's 64 MiB
    assert hinting.queue_size == 32
    policy = make_policy(hinting)
    assert isinstance(policy, ScannerPolicy) and policy.batch_pages == 4096
    reporting = resolve(load(name="page_reporting", capacity=40))
    assert reporting.queue_size == 64 and reporting.limits.delay_ns == 2 * 10**9


# -- discovery -------------------------------------------------------------------------------
def test_an_unknown_design_lists_the_installed_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--set", "policy.name=page_reportin"]) == 2
    err = capsys.readouterr().err
    assert "unknown design 'page_reportin'; installed: bitmap, none, page_reporting" in err


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("no_such_module:Design", "module 'no_such_module' does not import: ModuleNotFoundError"),
        ("pagehint.actors.designs:Batch", "is not a design: a subclass of"),
        ("pagehint.actors.designs:Nothing", "has no 'Nothing'"),
    ],
)
def test_an_import_path_that_is_not_a_design_is_bad_input(
    name: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "--set", f"policy.name={name}"]) == 2
    assert expected in capsys.readouterr().err


class MalformedConfig(Policy):
    """A plugin whose config is not a config class."""

    name = "malformed"
    Config = dict  # type: ignore[assignment]


@pytest.fixture
def with_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The installed designs plus a broken plugin and the example, as entry points."""
    group = registry.DESIGN_ENTRY_POINT_GROUP
    monkeypatch.syspath_prepend(str(EXAMPLE))
    real = entry_points(group=group)
    fake = [
        *real,
        EntryPoint("broken", "no_such_plugin:Design", group),
        EntryPoint("malformed", "test_designs:MalformedConfig", group),
        EntryPoint("max_order", "pagehint_maxorder:MaxOrderReporting", group),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: fake)
    registry._installed.cache_clear()
    yield
    registry._installed.cache_clear()


def test_a_broken_plugin_is_reported_once_and_the_others_still_work(
    with_plugins: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.warns(ConfigNotice, match="design plugin '(broken|malformed)' left out") as notices:
        designs = registry.installed_designs()
        registry.installed_designs()
    assert len(notices) == 2  # once each, however often the designs are listed
    assert {"page_reporting", "max_order"} <= set(designs)
    assert "broken" not in designs and "malformed" not in designs
    with pytest.raises(ConfigError, match="design 'broken' is installed but broken"):
        load(name="broken")
    assert main(["designs", "--json"]) == 0
    listing = orjson.loads(capsys.readouterr().out)
    assert "no_such_plugin" in listing["broken"]["broken"]
    assert "is not an attrs class deriving DesignConfig" in listing["broken"]["malformed"]
    example = next(d for d in listing["designs"] if d["name"] == "max_order")
    assert example["knobs"]["free_above"] == "256MiB" and example["knobs"]["min_order"] == 10


def test_pagehint_designs_and_explain_show_every_design_s_knobs(
    with_plugins: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["designs"]) == 0
    table = capsys.readouterr().out
    for name in ("none", "scanner", "page_reporting", "percpu_capture", "bitmap", "max_order"):
        assert name in table
    assert "array_size = 256" in table and 'delay = "2s"' in table
    assert main(["config", "--explain"]) == 0
    explained = capsys.readouterr().out
    assert '[policy]  # with name = "max_order"' in explained
    assert 'free_above = "256MiB"' in explained and "array_size = 256" in explained
    # the knobs every design has, as the one resolution gives them for the default guest
    assert "# unset, for the default guest: capacity = 16, min_order = 9" in explained
    assert "capacity = 32, min_order = 9, delay = 2s" in explained  # page_reporting


# -- the worked example ----------------------------------------------------------------------
def test_the_example_runs_by_import_path_without_installing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    # A local build of the example leaves its entry point in EXAMPLE: what this test lists
    # must not outlive it.
    monkeypatch.setattr(registry, "_installed", functools.cache(registry._installed.__wrapped__))
    out = run_cli(
        EXAMPLE / "scenario.toml",
        tmp_path / "run",
        "policy.name=pagehint_maxorder:MaxOrderReporting",
        "run.duration=1500ms",
    )
    summary = read_summary(out)
    assert summary["memory_returned_bytes"] > 0
    check_design("pagehint_maxorder:MaxOrderReporting")


def _throwaway_venv(where: Path) -> Path:
    """A venv that sees this environment's packages (pagehint included) and adds its own."""
    venv.create(where, with_pip=False)
    found = list(where.glob("lib/python*/site-packages"))
    parents = [path for path in sys.path if path.endswith("site-packages")]
    lines = [f"import site; site.addsitedir({path!r})" for path in parents]
    found[0].joinpath("_parent.pth").write_text("\n".join(lines) + "\n")
    return where / "bin" / "python"


def test_the_example_installed_is_found_by_name(tmp_path: Path) -> None:
    """The entry-point route, as a user's installed plugin is found: a throwaway venv."""
    python = _throwaway_venv(tmp_path / "venv")
    source = shutil.copytree(EXAMPLE, tmp_path / "maxorder")  # the build writes beside it
    environment = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    install = [str(python), "-m", "pip", "install", "--quiet", "--no-deps"]
    install += ["--no-build-isolation", "--no-index", str(source)]
    subprocess.run(install, check=True, env=environment, capture_output=True, cwd=tmp_path)
    code = "import sys; from pagehint.runtime.harness.cli import main; sys.exit(main(sys.argv[1:]))"
    run = [str(python), "-c", code, "run", str(EXAMPLE / "scenario.toml")]
    run += ["--out", str(tmp_path / "run"), "--set", "run.duration=1500ms"]
    done = subprocess.run(run, env=environment, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert read_summary(tmp_path / "run")["memory_returned_bytes"] > 0
    listed = subprocess.run(
        [str(python), "-c", code, "designs", "--json"],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    names = [d["name"] for d in orjson.loads(listed.stdout)["designs"]]
    assert "max_order" in names


# -- [policy] under random input ---------------------------------------------------------------
_VALID = {  # values each knob may take where it belongs
    "capacity": st.integers(1, 64),
    "min_order": st.integers(0, 10),
    "delay": st.sampled_from(["0ns", "50ms", "2s"]),
    "poll_budget": st.integers(1, 100),
    "tail_placement": st.booleans(),
    "batch": st.sampled_from(["64MiB", "16MiB", "4MiB"]),
    "threshold": st.integers(1, 300),
    "array_size": st.sampled_from([256, 7, 1024]),
    "free_above": st.just("256MiB"),  # a knob no installed design has
    "capasity": st.just(3),  # a misspelling
}
_INVALID = st.sampled_from(
    [
        ("capacity", 0),
        ("capacity", 70_000),
        ("capacity", "x"),
        ("min_order", 11),
        ("delay", "soon"),
        ("poll_budget", 0),
        ("tail_placement", "yes"),
        ("batch", "1KiB"),
    ]
)
# Another design's knob that loading may drop: at the default of every design that has it.
_DROPPABLE: dict[str, list[object]] = {
    "tail_placement": [False, True],  # unset by default: the guest kernel's
    "batch": ["64MiB"],
    "array_size": [256],
}


@st.composite
def policy_tables(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A design's name and knobs: mostly well-formed, some of them another design's, now and
    then one impossible value."""
    name = draw(st.sampled_from([*BUILT_INS, "nonesuch", "no_such_module:Design"]))
    keys = draw(st.lists(st.sampled_from(sorted(_VALID)), max_size=4, unique=True))
    knobs = {key: draw(_VALID[key]) for key in keys}
    if draw(st.integers(0, 3)) == 0:
        key, value = draw(_INVALID)
        knobs[key] = value
    return name, knobs


@settings(max_examples=200, deadline=None)
@given(table=policy_tables())
def test_any_policy_table_loads_whole_or_is_refused_by_key(
    table: tuple[str, dict[str, Any]],
) -> None:
    """Whatever [policy] holds: a config that reloads to itself, or bad input naming keys."""
    name, knobs = table
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConfigNotice)
            scenario = load(name=name, **knobs)
    except ConfigError as error:
        assert error.problems
        assert all(
            problem.startswith(("policy", "virtio.queue_size")) for problem in error.problems
        )
        return
    design = registry.find_design(name)
    written = MODEL.unstructure(scenario)["policy"]
    assert set(written) == set(attrs.fields_dict(design.Config))  # its knobs, all, only
    for key, value in knobs.items():  # a knob it lacks was dropped only at its owners' default
        if key not in written:
            assert value in _DROPPABLE.get(key, []), f"policy.{key} = {value!r} was dropped"
    assert MODEL.load(MODEL.unstructure(scenario), "<reloaded>") == scenario
    hinting = resolve(scenario)
    assert hinting.limits.capacity >= 1 and hinting.queue_size >= hinting.limits.capacity
