"""Structured run logs: one JSON object per line, stamped with virtual time.

Every line carries ``t`` (virtual time, integer ns), ``actor``, ``level`` and ``event`` first,
then the event's own fields. Lines are rendered with orjson into a binary file; an optional
console copy uses structlog's readable renderer. Levels are filtered by structlog's
``make_filtering_bound_logger``, so a disabled ``log.debug(...)`` is a no-op method call.
Only the synchronous log methods are used (structlog's async ones need asyncio).
"""

from __future__ import annotations

import datetime
import io
import platform
import sys
from collections.abc import Callable, MutableMapping
from typing import IO, Any, BinaryIO

import attrs
import orjson
import structlog
import trio
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

from .version import VERSION

LOG_SCHEMA_VERSION = 1
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_SILENT = 50  # above "error": structlog's CRITICAL, which pagehint never uses


def _json_default(value: object) -> object:
    if attrs.has(type(value)):
        fields = attrs.asdict(value, recurse=False)  # type: ignore[arg-type]
        return {"type": type(value).__name__, **fields}
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)


def dumps_line(record: MutableMapping[str, Any]) -> bytes:
    """One log line, as written: orjson with attrs messages rendered as objects."""
    return orjson.dumps(record, default=_json_default, option=orjson.OPT_NON_STR_KEYS)


class _LineSink:
    """The structlog 'logger' at the end of the chain: appends rendered lines to a file."""

    __slots__ = ("_file",)

    def __init__(self, file: BinaryIO) -> None:
        self._file = file

    def msg(self, line: bytes) -> None:
        self._file.write(line + b"\n")

    debug = info = warning = error = msg


class RunLog:
    """The log of one run: a JSON-lines file (optional) and a console copy (optional)."""

    def __init__(
        self,
        file: BinaryIO | None = None,
        *,
        level: str = "info",
        console: IO[str] | None = None,
        console_level: str = "info",
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {sorted(LEVELS)}, got {level!r}")
        self.level = level
        self._file = file
        self._console = console
        self._console_level = LEVELS[console_level]
        self._console_renderer = structlog.dev.ConsoleRenderer(colors=False)
        self._now_ns: Callable[[], int] = lambda: 0
        self.lines_written = 0
        enabled = [LEVELS[level]] if file is not None else []
        if console is not None:
            enabled.append(self._console_level)
        # Nothing enabled: a level above every method, so each call is a no-op.
        self._wrapper = structlog.make_filtering_bound_logger(min(enabled, default=_SILENT))
        self._root: FilteringBoundLogger = structlog.wrap_logger(
            _LineSink(file) if file is not None else _NullSink(),
            processors=[self._stamp, self._to_console, self._render],
            wrapper_class=self._wrapper,
            cache_logger_on_first_use=True,
        )

    def use_clock(self, now_ns: Callable[[], int]) -> None:
        """Stamp lines with this time source (the run's clock) from now on."""
        self._now_ns = now_ns

    def logger(self, actor: str) -> FilteringBoundLogger:
        return self._root.bind(actor=actor)

    def write_header(self, *, seed: int, config_hash: str | None = None, **extra: Any) -> None:
        """The first line of every log: what produced it, so analysis can check it."""
        self.logger("runtime").info(
            "header",
            schema=LOG_SCHEMA_VERSION,
            pagehint=VERSION,
            trio=trio.__version__,
            python=platform.python_version(),
            seed=seed,
            config_hash=config_hash,
            wall_time=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            **extra,
        )

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    # -- processors ----------------------------------------------------------------------
    def _stamp(self, _: WrappedLogger, method: str, event: EventDict) -> EventDict:
        # Rebuild so the four common keys come first, in a fixed order, on every line.
        record = {
            "t": self._now_ns(),
            "actor": event.pop("actor", "runtime"),
            "level": method,
            "event": event.pop("event"),
        }
        record.update(event)
        return record

    def _to_console(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        if self._console is not None and LEVELS.get(method, 20) >= self._console_level:
            shown = dict(event)
            t_ns = shown.pop("t")
            actor = shown.pop("actor")
            shown["event"] = f"[{t_ns / 1e9:12.6f}s {actor}] {shown['event']}"
            shown.pop("level")
            print(self._console_renderer(logger, method, shown), file=self._console)
        if self._file is None or LEVELS.get(method, 20) < LEVELS[self.level]:
            raise structlog.DropEvent
        return event

    def _render(self, _: WrappedLogger, __: str, event: EventDict) -> bytes:
        self.lines_written += 1
        return dumps_line(event)


class _NullSink:
    __slots__ = ()

    def msg(self, line: bytes) -> None:
        pass

    debug = info = warning = error = msg


def null_log() -> RunLog:
    """A log that keeps nothing: for tests and benchmarks that only look at state."""
    return RunLog(None)


def stderr_log(level: str = "info") -> RunLog:
    return RunLog(None, console=sys.stderr, console_level=level)


class MemoryLog(RunLog):
    """A run log kept in memory, for tests that assert on what was logged."""

    def __init__(self, level: str = "debug") -> None:
        self._buffer = io.BytesIO()
        super().__init__(self._buffer, level=level)

    def records(self, event: str | None = None) -> list[dict[str, Any]]:
        """Parsed lines so far, optionally only those of one event name."""
        lines = self._buffer.getvalue().splitlines()
        parsed = [orjson.loads(line) for line in lines]
        return [record for record in parsed if event is None or record["event"] == event]
