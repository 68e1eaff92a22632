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
PHASES_DONE = "done"  # the name of the mark after the last phase of a phased workload


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
    """Spend time without touching memory: computation, or (``idle``) a pause in which the
    task sleeps and its vCPU halts: not in guest mode, and free to run other work."""

    duration_ns: int
    idle: bool = False


@attrs.frozen(slots=True)
class Loop:
    """One pass of the workload's main loop completed (counted, costs nothing)."""


@attrs.frozen(slots=True)
class Phase:
    """A phased workload starts its phase ``index`` (counted on its own, costs nothing);
    ``task``: this vCPU runs the phase's workload (False: it has no task in it, and halts)."""

    index: int
    name: str
    task: bool = True


@attrs.frozen(slots=True)
class Done:
    """The workload has ended: the vCPU halts from here (its work span ends)."""


Op = Map | Unmap | Think | Loop | Phase | Done
Workload = Generator[Op, int, None]


def delayed(workload: Workload, delay_ns: int) -> Workload:
    """``workload``, started ``delay_ns`` late (the vCPU idle until then)."""
    if delay_ns:
        yield Think(delay_ns, idle=True)
    yield from workload


def idle() -> Workload:
    """Nothing to do: the vCPU halts until the run ends."""
    while True:
        yield Think(10**12, idle=True)


def nothing() -> Workload:
    """A workload that ends at once."""
    yield from ()


def then_idle(workload: Workload) -> Workload:
    """``workload``, then idle once it ends."""
    yield from workload
    yield Done()
    yield from idle()


def phased(phases: list[tuple[str, Workload, int, bool]]) -> Workload:
    """Run each (name, workload, duration_ns, task) in order, then idle. A phase ends when its
    workload does or, with a duration, once that much time has passed since it started (a
    think is cut at the end); whatever it still has mapped is unmapped before the next. Each
    phase starts with a ``Phase`` mark, and a last one (``PHASES_DONE``) marks the end."""
    now = 0
    for index, (name, workload, duration_ns, task) in enumerate(phases):
        now = yield Phase(index, name, task)
        ends = now + duration_ns if duration_ns else None
        mapped: set[int] = set()
        op: Op | None = next(workload, None)
        while op is not None and (ends is None or now < ends):
            if type(op) is Map:
                mapped.add(op.region)
            elif type(op) is Unmap:
                mapped.discard(op.region)
            elif type(op) is Think and ends is not None and now + op.duration_ns > ends:
                op = Think(ends - now, op.idle)
            now = yield op
            try:
                op = workload.send(now)
            except StopIteration:
                op = None
        for region in sorted(mapped):
            now = yield Unmap(region)
    yield Phase(len(phases), PHASES_DONE)  # marks where the last phase ended
    yield Done()
    yield from idle()


def take(workload: Workload, count: int, step_ns: int = 1) -> list[Op]:
    """The first ``count`` operations, as if each took ``step_ns`` (for tests and docs)."""
    ops = [next(workload)]
    while len(ops) < count:
        ops.append(workload.send(len(ops) * step_ns))
    return ops
