"""The actor system: spawns and supervises actors, and turns a crash into one clear error.

Supervision is deliberately simple ("let it crash", but loudly): an actor whose handler or
``run`` raises ends the whole run with ``ActorCrashed``, naming the actor, the message it was
handling and the virtual time, with the original exception chained. A model whose actor died
silently would produce numbers that look right and are not. A run that deadlocks in virtual time
ends the same way, with ``DeadlockError`` naming what each actor waits on
(``pagehint.runtime.deadlock``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import trio

from .actor import Actor
from .clock import RealClock, SimClock, VirtualClock, current_clock
from .deadlock import report_actors_of, watch_for_deadlock
from .determinism import deterministic_scheduling, stream_for
from .errors import ActorCrashed, DuplicateActor, UnknownActor
from .log import RunLog, null_log
from .metrics import Metrics

_A = TypeVar("_A", bound=Actor)
_T = TypeVar("_T")


class ActorSystem:
    """The actors of one run, their clock, seed, log and metrics."""

    def __init__(self, nursery: trio.Nursery, clock: SimClock, seed: int, log: RunLog) -> None:
        self._nursery = nursery
        self.clock = clock
        self.seed = seed
        self.run_log = log
        self.log = log.logger("runtime")
        self.metrics = Metrics()
        self._actors: dict[str, Actor] = {}
        # Told how far the run has got in virtual time, for a progress bar (None: nobody asks).
        self.on_progress: Callable[[int], None] | None = None

    # -- actors --------------------------------------------------------------------------
    def spawn(self, actor: _A) -> _A:
        """Start ``actor`` under supervision; it can be sent messages immediately."""
        if actor.name in self._actors:
            raise DuplicateActor(f"an actor named {actor.name!r} already exists in this system")
        actor.system = self
        actor.clock = self.clock
        actor.log = self.run_log.logger(actor.name)
        actor.random = stream_for(self.seed, "actor", actor.name)
        actor._alive = True
        self._actors[actor.name] = actor
        self._nursery.start_soon(self._supervise, actor, name=f"actor:{actor.name}")
        return actor

    def lookup(self, name: str) -> Actor:
        try:
            return self._actors[name]
        except KeyError:
            known = ", ".join(sorted(self._actors)) or "none"
            raise UnknownActor(f"no actor named {name!r} (actors: {known})") from None

    @property
    def actors(self) -> list[Actor]:
        """Every actor ever spawned, in spawn order."""
        return list(self._actors.values())

    def stop_all(self) -> None:
        for actor in self._actors.values():
            actor.stop()

    async def _supervise(self, actor: Actor) -> None:
        crashed = False
        try:
            with trio.CancelScope() as scope:
                actor._cancel_scope = scope
                actor._task = trio.lowlevel.current_task()
                if not actor._alive:  # stopped before its task first ran
                    scope.cancel()
                await actor.on_start()
                await actor.run()
        except Exception as exc:
            crashed = True
            cause = _sole_error(exc)
            message = actor._current if actor._current is not None else "<no message: in run()>"
            crash = ActorCrashed(actor.name, message, self.clock.now_ns(), cause)
            actor.log.error("actor_crashed", message=message, error=str(crash))
            raise crash from cause
        finally:
            actor._alive = False
            actor._drain_dead_letters()
            if not crashed:
                actor.on_stop()
            actor.log.debug("actor_stopped", **actor.stats.as_dict())

    # -- time ----------------------------------------------------------------------------
    @property
    def now_ns(self) -> int:
        return self.clock.now_ns()

    async def sleep_ns(self, duration_ns: int) -> None:
        await self.clock.sleep_until_ns(self.clock.now_ns() + duration_ns)

    async def sleep_until_ns(self, when_ns: int) -> None:
        await self.clock.sleep_until_ns(when_ns)

    def report_progress(self) -> None:
        """Say how far the run has got: a model's periodic actor (the guest's monitor, once per
        sample) calls this, so that a progress bar costs the hot path nothing."""
        if self.on_progress is not None:
            self.on_progress(self.clock.now_ns())


def _sole_error(error: Exception) -> Exception:
    """An actor's own nursery wraps its error in a group of one: name the error itself."""
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one error to show for a failed run: the earliest crash, else a lone error."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        error = stack.pop()
        if isinstance(error, BaseExceptionGroup):
            stack.extend(reversed(error.exceptions))
        else:
            leaves.append(error)
    crashes = [leaf for leaf in leaves if isinstance(leaf, ActorCrashed)]
    if crashes:
        return min(crashes, key=lambda crash: crash.t_ns)
    return leaves[0] if len(leaves) == 1 else None


@asynccontextmanager
async def open_actor_system(
    *, seed: int = 0, log: RunLog | None = None
) -> AsyncIterator[ActorSystem]:
    """An actor system for the body of the block; its actors are stopped when it ends.

    Must run under one of pagehint's clocks (``run_simulation`` or the pytest fixtures
    arrange that).
    """
    clock = current_clock()
    log = log if log is not None else null_log()
    log.use_clock(clock.now_ns)
    try:
        async with trio.open_nursery() as nursery:
            system = ActorSystem(nursery, clock, seed, log)
            report_actors_of(system)
            try:
                yield system
            finally:
                system.stop_all()
    except BaseExceptionGroup as group:
        single = _unwrap(group)
        if single is None:
            raise
        raise single from single.__cause__


ClockMode = Literal["virtual", "real"]


def make_clock(mode: ClockMode | SimClock) -> SimClock:
    if isinstance(mode, SimClock):
        return mode
    if mode == "virtual":
        return VirtualClock()
    if mode == "real":
        return RealClock()
    raise ValueError(f"clock must be 'virtual' or 'real', got {mode!r}")


def run_simulation(
    main: Callable[[ActorSystem], Awaitable[_T]],
    *,
    seed: int = 0,
    clock: ClockMode | SimClock = "virtual",
    log: RunLog | None = None,
    **trio_run_kwargs: Any,
) -> _T:
    """Run ``main(system)`` in a fresh trio run with reproducible scheduling; return its result.

    When ``main`` returns, every actor is stopped and the run ends. In virtual time, a run
    that deadlocks raises ``DeadlockError`` instead of hanging.
    """
    sim_clock = make_clock(clock)

    async def root() -> _T:
        async with open_actor_system(seed=seed, log=log) as system:
            return await main(system)

    with deterministic_scheduling(seed):
        return trio.run(watch_for_deadlock, root, clock=sim_clock, **trio_run_kwargs)
