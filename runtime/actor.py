"""Actors: a named trio task, one bounded mailbox, typed dispatch, ``tell`` and ``ask``.

The mailbox loop follows the NAPI pattern of a NIC driver: block for the first message (the
interrupt), then drain without blocking up to ``budget`` messages (the poll) before going
back to a blocking receive, which yields to the scheduler. Every blocking ``send``/``receive``
on a trio channel is a trip through the scheduler; draining with ``receive_nowait`` is both the
Rx model and the main speed lever.

``tell`` is a checkpoint only when the target's mailbox is full: then the sender waits (real,
visible backpressure, counted in ``MailboxStats``) and nothing is dropped.
"""

from __future__ import annotations

import inspect
import random
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs
import outcome
import trio
from structlog.typing import FilteringBoundLogger
from trio.lowlevel import Abort, RaiseCancelT, Task, current_task, reschedule, wait_task_rescheduled

from .clock import SimClock, TimerHandle
from .errors import ActorStopped, AskSelf, AskTimeout, UnhandledMessage

if TYPE_CHECKING:
    from .system import ActorSystem

_F = TypeVar("_F", bound=Callable[..., Any])
_Handler = tuple[Callable[[Any, Any], Any], bool]


def handles(*message_types: type) -> Callable[[_F], _F]:
    """Mark a method (sync or async) as the handler of these message types.

    The handler's return value is the reply to an ``ask``; it is ignored for a ``tell``.
    """
    if not message_types:
        raise TypeError("handles() needs at least one message type")

    def mark(method: _F) -> _F:
        method.__pagehint_handles__ = message_types  # type: ignore[attr-defined]
        return method

    return mark


@attrs.define(slots=True)
class MailboxStats:
    """What an actor's mailbox saw; cheap enough to keep on every message."""

    capacity: int
    depth: int = 0  # queued, including messages held by senders blocked on a full mailbox
    peak_depth: int = 0
    handled: int = 0
    wakeups: int = 0
    budget_exhausted: int = 0
    blocked_sends: int = 0
    blocked_ns: int = 0
    dead_letters: int = 0

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


class Reply:
    """The asker's side of one ``ask``: settled once, by a value, an error or a timeout."""

    __slots__ = ("__weakref__", "_message", "_outcome", "_since_ns", "_target", "_task", "_timer")

    def __init__(self, target: str, message: object, since_ns: int) -> None:
        self._target = target
        self._message = message
        self._since_ns = since_ns  # when it was asked, for a deadlock report
        self._outcome: outcome.Outcome[Any] | None = None
        self._task: Task | None = None
        self._timer: TimerHandle | None = None

    @property
    def settled(self) -> bool:
        return self._outcome is not None

    def send(self, value: Any) -> None:
        self._settle(outcome.Value(value))

    def fail(self, error: BaseException) -> None:
        self._settle(outcome.Error(error))

    def _settle(self, result: outcome.Outcome[Any]) -> None:
        if self._outcome is not None:
            return  # a late reply after a timeout, or a second one: the first result stands
        self._outcome = result
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            reschedule(self._task, result)

    def _time_out(self, timeout_ns: int) -> None:
        self._settle(outcome.Error(AskTimeout(self._target, self._message, timeout_ns)))

    async def wait(self, clock: SimClock, timeout_ns: int | None) -> Any:
        if self._outcome is not None:  # answered while we were blocked sending
            return self._outcome.unwrap()
        if timeout_ns is not None:
            self._timer = clock.call_at(
                clock.now_ns() + timeout_ns, lambda reply: reply._time_out(timeout_ns), self
            )
        self._task = current_task()

        def abort(_: RaiseCancelT) -> Abort:
            self._outcome = outcome.Value(None)  # cancelled: any later reply is dropped
            if self._timer is not None:
                self._timer.cancel()
            return Abort.SUCCEEDED

        return await wait_task_rescheduled(abort)


class Actor:
    """Base of every role. Subclasses declare handlers with ``@handles(MessageType)``.

    An actor is reactive by default (``run`` serves the mailbox); an active one, such as a
    vCPU running a workload, overrides ``run`` and may still call ``serve`` in a nursery.
    """

    default_mailbox_size: ClassVar[int] = 64
    default_budget: ClassVar[int] = 64
    _handlers: ClassVar[dict[type, _Handler]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table: dict[type, _Handler] = {}
        for klass in reversed(cls.__mro__):
            for attribute in vars(klass).values():
                for message_type in getattr(attribute, "__pagehint_handles__", ()):
                    table[message_type] = (attribute, inspect.iscoroutinefunction(attribute))
        cls._handlers = table

    def __init__(
        self, name: str, *, mailbox_size: int | None = None, budget: int | None = None
    ) -> None:
        if not name:
            raise ValueError("an actor needs a non-empty name")
        self.name = name
        self.budget = budget if budget is not None else self.default_budget
        if self.budget < 1:
            raise ValueError(f"actor {name!r}: budget must be at least 1, got {self.budget}")
        capacity = mailbox_size if mailbox_size is not None else self.default_mailbox_size
        if capacity < 1:
            raise ValueError(f"actor {name!r}: mailbox_size must be at least 1, got {capacity}")
        self.stats = MailboxStats(capacity=capacity)
        self._send, self._receive = trio.open_memory_channel[tuple[Any, Reply | None]](capacity)
        self._alive = False
        self._task: Task | None = None
        self._cancel_scope: trio.CancelScope | None = None
        self._current: object = None
        self._reply: Reply | None = None
        self._deferred: weakref.WeakSet[Reply] = weakref.WeakSet()  # taken by defer_reply
        # Set by ActorSystem.spawn:
        self.system: ActorSystem
        self.clock: SimClock
        self.log: FilteringBoundLogger
        self.random: random.Random

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._alive

    async def on_start(self) -> None:
        """Runs once before ``run``; override to set up."""

    def on_stop(self) -> None:
        """Runs once when the actor stops cleanly (not after a crash); must not block."""

    async def run(self) -> None:
        await self.serve()

    def stop(self) -> None:
        """Stop this actor: later messages become dead letters, pending asks fail."""
        self._alive = False
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    @property
    def current_message(self) -> object:
        """The message being handled (None between messages)."""
        return self._current

    # -- time and randomness ---------------------------------------------------------------
    @property
    def now_ns(self) -> int:
        return self.clock.now_ns()

    async def sleep_ns(self, duration_ns: int) -> None:
        """Spend ``duration_ns`` of (virtual) time, e.g. the cost of holding a lock."""
        await self.clock.sleep_until_ns(self.clock.now_ns() + duration_ns)

    # -- sending -------------------------------------------------------------------------
    def _check_handled(self, message: object) -> None:
        if type(message) not in self._handlers:
            for base in type(message).__mro__[1:]:
                if base in self._handlers:
                    self._handlers[type(message)] = self._handlers[base]
                    return
            names = sorted(t.__name__ for t in self._handlers)
            raise UnhandledMessage(self.name, message, names)

    async def tell(self, message: object) -> None:
        """Deliver ``message`` to this actor; waits only while its mailbox is full."""
        self._check_handled(message)
        if not self._alive:
            self._dead_letter(message, None)
            return
        await self._enqueue((message, None))

    def try_tell(self, message: object) -> bool:
        """Deliver without waiting; False (nothing sent) when the mailbox is full."""
        self._check_handled(message)
        if not self._alive:
            self._dead_letter(message, None)
            return True
        try:
            self._send.send_nowait((message, None))
        except trio.WouldBlock:
            return False
        self.stats.depth += 1
        self.stats.peak_depth = max(self.stats.peak_depth, self.stats.depth)
        return True

    async def ask(self, message: object, *, timeout_ns: int | None = None) -> Any:
        """Deliver ``message`` and wait for the handler's return value.

        Raises ``AskTimeout`` after ``timeout_ns`` of (virtual) time, ``ActorStopped`` at once
        if this actor is stopped or stops before answering, ``AskSelf`` if called from this
        actor's own task.
        """
        self._check_handled(message)
        if not self._alive:
            raise ActorStopped(self.name, message)
        if self._task is current_task():
            raise AskSelf(self.name, message)
        reply = Reply(self.name, message, self.clock.now_ns())
        await self._enqueue((message, reply))
        return await reply.wait(self.clock, timeout_ns)

    async def _enqueue(self, item: tuple[Any, Reply | None]) -> None:
        # Depth counts a message from the moment it is offered, so messages held by blocked
        # senders are part of it: that is the queue a contended actor really has.
        stats = self.stats
        stats.depth += 1
        if stats.depth > stats.peak_depth:
            stats.peak_depth = stats.depth
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            await self._enqueue_waiting(item)

    async def _enqueue_waiting(self, item: tuple[Any, Reply | None]) -> None:
        stats = self.stats
        stats.blocked_sends += 1
        started = self.clock.now_ns()
        try:
            await self._send.send(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            stats.depth -= 1
            self._dead_letter(*item)
        finally:
            stats.blocked_ns += self.clock.now_ns() - started

    def _dead_letter(self, message: object, reply: Reply | None) -> None:
        self.stats.dead_letters += 1
        if reply is not None:
            reply.fail(ActorStopped(self.name, message))
        if hasattr(self, "log"):
            self.log.warning("dead_letter", message_type=type(message).__name__, message=message)

    # -- replying later ------------------------------------------------------------------
    def defer_reply(self) -> Reply | None:
        """Take the current ask's reply, to answer it later (None for a tell).

        The handler's return value is then ignored; call ``reply.send(value)`` when ready. If
        this actor stops before answering, the asker gets ``ActorStopped``.
        """
        reply, self._reply = self._reply, None
        if reply is not None:
            self._deferred.add(reply)
        return reply

    # -- the mailbox loop ----------------------------------------------------------------
    async def serve(self) -> None:
        """Handle messages until stopped: block for one, then drain up to ``budget``."""
        receive = self._receive
        budget = self.budget
        handlers = self._handlers
        stats = self.stats
        while True:
            self._current = None
            item = await receive.receive()
            stats.wakeups += 1
            handled = 0
            while True:
                message, reply = item
                stats.depth -= 1
                self._current = message
                self._reply = reply
                method, is_async = handlers[type(message)]
                result = method(self, message)
                if is_async:
                    result = await result
                if self._reply is not None:
                    self._reply.send(result)
                handled += 1
                if handled >= budget:
                    stats.budget_exhausted += 1
                    break
                try:
                    item = receive.receive_nowait()
                except trio.WouldBlock:
                    break
            stats.handled += handled

    def _drain_dead_letters(self) -> None:
        """After stopping: whatever is still queued is undeliverable."""
        while True:
            try:
                message, reply = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            self.stats.depth -= 1
            self._dead_letter(message, reply)
        if self._reply is not None:  # stopped mid-handler: its asker must not wait forever
            self._reply.fail(ActorStopped(self.name, self._current))
            self._reply = None
        for reply in list(self._deferred):  # answers promised for later (settled: a no-op)
            reply.fail(ActorStopped(self.name, reply._message))
        self._receive.close()
