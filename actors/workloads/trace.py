r"""Recorded allocation traces: the text ``perf script`` or ``trace-cmd report`` prints for
the kmem page tracepoints, replayed on the guest's vCPUs (``workload.name = "trace"``).

Record on a real guest with either::

    perf record -e kmem:mm_page_alloc -e kmem:mm_page_free -a [-g] -- sleep 10
    perf script > trace.txt

    trace-cmd record -e kmem:mm_page_alloc -e kmem:mm_page_free sleep 10
    trace-cmd report > trace.txt

Each line is recognised on its own, so either tool's output is read as it is:

- ``perf script`` (tools/perf/builtin-script.c: ``perf_sample__fprintf_start``,
  ``process_event``): comm (padded to 16 columns; unpadded with ``-g``), tid (or pid/tid),
  [cpu], seconds, ``system:event`` (right-aligned to the longest name), the event's fields::

            bash    2314 [002]  7321.204525: kmem:mm_page_alloc: page=0xffffea0001a1b200 \
    pfn=0x686c8 order=0 migratetype=0 gfp_flags=GFP_KERNEL

  With ``-g`` each event line is followed by its callchain, a line per frame (a tab, the
  address in 16 columns, ``symbol+offset (dso)``: tools/perf/util/evsel_fprintf.c,
  ``sample__fprintf_callchain``), then a blank line; the frames are skipped::

    bash    2314 [002]  7321.204525: kmem:mm_page_alloc: page=0xffffea0001a1b200 pfn=0x686c8 ...
    \tffffffff8a3b1e4f __alloc_pages+0x29f ([kernel.kallsyms])
    \t    7f5e2c9b8c3d __memset_avx2_unaligned_erms+0x3d (/usr/lib/x86_64-linux-gnu/libc.so.6)

- ``trace-cmd report`` (tracecmd/trace-read.c: ``trace_show_data``; the examples of
  Documentation/trace-cmd/trace-cmd-report.1.txt): comm and pid joined (``%16s-%-5d``), [cpu],
  the latency flags (printed since trace-cmd 3.3: libtraceevent's ``data_latency_format``),
  seconds (to the microsecond; to the nanosecond with ``-t``), the event without its system
  padded to 20 columns, the fields. Its ``cpus=4`` header, the ``version = 6`` line of older
  releases and its ``CPU:2 [58 EVENTS DROPPED]`` notes are skipped::

            bash-2314  [002] .....  7321.204525: mm_page_alloc:        page=0xffffea0001a1b200 \
    pfn=0x686c8 order=0 migratetype=0 gfp_flags=0xcc0

The fields are those of include/trace/events/kmem.h: ``pfn`` (hex, or decimal from older
kernels) and ``order``. ``mm_page_free_batched`` frees one order-0 page and has no order field
(its text says order=0; libtraceevent's ``[FAILED TO PARSE]`` fallback lists only real
fields). A failed allocation (``page=(nil)``, or pfn -1) and events of other tracepoints are
skipped and counted; blank lines and ``#`` comments are ignored. Anything else is an error
naming the file and line: a line of neither layout, a replayed event cut short before its
``pfn=`` or ``order=``, an order the guest cannot hold (``guest.max_order``); and so is a file
with no event to replay (empty, or a binary perf.data or trace.dat instead of its text).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

import attrs

from pagehint.runtime import PagehintError

from .ops import Loop, Map, Think, Unmap, Workload

# Between [cpu] and the timestamp, one optional column: trace-cmd's latency flags (d..2.) or
# perf script's misc field (-F +misc).
_CPU_AND_TIME = r"\s+\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?(?P<seconds>\d+\.\d+):\s+"
_LAYOUTS = (
    re.compile(  # perf script: the comm may hold spaces; the event is system:event
        r"^\s*(?P<comm>.*?)\s+(?P<tid>\d+)(?:/\d+)?"
        + _CPU_AND_TIME
        + r"(?P<event>[\w-]+:[\w-]+):(?P<fields>.*)$"
    ),
    re.compile(  # trace-cmd report: comm-pid, split at the last dash (trace-cmd-2290)
        r"^\s*(?P<comm>.*)-(?P<pid>\d+)" + _CPU_AND_TIME + r"(?P<event>\w+):(?P<fields>.*)$"
    ),
)
_EXPECTED = (
    "expected an event line of perf script (COMM TID [CPU] SECONDS: kmem:EVENT: FIELDS) or of "
    "trace-cmd report (COMM-PID [CPU] SECONDS: EVENT: FIELDS)"
)
_FRAME = re.compile(r"^\s+[0-9a-f]+(?:\s|$)")  # a perf script -g callchain line
_REPORT_NOTE = re.compile(r"^(?:cpus=\d+|version = \d+|CPU:\d+ \[[^\]]*\])$")
# What a user may point workload.path at instead of the text: the recorders' own files.
_RECORDINGS = {
    "PERFILE2": "perf script -i FILE > trace.txt",
    "\x17\x08Dtracing": "trace-cmd report -i FILE > trace.txt",
}
_FIELD = re.compile(r"(\w+)=(\S+)")
_FAILED_PFN = (1 << 64) - 1

EventKind = Literal["alloc", "free"]
# The replayed tracepoints: what each does, and the fields its line must have
# (mm_page_free_batched frees one order-0 page and has no order field).
_REPLAYED: dict[str, tuple[EventKind, tuple[str, ...]]] = {
    "mm_page_alloc": ("alloc", ("pfn", "order")),
    "mm_page_free": ("free", ("pfn", "order")),
    "mm_page_free_batched": ("free", ("pfn",)),
}


class TraceError(PagehintError):
    """A trace file that is not perf script or trace-cmd report text of the kmem events."""

    def __init__(self, source: str, line_number: int | None, problem: str, line: str = "") -> None:
        self.line_number = line_number
        where = source if line_number is None else f"{source}:{line_number}"
        shown = f": {line.strip()[:160]!r}" if line.strip() else ""
        super().__init__(f"{where}: {problem}{shown}")


@attrs.frozen(slots=True)
class TraceEvent:
    time_ns: int
    cpu: int
    kind: EventKind
    pfn: int
    order: int


@attrs.define
class Trace:
    events: list[TraceEvent]
    skipped: int  # other tracepoints and failed allocations

    @property
    def start_ns(self) -> int:
        return self.events[0].time_ns


def parse_trace(lines: Iterable[str], source: str = "<trace>", *, max_order: int) -> Trace:
    """The replayed events of a trace, in time order; ``max_order`` is the guest's (orders
    0..max_order-1), so that a block it cannot hold is bad input here, not a crash mid-run."""
    events: list[TraceEvent] = []
    skipped = 0
    after_event = False  # perf script -g: an event's callchain runs up to the next blank line
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            after_event = False
            continue
        if stripped.startswith("#") or _REPORT_NOTE.match(stripped):
            continue
        match = next((found for layout in _LAYOUTS if (found := layout.match(line))), None)
        if match is None:
            if after_event and _FRAME.match(line):
                continue
            command = _converter(line) if number == 1 else None
            if command is not None:
                raise TraceError(source, number, f"a binary recording: convert it with {command}")
            raise TraceError(source, number, _EXPECTED, line)
        after_event = True
        name = match["event"].removeprefix("kmem:")
        if name not in _REPLAYED:
            skipped += 1
            continue
        try:
            event = _event(match, name, max_order)
        except ValueError as error:
            raise TraceError(source, number, str(error), line) from None
        if event is None:
            skipped += 1
        else:
            events.append(event)
    if not events:
        *first, last = _REPLAYED
        others = f" ({skipped} other events or failed allocations)" if skipped else ""
        raise TraceError(
            source,
            None,
            f"no {', '.join(first)} or {last} event to replay{others}: expected the text "
            "perf script or trace-cmd report prints of a recording of them",
        )
    events.sort(key=lambda event: event.time_ns)  # perf merges per-CPU buffers, mostly sorted
    return Trace(events, skipped)


def _converter(line: str) -> str | None:
    """The command that turns a recorder's binary file, of which ``line`` is the start, into
    the text replayed here; None for anything else."""
    return next((command for magic, command in _RECORDINGS.items() if line.startswith(magic)), None)


def _event(match: re.Match[str], name: str, max_order: int) -> TraceEvent | None:
    """The event of a replayed tracepoint's line; None for a failed allocation. Raises
    ValueError saying what is wrong with the line."""
    kind, needed = _REPLAYED[name]
    fields = dict(_FIELD.findall(match["fields"]))
    if any(key not in fields for key in needed):
        absent = " or ".join(f"{key}=" for key in needed if key not in fields)
        wanted = " and ".join(f"{key}=" for key in needed)
        raise ValueError(f"{name} without {absent} (cut short?): expected {wanted}")
    values = {}
    for key in needed:
        try:
            values[key] = int(fields[key], 0)
        except ValueError:
            raise ValueError(f"{key}={fields[key]} is not a number") from None
    pfn, order = values["pfn"], values.get("order", 0)
    if kind == "alloc" and (fields.get("page") == "(nil)" or pfn in (-1, _FAILED_PFN)):
        return None
    if not 0 <= order < max_order:
        raise ValueError(
            f"order {order} is not within the guest's orders 0..{max_order - 1} "
            f"(guest.max_order = {max_order})"
        )
    seconds, _, fraction = match["seconds"].partition(".")
    time_ns = int(seconds) * 1_000_000_000 + int(fraction.ljust(9, "0")[:9])
    return TraceEvent(time_ns, int(match["cpu"]), kind, pfn, order)


def split_by_cpu(events: Sequence[TraceEvent], vcpus: int) -> list[list[TraceEvent]]:
    """Each traced CPU's events go to vCPU ``cpu % vcpus``, keeping their order."""
    shares: list[list[TraceEvent]] = [[] for _ in range(vcpus)]
    for event in events:
        shares[event.cpu % vcpus].append(event)
    return shares


def replay(events: Sequence[TraceEvent], start_ns: int, time_scale: float) -> Workload:
    """Replay one CPU's share of a recorded trace, keeping the recorded gaps (scaled).

    Each allocated block becomes a region keyed by its traced pfn; a free of a pfn whose
    allocation the trace does not contain (allocated before tracing began) is skipped. It
    ends with the trace, what it allocated last still mapped.
    """
    now = 0
    live: set[int] = set()
    for event in events:
        due = round((event.time_ns - start_ns) * time_scale)
        if due > now:
            now = yield Think(due - now)
        if event.kind == "alloc":
            if event.pfn in live:  # allocated twice without a free in between: free first
                now = yield Unmap(event.pfn)
            live.add(event.pfn)
            now = yield Map(event.pfn, 1 << event.order, event.order)
            yield Loop()
        elif event.pfn in live:
            live.discard(event.pfn)
            now = yield Unmap(event.pfn)
