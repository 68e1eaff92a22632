"""Workloads: pure generators of the operations a vCPU executes.

A workload is a generator function ``(params, rng) -> Generator[Op, int, None]``: it yields an
operation, and the vCPU sends back the virtual time (ns) at which that operation finished, so a
workload can schedule by time (lifetimes, pauses) without knowing anything of trio. The same
params and random stream give the same operations: the vCPU's timing is the only input.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Generator, Sequence

import attrs

from .trace import TraceEvent

THP_ORDER = 9


@attrs.frozen(slots=True)
class Map:
    """Fault in ``pages`` 4 KiB pages into ``region`` with blocks of ``order`` (0, or 9 for THP),
    touching each one: zero-fill (or ``copy``: copy-on-write of a file page)."""

    region: int
    pages: int
    order: int = 0
    copy: bool = False


@attrs.frozen(slots=True)
class Unmap:
    """Free every block of ``region`` (munmap): order-0 pages to the per-CPU list."""

    region: int


@attrs.frozen(slots=True)
class Think:
    """Spend time without touching memory: computation, a pause, waiting for the next event."""

    duration_ns: int


@attrs.frozen(slots=True)
class Loop:
    """One pass of the workload's main loop completed (counted, costs nothing)."""


Op = Map | Unmap | Think | Loop
Workload = Generator[Op, int, None]


def page_fault1(mapping_pages: int, thp: bool) -> Workload:
    """will-it-scale page_fault1: map a private anonymous region, touch every page, unmap."""
    order = THP_ORDER if thp else 0
    while True:
        yield Map(0, mapping_pages, order)
        yield Unmap(0)
        yield Loop()


def page_fault2(mapping_pages: int) -> Workload:
    """will-it-scale page_fault2: MAP_PRIVATE of a file, write every page (a copy per fault).

    The file's page cache is read in once and stays allocated for the whole run.
    """
    yield Map(1, mapping_pages, 0)  # the file, read into the page cache
    while True:
        yield Map(0, mapping_pages, 0, copy=True)
        yield Unmap(0)
        yield Loop()


def memhog(size_pages: int, thp: bool, pause_ns: int, loops: int = 0) -> Workload:
    """numactl's memhog in a loop: allocate and touch ``size``, free it, pause, repeat.

    With ``loops`` > 0, stop after that many and idle (memory freed, nothing else to do).
    """
    order = THP_ORDER if thp else 0
    done = 0
    while not loops or done < loops:
        yield Map(0, size_pages, order)
        yield Unmap(0)
        yield Loop()
        done += 1
        yield Think(pause_ns)
    yield from idle()


def idle() -> Workload:
    """Boot, then nothing: the vCPU halts until the run ends."""
    while True:
        yield Think(10**12)


def churn(
    rng: random.Random,
    mean_pages: int,
    mean_lifetime_ns: int,
    max_live_pages: int,
    thp_fraction: float,
    think_ns: int,
) -> Workload:
    """Allocations of random size (exponential) and lifetime (exponential), from a seed.

    At most ``max_live_pages`` are live at once: at the limit, the oldest-expiring one is freed
    early, as memory pressure would force.
    """
    expiries: list[tuple[int, int, int]] = []  # (expiry_ns, region, pages)
    live_pages = 0
    now = 0
    for region in itertools.count():
        while expiries and expiries[0][0] <= now:
            _, done, freed = heapq.heappop(expiries)
            live_pages -= freed
            now = yield Unmap(done)
        thp = rng.random() < thp_fraction
        unit = 1 << THP_ORDER if thp else 1
        pages = max(unit, round(rng.expovariate(1 / mean_pages) / unit) * unit)
        pages = min(pages, max(unit, max_live_pages // unit * unit))
        while expiries and live_pages + pages > max_live_pages:
            _, done, freed = heapq.heappop(expiries)
            live_pages -= freed
            now = yield Unmap(done)
        now = yield Map(region, pages, THP_ORDER if thp else 0)
        live_pages += pages
        lifetime = max(1, round(rng.expovariate(1 / mean_lifetime_ns)))
        heapq.heappush(expiries, (now + lifetime, region, pages))
        yield Loop()
        if think_ns:
            now = yield Think(round(rng.expovariate(1 / think_ns)))


def replay(events: Sequence[TraceEvent], start_ns: int, time_scale: float) -> Workload:
    """Replay one CPU's share of a recorded trace, keeping the recorded gaps (scaled).

    Each allocated block becomes a region keyed by its traced pfn; a free of a pfn whose
    allocation the trace does not contain (allocated before tracing began) is skipped.
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
    yield from idle()


def delayed(workload: Workload, delay_ns: int) -> Workload:
    """``workload``, started ``delay_ns`` late."""
    if delay_ns:
        yield Think(delay_ns)
    yield from workload


def split_by_cpu(events: Sequence[TraceEvent], vcpus: int) -> list[list[TraceEvent]]:
    """Each traced CPU's events go to vCPU ``cpu % vcpus``, keeping their order."""
    shares: list[list[TraceEvent]] = [[] for _ in range(vcpus)]
    for event in events:
        shares[event.cpu % vcpus].append(event)
    return shares


def take(workload: Workload, count: int, step_ns: int = 1) -> list[Op]:
    """The first ``count`` operations, as if each took ``step_ns`` (for tests and docs)."""
    ops = [next(workload)]
    while len(ops) < count:
        ops.append(workload.send(len(ops) * step_ns))
    return ops
