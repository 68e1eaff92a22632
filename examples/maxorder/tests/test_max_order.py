"""The max_order design keeps pagehint's design contract, and keeps its floor."""

from pagehint_maxorder import MaxOrderConfig, MaxOrderReporting

from pagehint.actors.designs import Limits
from pagehint.actors.mm.buddy import BuddyAllocator
from pagehint.protocol.units import Bytes
from pagehint.testing import check_design


def test_it_keeps_the_contract() -> None:
    report = check_design(MaxOrderReporting)
    assert report.returned_bytes > 0


def test_it_isolates_only_top_order_blocks_and_never_below_its_floor() -> None:
    zone = BuddyAllocator(1 << 18)  # 1 GiB, all free: 256 blocks of 4 MiB
    floor = MaxOrderConfig(free_above=Bytes(900 << 20))
    design = MaxOrderReporting(Limits(32, 10, 11, 0), floor)
    isolated = []
    while True:
        batch = design.fill(zone)
        isolated += batch.blocks
        if batch.last:
            break
    assert isolated and all(order == 10 for _, order in isolated)
    assert zone.free_pages * 4096 > 900 << 20  # the floor holds
    assert len(isolated) == (1024 - 900) // 4 - 1  # ...and everything above it was taken
