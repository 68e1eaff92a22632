"""``max_order``: report only MAX_ORDER-1 blocks, and only while free memory is above a floor.

A worked example of a hinting design that lives outside pagehint. The idea: page reporting's
false OOMs come from isolating memory the guest is about to need (kernel-notes: 32 x 4 MiB
isolated on a 512 MiB instance), so this design reports only the largest blocks, and stops
isolating as soon as the zone's free memory would fall to a floor the user sets.

Everything pagehint needs is in the class: its name, description, config class (its own knob,
``free_above``, with a default) and its decisions. Free page reporting's machinery is reused
through the allocator's public methods only.
"""

from __future__ import annotations

import attrs

from pagehint.actors.designs import Batch, DesignConfig, Limits, Policy
from pagehint.actors.mm.buddy import BuddyAllocator
from pagehint.protocol.units import Bytes, pages


@attrs.frozen
class MaxOrderConfig(DesignConfig):
    free_above: Bytes = Bytes(256 << 20)
    """Isolate a block only while the zone keeps more than this much free memory besides it."""


class MaxOrderReporting(Policy):
    """Wake on a freed MAX_ORDER-1 block; report such blocks while free memory allows."""

    name = "max_order"
    description = (
        "example plugin: reports only MAX_ORDER-1 blocks, and only while free memory stays "
        "above policy.free_above"
    )
    Config = MaxOrderConfig
    returns_memory = True

    def __init__(self, limits: Limits, config: MaxOrderConfig) -> None:
        super().__init__(limits, config)
        self.floor_pages = pages(config.free_above)
        self.requested = False

    @classmethod
    def default_min_order(cls, max_order: int, pageblock_order: int) -> int:
        return max_order - 1  # MAX_ORDER-1 only: 4 MiB blocks on x86-64

    def on_free(self, pfn: int, order: int, requester: str) -> bool:
        if order < self.min_order or self.requested:
            return False
        self.requested = True  # one wake-up until the pass ends
        return True

    def fill(self, allocator: BuddyAllocator) -> Batch:
        blocks: list[tuple[int, int]] = []
        examined = 0
        order = self.min_order
        pfn = allocator.first_free(order)
        while pfn is not None and len(blocks) < self.capacity:
            following = allocator.next_free(pfn)
            examined += 1
            if allocator.free_pages - (1 << order) <= self.floor_pages:
                break  # the floor: leave the rest for the guest
            if not allocator.is_reported(pfn) and allocator.isolate(pfn, order):
                blocks.append((pfn, order))
            pfn = following
        return Batch(tuple(blocks), examined, last=len(blocks) < self.capacity)

    def drain(self, allocator: BuddyAllocator, batch: Batch, reported: bool) -> None:
        for pfn, order in batch.blocks:  # reported blocks to the tail, as Linux 5.10 does
            allocator.putback(pfn, order, reported=reported, to_tail=reported)

    def end_pass(self) -> bool:
        self.requested = False
        return False
