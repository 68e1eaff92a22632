"""Each hinting design's decisions, driven synchronously on a real allocator (no trio)."""

from __future__ import annotations

from pagehint.actors.designs import (
    BitmapConfig,
    BitmapPolicy,
    Limits,
    PageReportingConfig,
    PageReportingPolicy,
    PercpuCaptureConfig,
    PercpuCapturePolicy,
    ScannerConfig,
    ScannerPolicy,
)
from pagehint.actors.designs.page_reporting import ACTIVE, IDLE, REQUESTED
from pagehint.actors.mm.buddy import BlockState, BuddyAllocator

MAX_ORDER = 11


def zone(pages: int = 1 << 18) -> BuddyAllocator:
    """A 1 GiB zone: 256 free order-10 blocks."""
    return BuddyAllocator(pages, MAX_ORDER, 9)


def test_page_reporting_state_machine_requests_once_and_rearms() -> None:
    policy = PageReportingPolicy(Limits(32, 9, MAX_ORDER, 0), PageReportingConfig())
    assert policy.on_free(0, 10, "vcpu0") is True  # IDLE -> REQUESTED: schedule the work
    assert policy.state == REQUESTED
    assert policy.on_free(1024, 10, "vcpu0") is False  # already requested
    assert policy.on_free(0, 8, "vcpu0") is False  # below the reporting order
    allocator = zone()
    policy.begin_pass(allocator)
    assert policy.state == ACTIVE
    assert policy.on_free(2048, 10, "vcpu1") is False  # ACTIVE -> REQUESTED, no new work
    assert policy.end_pass() is True  # the request during the pass re-arms it
    policy.begin_pass(allocator)
    assert policy.end_pass() is False and policy.state == IDLE


def test_page_reporting_reports_full_scatterlists_within_the_list_budget() -> None:
    allocator = zone()  # nr_free(10) = 256: budget = ceil(256 / 512) = 1, so 2 reports
    policy = PageReportingPolicy(Limits(32, 9, MAX_ORDER, 0), PageReportingConfig())
    policy.request()
    policy.begin_pass(allocator)
    reports = []
    while True:
        batch = policy.fill(allocator)
        reports.append(batch)
        policy.drain(allocator, batch, reported=True)
        if batch.last:
            break
    assert [len(batch.blocks) for batch in reports] == [32, 32, 0]
    assert allocator.reported_pages == 64 << 10
    assert policy.state == REQUESTED  # the budget ran out with unreported pages left
    assert policy.end_pass() is True
    allocator.check_invariants()


def test_page_reporting_skips_reported_blocks_and_rotates_the_list() -> None:
    allocator = zone()
    policy = PageReportingPolicy(Limits(4, 9, MAX_ORDER, 0), PageReportingConfig())
    policy.request()
    policy.begin_pass(allocator)
    first = policy.fill(allocator)
    policy.drain(allocator, first, reported=True)
    second = policy.fill(allocator)
    assert not set(first.blocks) & set(second.blocks)
    # The list was rotated to start at the first block not yet reported.
    head = allocator.first_free(10)
    assert head is not None
    assert head == second.blocks[0][0] or not allocator.is_reported(head)


def test_page_reporting_leaves_a_low_zone_alone() -> None:
    allocator = zone(1 << 14)  # 64 MiB: below low watermark + 32 << 9 pages
    policy = PageReportingPolicy(Limits(32, 9, MAX_ORDER, 0), PageReportingConfig())
    policy.request()
    policy.begin_pass(allocator)
    assert policy.fill(allocator).blocks == ()


def test_isolation_respects_the_min_watermark_gate() -> None:
    allocator = BuddyAllocator(1 << 11, MAX_ORDER, 9)  # 8 MiB: min watermark 90 pages
    blocks = [allocator.alloc(9) for _ in range(4)]
    first = blocks[0]
    assert None not in blocks and first is not None
    allocator.free(first, 9)
    assert allocator.free_pages == 512
    assert allocator.isolate(first, 9) is False  # isolating would leave 0 free pages
    assert allocator.state_of(first) is BlockState.FREE


def test_merged_blocks_are_not_marked_reported() -> None:
    big = BuddyAllocator(1 << 14, MAX_ORDER, 9)
    pfn = big.alloc(9)
    buddy = big.alloc(9)
    assert pfn is not None and buddy is not None
    big.free(pfn, 9)
    assert big.isolate(pfn, 9)
    big.free(buddy, 9)  # the buddy comes back while pfn is isolated: no merge yet
    assert big.putback(pfn, 9, reported=True) == (min(pfn, buddy), 10)
    assert not big.is_reported(min(pfn, buddy))  # merged: left for the next pass at order 10


def test_scanner_wakes_at_twice_a_batch_and_stops_when_it_cannot_fill_a_set() -> None:
    allocator = zone()
    policy = ScannerPolicy(Limits(32, 9, MAX_ORDER, 0, page_limit=16384), ScannerConfig())
    wakes = [policy.on_free(i << 10, 10, "vcpu0") for i in range(40)]
    assert wakes.index(True) == 31  # 32 x 4 MiB = 128 MiB = 2 x 64 MiB
    assert wakes.count(True) == 1  # one interrupt; the worker then polls
    batches = []
    while True:
        batch = policy.fill(allocator)
        batches.append(batch)
        policy.drain(allocator, batch, reported=True)
        if batch.last:
            break
    assert all(batch.pages == 16384 for batch in batches[:-1])  # 64 MiB each
    assert batches[-1].pages < 16384
    assert sum(batch.pages for batch in batches) == allocator.reported_pages
    # Offline blocks are enqueued at the tail, so the head is never an offline block while an
    # online one exists at that order.
    assert policy.end_pass() is False and policy.awake is False
    allocator.check_invariants()


def test_scanner_isolates_nothing_offline() -> None:
    allocator = zone()
    policy = ScannerPolicy(Limits(32, 9, MAX_ORDER, 0, page_limit=16384), ScannerConfig())
    first = policy.fill(allocator)
    policy.drain(allocator, first, reported=True)
    second = policy.fill(allocator)
    assert not {pfn for pfn, _ in first.blocks} & {pfn for pfn, _ in second.blocks}


def test_percpu_capture_triggers_at_threshold_and_loses_hints_past_the_array() -> None:
    policy = PercpuCapturePolicy(
        Limits(128, 10, MAX_ORDER, 0), PercpuCaptureConfig(array_size=4, threshold=2)
    )
    assert policy.on_free(0, 10, "vcpu0") is False
    assert policy.on_free(1024, 10, "vcpu0") is True  # threshold reached on vcpu0
    assert policy.on_free(2048, 9, "vcpu0") is False  # below MAX_ORDER - 1: not captured
    assert [policy.on_free(i << 10, 10, "vcpu0") for i in (3, 4, 5)] == [False, False, False]
    assert policy.lost_hints == 1  # the array holds 4; the fifth was dropped
    assert policy.on_free(9 << 10, 10, "vcpu1") is False  # per CPU


def test_percpu_capture_isolates_only_blocks_still_free_at_their_order() -> None:
    allocator = zone()
    taken = allocator.alloc(10)
    assert taken is not None
    policy = PercpuCapturePolicy(Limits(128, 10, MAX_ORDER, 0), PercpuCaptureConfig(threshold=2))
    policy.on_free(taken, 10, "vcpu0")  # stale: allocated again since
    policy.on_free(taken + 1024, 10, "vcpu0")
    batch = policy.fill(allocator)
    assert batch.blocks == ((taken + 1024, 10),)
    assert allocator.state_of(taken + 1024) is BlockState.ISOLATED


def test_bitmap_sets_bits_after_merge_and_reports_sixteen_synchronously() -> None:
    allocator = zone()
    policy = BitmapPolicy(Limits(16, 9, MAX_ORDER, 0), BitmapConfig(threshold=16))
    wakes = [policy.on_free(i << 10, 10, "vcpu0") for i in range(20)]
    assert wakes.index(True) == 15 and wakes.count(True) == 1
    policy.begin_pass(allocator)
    # One bit per hold of the zone lock (v12's scan_zone_bitmap): a report is whole at 16.
    steps = [policy.fill(allocator) for _ in range(16)]
    assert all(len(step.blocks) == 1 for step in steps)
    assert [step.complete for step in steps] == [False] * 15 + [True] and not steps[-1].last
    assert all(order == 10 for step in steps for _, order in step.blocks)
    rest = [policy.fill(allocator) for _ in range(4)]
    assert sum(len(step.blocks) for step in rest) == 4 and rest[-1].last
    assert not policy.bits  # cleared as hinted
    assert policy.end_pass() is False  # not re-armed: new frees must set the threshold again
    assert policy.on_free(30 << 10, 10, "vcpu0") is False  # one new bit of 16
