"""Messages between the guest's actors: frozen, slotted, carrying what the receiver records.

Every request to the zone carries ``sent_ns`` so the zone can measure how long the requester
queued for the lock, and ``requester`` so contention is recorded per requester.
"""

from __future__ import annotations

import attrs


@attrs.frozen(slots=True)
class ZoneAlloc:
    """Take up to ``count`` blocks of ``order`` under one lock hold (``rmqueue_bulk`` when > 1).

    The reply is a tuple of pfns; fewer than ``count`` (or none) when memory ran short.
    """

    requester: str
    order: int
    count: int
    sent_ns: int


@attrs.frozen(slots=True)
class ZoneFree:
    """Return blocks of ``order`` under one lock hold (``free_pcppages_bulk``)."""

    requester: str
    order: int
    pfns: tuple[int, ...]
    sent_ns: int


@attrs.frozen(slots=True)
class ZoneSnapshot:
    """Ask the zone for its counters (no lock taken: like reading zone vmstat)."""
