"""What a hinting design is, and the ``none`` design (no hinting) itself.

A design is one class, a subclass of ``Policy``, and everything about it is said there:

- ``name`` and ``description``: what ``pagehint designs`` and reports call it;
- ``Config``: an attrs class deriving ``DesignConfig`` with only the design's own knobs, each
  with its kernel default and a docstring (``pagehint config --explain`` prints them);
- ``default_capacity``, ``default_delay_ns`` and ``default_min_order``: its values of the knobs
  every design has, used where the scenario leaves them unset;
- ``limits``: those knobs resolved against the guest and the host's batch (``Limits``);
- ``__init__(limits, config)``: one guest's decisions, from its limits and its own knobs;
- the decisions, plain synchronous code. Every method that touches the allocator is called by
  the worker *under the zone lock* (the worker sends it to the zone actor as a ``ZoneWork``):
  what to record when a block is freed and whether that wakes the worker, which blocks to
  isolate for the next report, and how to put them back when the host has answered.

Designs are found by name through the entry-point group ``pagehint.designs`` (the built-ins
register there exactly as a user's package does) or by import path, ``package.module:Class``.
``Policy`` itself is ``none``: it never wakes the worker.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from pagehint.protocol.units import Nanos, pages

from ..mm.buddy import BuddyAllocator
from ..mm.kernels import KernelProfile

Block = tuple[int, int]  # (pfn, order)


@attrs.frozen
class Batch:
    """Blocks isolated for one report, and what it took to find them."""

    blocks: tuple[Block, ...]
    examined: int  # list entries looked at under the lock (the lock hold cost)
    last: bool  # the pass ends after this report
    complete: bool = True  # False: more entries of the same report follow, each under a lock
    # hold of its own (a design that takes the zone lock per entry, as v12's bitmap does)

    @property
    def pages(self) -> int:
        return sum(1 << order for _, order in self.blocks)


@attrs.frozen
class DesignConfig:
    """The ``[policy]`` table: the design, and the knobs every design has.

    A design's own ``Config`` derives from this and adds its knobs. ``capacity``, ``min_order``
    and ``delay`` left unset take the chosen design's own values.
    """

    name: str = "none"
    """The hinting design: an installed one's name (pagehint designs lists them) or the import
    path of a Policy subclass, package.module:Class."""
    capacity: int | None = None
    """Blocks per report; unset: the design's own (pagehint designs lists each; page_reporting
    32, PAGE_REPORTING_CAPACITY)."""
    min_order: int | None = None
    """Smallest order hinted; unset: the design's own (page_reporting pageblock_order)."""
    delay: Nanos | None = None
    """Delay from trigger to pass; unset: the design's own (page_reporting 2s,
    PAGE_REPORTING_DELAY; the others 0)."""
    poll_budget: int = 64
    """Reports per wake-up before the worker yields and polls again (NAPI budget)."""


COMMON_KNOBS = tuple(field.name for field in attrs.fields(DesignConfig))


@attrs.frozen
class Limits:
    """A design's knobs resolved for one scenario: what its decisions run with."""

    capacity: int  # blocks per report, after the host's batch where the design takes it
    min_order: int
    max_order: int
    delay_ns: int
    page_limit: int | None = None  # pages per report, for a design that limits them too


class Policy:
    """The decisions of one hinting design. Subclasses override what differs."""

    name: ClassVar[str] = "none"
    description: ClassVar[str] = "no hinting: the baseline every result is compared with"
    Config: ClassVar[type[DesignConfig]] = DesignConfig
    default_capacity: ClassVar[int] = 32
    default_delay_ns: ClassVar[int] = 0
    returns_memory: ClassVar[bool] = False  # pagehint.testing checks a design that says so
    synchronous: ClassVar[bool] = True  # wait for the host's ack before the next report
    allocations_per_report: ClassVar[int] = 0  # pages allocated (and freed) per report
    kernel_knobs: ClassVar[tuple[str, ...]] = ()  # own knobs whose unset value the kernel sets
    runs_inline: ClassVar[bool] = False  # hints on the freeing CPU, not in a worker it queues
    budgeted: ClassVar[bool] = True  # the worker's poll_budget caps its reports per wake-up
    excludes_shuffle: ClassVar[str] = ""  # why it cannot run with guest.shuffle (empty: it can)
    sorts_reports: ClassVar[bool] = False  # sorts each report's entries (charged per entry)

    @classmethod
    def kernel_defaults(cls, config: Any, kernel: KernelProfile) -> Any:
        """``config`` with the knobs in ``kernel_knobs`` that it leaves unset (None) set as the
        guest ``kernel`` has them."""
        return config

    @classmethod
    def default_min_order(cls, max_order: int, pageblock_order: int) -> int:
        """The smallest order this design hints when ``min_order`` is unset."""
        return max_order - 1

    @classmethod
    def limits(
        cls, config: DesignConfig, max_order: int, pageblock_order: int, host_batch: int
    ) -> Limits:
        """The knobs resolved: unset ones take this design's values, and a batch the host
        supplies (``host_batch`` bytes, 0 for none; Tsirkin's suggestion in the seed thread)
        sets the blocks per report."""
        min_order = config.min_order
        if min_order is None:
            min_order = max(0, cls.default_min_order(max_order, pageblock_order))
        capacity = config.capacity if config.capacity is not None else cls.default_capacity
        if host_batch:
            capacity = max(1, pages(host_batch) >> max(0, min_order))  # checked elsewhere
        delay = config.delay if config.delay is not None else cls.default_delay_ns
        return Limits(capacity, min_order, max_order, delay)

    @classmethod
    def check(cls, config: Any, limits: Limits) -> list[str]:
        """Knob values that are well-typed but impossible for this design, as 'key: why'."""
        return []

    def __init__(self, limits: Limits, config: Any) -> None:
        """One guest's decisions: ``limits`` resolved for it, and ``config``, an instance of
        this design's ``Config``, for its own knobs (a subclass reads those it needs)."""
        self.capacity = limits.capacity
        self.min_order = limits.min_order
        self.max_order = limits.max_order
        self.delay_ns = limits.delay_ns
        self.lost_hints = 0  # frees a design meant to hint but had no room to record

    def on_register(self) -> bool:
        """The driver registered with the device (at boot). True: wake the worker at once."""
        return False

    def fill_ratio(self, batch: Batch) -> float:
        """How full a report is, by what limits this design's reports: here, entries."""
        return len(batch.blocks) / self.capacity

    def on_free(self, pfn: int, order: int, requester: str) -> bool:
        """A block landed on a free list (after merging). True: wake the worker."""
        return False

    def begin_pass(self, allocator: BuddyAllocator) -> None:
        """The worker starts a pass (after its delay)."""

    def fill(self, allocator: BuddyAllocator) -> Batch:
        """Isolate the next report's blocks. ``last`` ends the pass."""
        return Batch((), 0, True)

    def drain(self, allocator: BuddyAllocator, batch: Batch, reported: bool) -> None:
        """Put a report's blocks back. ``reported`` is False after a failed or reset report."""
        for pfn, order in batch.blocks:
            allocator.putback(pfn, order, reported=reported)

    def end_pass(self) -> bool:
        """The pass is over. True: start another pass (the worker was re-armed)."""
        return False
