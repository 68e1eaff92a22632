"""docs/log-schema.md against the code: every event emitted is documented, and vice versa.

Events are found in the source with ``ast`` (calls ``<...>.log.<level>("event", ...)``,
``log.<level>(...)`` and ``<...>.logger(...).<level>(...)``), so a new log line fails this test
until it is documented; and in real logs, so fields passed with ``**`` are checked too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pagehint.actors.analysis import FIELDS
from pagehint.runtime import LOG_SCHEMA_VERSION

from conftest import ROOT, log_records, run_cli

DOC = ROOT / "docs" / "log-schema.md"
SOURCES = [ROOT / folder for folder in ("runtime", "protocol", "actors")]
LEVELS = {"debug", "info", "warning", "error"}
COMMON = {"t", "actor", "level", "event"}


def _is_logger(node: ast.expr) -> bool:
    """``log``, ``<...>.log`` or ``<...>.logger(...)``: what pagehint logs through."""
    if isinstance(node, ast.Name):
        return node.id == "log"
    if isinstance(node, ast.Attribute):
        return node.attr == "log"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "logger"
    return False


def emitted_events(source: str) -> dict[str, set[str]]:
    """Events logged in ``source``: name -> the fields it names (``**`` spreads aside).

    ``write_header(...)`` keywords are fields of the header line: the header call spreads them.
    """
    events: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        named = {keyword.arg for keyword in node.keywords if keyword.arg is not None}
        if node.func.attr == "write_header":
            events.setdefault("header", set()).update(named)
        elif (
            node.func.attr in LEVELS
            and _is_logger(node.func.value)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            events.setdefault(node.args[0].value, set()).update(named)
    return events


def code_events() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for folder in SOURCES:
        for path in sorted(folder.rglob("*.py")):
            for name, fields in emitted_events(path.read_text(encoding="utf-8")).items():
                found.setdefault(name, set()).update(fields)
    return found


def documented() -> dict[str, dict[str, str]]:
    """Event -> field -> type, from the '## Events' section of the schema document."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## Events\n", 1)[1].split("\n## ", 1)[0]
    events: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in section.splitlines():
        heading = re.fullmatch(r"### `(\w+)`", line.strip())
        if heading:
            current = events.setdefault(heading.group(1), {})
            continue
        row = re.match(r"\| `(\w+)` \| ([A-Z\[\]]+) \|", line)
        if row and current is not None:
            current[row.group(1)] = row.group(2)
    return events


def test_every_emitted_event_is_documented_and_every_documented_one_is_emitted() -> None:
    emitted, docs = set(code_events()), set(documented())
    assert emitted - docs == set(), f"emitted but not in {DOC.name}: {sorted(emitted - docs)}"
    assert docs - emitted == set(), f"in {DOC.name} but never emitted: {sorted(docs - emitted)}"


def test_every_field_the_code_names_is_documented() -> None:
    docs = documented()
    for event, fields in code_events().items():
        missing = fields - set(docs[event])
        assert not missing, f"event {event!r}: fields {sorted(missing)} not in {DOC.name}"


def test_the_typed_view_matches_the_document() -> None:
    assert documented() == FIELDS


def test_the_document_states_the_current_schema_version() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert f"schema version {LOG_SCHEMA_VERSION}" in text
    assert f"now **{LOG_SCHEMA_VERSION}**" in text


def test_the_scanner_catches_an_undocumented_event() -> None:
    """What this file relies on: a new log call shows up, with its fields."""
    source = """
class Thing:
    def go(self, log, system):
        self.log.info("new_event", pages=1, order=2)
        system.log.warning("other", **stats)
        log.debug("third", x=1)
        run_log.logger("runtime").error("fourth", error="e")
        print("not_an_event", x=1)
"""
    found = emitted_events(source)
    assert found == {
        "new_event": {"pages", "order"},
        "other": set(),
        "third": {"x"},
        "fourth": {"error"},
    }
    assert "new_event" not in documented()


@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        ("default.toml", ["policy.name=percpu_capture", "guest.memory=1GiB"]),
        ("overcommit.toml", ["run.duration=300ms"]),
        (
            "host_stall.toml",
            ['faults=[{kind="reset", at="75ms"}]', "guest.memory=1GiB", "workload.size=128MiB"],
        ),
        ("false_oom.toml", ["run.duration=200ms"]),
    ],
)
def test_every_line_of_a_real_debug_log_is_documented(
    tmp_path: Path, config: str, overrides: list[str]
) -> None:
    sets = ["run.duration=300ms", "run.log_level=debug", "run.baseline=false", *overrides]
    run_cli(config, tmp_path, *sets)
    docs = documented()
    for number, record in enumerate(log_records(tmp_path / "log.jsonl"), 1):
        event = record["event"]
        assert event in docs, f"line {number}: event {event!r} is not documented"
        extra = set(record) - COMMON - set(docs[event])
        assert not extra, f"line {number}: {event} fields {sorted(extra)} are not documented"
