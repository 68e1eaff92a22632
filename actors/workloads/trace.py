"""Recorded allocation traces: the text ``perf script`` prints for kmem tracepoints.

Record on a real guest with::

    perf record -e kmem:mm_page_alloc -e kmem:mm_page_free -a -- sleep 10
    perf script > trace.txt

and replay it on the guest's vCPUs (``workload.name = "trace"``). Each event line looks like
(comm, pid, [cpu], timestamp in seconds, event, fields)::

    bash  2314 [002]  7321.204525: kmem:mm_page_alloc: page=0xffffd4f0c1a2b3c0 pfn=0x686c8 \
order=0 migratetype=0 gfp_flags=GFP_KERNEL
    bash  2314 [002]  7321.204601: kmem:mm_page_free: page=0xffffd4f0c1a2b3c0 pfn=0x686c8 order=0

``mm_page_alloc`` and ``mm_page_free`` (and ``mm_page_free_batched``, order 0) are replayed;
``pfn`` may be hex (0x...) or decimal. A failed allocation (``page=(nil)`` or pfn -1) and events
of other tracepoints are skipped and counted. Blank lines and ``#`` comments are ignored. Any
other line is an error naming its line number.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

import attrs

from pagehint.runtime import PagehintError

from .ops import Loop, Map, Think, Unmap, Workload

_LINE = re.compile(
    r"^\s*(?P<comm>.*?)\s+(?P<pid>\d+)(?:/\d+)?\s+\[(?P<cpu>\d+)\]\s+"
    r"(?:\S+\s+)?(?P<seconds>\d+\.\d+):\s+(?P<event>[\w-]+:[\w-]+):\s*(?P<fields>.*)$"
)
_FIELD = re.compile(r"(\w+)=(\S+)")
_FAILED_PFN = (1 << 64) - 1

EventKind = Literal["alloc", "free"]
_KINDS: dict[str, EventKind] = {
    "kmem:mm_page_alloc": "alloc",
    "kmem:mm_page_free": "free",
    "kmem:mm_page_free_batched": "free",
}


class TraceError(PagehintError):
    """A trace line that is not what perf script prints for these events."""

    def __init__(self, source: str, line_number: int, problem: str, line: str) -> None:
        self.line_number = line_number
        super().__init__(f"{source}:{line_number}: {problem}: {line.strip()[:160]!r}")


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
        return self.events[0].time_ns if self.events else 0


def parse_perf_script(lines: Iterable[str], source: str = "<trace>") -> Trace:
    events: list[TraceEvent] = []
    skipped = 0
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise TraceError(source, number, "not a perf script event line", line)
        kind = _KINDS.get(match["event"])
        if kind is None:
            skipped += 1
            continue
        fields = dict(_FIELD.findall(match["fields"]))
        try:
            pfn = int(fields["pfn"], 0)
            order = int(fields.get("order", "0"))
        except KeyError:
            raise TraceError(source, number, "missing pfn= field", line) from None
        except ValueError:
            raise TraceError(source, number, "pfn= or order= is not a number", line) from None
        if not 0 <= order < 64:
            raise TraceError(source, number, f"order {order} is out of range", line)
        if kind == "alloc" and (fields.get("page") == "(nil)" or pfn in (-1, _FAILED_PFN)):
            skipped += 1
            continue
        seconds, _, fraction = match["seconds"].partition(".")
        time_ns = int(seconds) * 1_000_000_000 + int(fraction.ljust(9, "0")[:9])
        events.append(TraceEvent(time_ns, int(match["cpu"]), kind, pfn, order))
    events.sort(key=lambda event: event.time_ns)  # perf merges per-CPU buffers, mostly sorted
    return Trace(events, skipped)


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
