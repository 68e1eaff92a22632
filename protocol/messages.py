"""Messages between the guest's actors: frozen, slotted, carrying what the receiver records.

Every request to the zone carries ``sent_ns`` so the zone can measure how long the requester
queued for the lock, and ``requester`` so contention is recorded per requester.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
class ZoneWork:
    """Run ``work(allocator)`` under the zone lock: a hinting policy's isolate or put-back step.

    ``work`` returns ``(result, blocks_examined)``; the lock is held for the base cost plus the
    per-block cost of every block examined, and ``result`` is the reply.
    """

    requester: str
    work: Callable[[Any], tuple[Any, int]]
    sent_ns: int


@attrs.frozen(slots=True)
class WakeWorker:
    """The free path's trigger: the hinting worker has work (an interrupt; carries nothing)."""


@attrs.frozen(slots=True)
class SubmitReport:
    """Worker to device: put these blocks on the reporting virtqueue and kick the host.

    The reply is True once queued, False when the virtqueue has no room (retry after a
    completion). The outcome arrives later as ``ReportDone`` to ``reply_to``.
    """

    blocks: tuple[tuple[int, int], ...]  # (pfn, order)
    token: int
    reply_to: Any


@attrs.frozen(slots=True)
class ReportDone:
    """Device to worker: the host used (``acked``) or dropped (device reset) a report."""

    token: int
    acked: bool


@attrs.frozen(slots=True)
class HostNotify:
    """Device to host: a kick (a VM exit) on a guest's reporting queue."""

    guest: str


@attrs.frozen(slots=True)
class UsedInterrupt:
    """Host to device: used buffers are ready (an injected interrupt)."""


@attrs.frozen(slots=True)
class DeviceReset:
    """Host to device: the device was reset; every outstanding report is lost."""
