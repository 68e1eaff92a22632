"""pagehint's actor runtime on trio: generic, knowing nothing of pages.

Actors with bounded mailboxes and typed dispatch, supervision, a fast virtual clock,
reproducible scheduling, structured JSON-lines logs and metrics. A run that deadlocks in virtual
time raises ``DeadlockError`` naming what each actor waits on, instead of hanging.
"""

from .actor import Actor, MailboxStats, Reply, handles
from .clock import NS_PER_S, RealClock, SimClock, VirtualClock, current_clock
from .determinism import derive_seed, deterministic_scheduling, stream_for
from .errors import (
    ActorCrashed,
    ActorStopped,
    AskSelf,
    AskTimeout,
    DeadlockError,
    DuplicateActor,
    PagehintError,
    UnhandledMessage,
    UnknownActor,
)
from .lock import TimedLock, TimedLockStatistics
from .log import LOG_SCHEMA_VERSION, MemoryLog, RunLog, null_log
from .metrics import Counter, Histogram, Metrics, TimeSeries
from .system import ActorSystem, open_actor_system, run_simulation
from .version import VERSION

__version__ = VERSION

__all__ = [
    "LOG_SCHEMA_VERSION",
    "NS_PER_S",
    "VERSION",
    "Actor",
    "ActorCrashed",
    "ActorStopped",
    "ActorSystem",
    "AskSelf",
    "AskTimeout",
    "Counter",
    "DeadlockError",
    "DuplicateActor",
    "Histogram",
    "MailboxStats",
    "MemoryLog",
    "Metrics",
    "PagehintError",
    "RealClock",
    "Reply",
    "RunLog",
    "SimClock",
    "TimeSeries",
    "TimedLock",
    "TimedLockStatistics",
    "UnhandledMessage",
    "UnknownActor",
    "VirtualClock",
    "current_clock",
    "derive_seed",
    "deterministic_scheduling",
    "handles",
    "null_log",
    "open_actor_system",
    "run_simulation",
    "stream_for",
]
