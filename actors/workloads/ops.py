"""What a vCPU executes: the operations a workload yields, and helpers over workloads.

A workload is a generator function ``(params, rng) -> Generator[Op, int, None]``: it yields an
operation, and the vCPU sends back the virtual time (ns) at which that operation finished, so a
workload can schedule by time (lifetimes, pauses) without knowing anything of trio. The same
params and random stream give the same operations: the vCPU's timing is the only input.
"""

from __future__ import annotations

from collections.abc import Generator

import attrs

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


def delayed(workload: Workload, delay_ns: int) -> Workload:
    """``workload``, started ``delay_ns`` late."""
    if delay_ns:
        yield Think(delay_ns)
    yield from workload


def take(workload: Workload, count: int, step_ns: int = 1) -> list[Op]:
    """The first ``count`` operations, as if each took ``step_ns`` (for tests and docs)."""
    ops = [next(workload)]
    while len(ops) < count:
        ops.append(workload.send(len(ops) * step_ns))
    return ops
