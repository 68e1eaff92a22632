"""The runtime's exceptions: small, orthogonal, each saying who and when."""

from __future__ import annotations

# The most of a message's repr (or of a crash's cause) an error's text shows: a report of a
# thousand blocks would otherwise make one error line (and error.json) many kilobytes long.
SHOWN_LIMIT = 240


def bounded(text: str) -> str:
    """``text``, cut to ``SHOWN_LIMIT`` characters with its full length said."""
    if len(text) <= SHOWN_LIMIT:
        return text
    return f"{text[:SHOWN_LIMIT]}... ({len(text):,} characters)"


def shown(message: object) -> str:
    """How an error names the message it concerns: its repr, bounded."""
    return bounded(repr(message))


class PagehintError(Exception):
    """Base of every error pagehint raises on purpose."""


class ActorCrashed(PagehintError):
    """An actor's handler raised; the run ends with this one error (the cause is chained)."""

    def __init__(self, actor: str, message: object, t_ns: int, cause: BaseException) -> None:
        self.actor = actor
        self.message = message
        self.t_ns = t_ns
        self.cause = cause
        super().__init__(
            f"actor {actor!r} crashed at t={t_ns} ns while handling {shown(message)}: "
            + bounded(f"{type(cause).__name__}: {cause}")
        )


class ActorStopped(PagehintError):
    """A request went to an actor that is no longer running."""

    def __init__(self, actor: str, message: object) -> None:
        self.actor = actor
        self.message = message
        super().__init__(f"actor {actor!r} is stopped; cannot deliver {shown(message)}")


class AskTimeout(PagehintError):
    """No reply arrived within the ask's timeout (virtual time under the virtual clock)."""

    def __init__(self, actor: str, message: object, timeout_ns: int) -> None:
        self.actor = actor
        self.message = message
        self.timeout_ns = timeout_ns
        super().__init__(f"no reply from {actor!r} to {shown(message)} within {timeout_ns} ns")


class AskSelf(PagehintError):
    """An actor asked itself: it would wait forever for a reply only it can produce."""

    def __init__(self, actor: str, message: object) -> None:
        super().__init__(
            f"actor {actor!r} asked itself {shown(message)}: that would deadlock; "
            "call the handler directly or use tell"
        )


class UnhandledMessage(PagehintError):
    """A message of a type the receiving actor has no handler for (the sender's bug)."""

    def __init__(self, actor: str, message: object, handled: list[str]) -> None:
        self.actor = actor
        self.message = message
        super().__init__(
            f"actor {actor!r} has no handler for {type(message).__name__} ({shown(message)}); "
            f"it handles: {', '.join(handled) or 'nothing'}"
        )


class DeadlockError(PagehintError):
    """Every task of a virtual-time run waits and nothing can wake one: the model's bug.

    ``waits`` says, one line per task, what each waits on (an ask: who asked whom what, and
    when); the message lists them under the time the run got stuck.
    """

    def __init__(self, t_ns: int, waits: list[str]) -> None:
        self.t_ns = t_ns
        self.waits = waits
        super().__init__(
            f"deadlock at t={t_ns} ns: every task waits, and no timer, trio deadline, thread "
            "or I/O can wake one" + "".join(f"\n  {wait}" for wait in waits)
        )


class DuplicateActor(PagehintError):
    """Two actors of one system with the same name."""


class UnknownActor(PagehintError, LookupError):
    """A lookup by a name no actor of the system has."""
