"""The pure split virtqueue: chains, notification suppression, corruption, reset, a model walk."""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pagehint.protocol.virtqueue import (
    VRING_AVAIL_F_NO_INTERRUPT,
    VRING_DESC_F_INDIRECT,
    VRING_DESC_F_NEXT,
    VRING_DESC_F_WRITE,
    VRING_USED_F_NO_NOTIFY,
    AvailableChain,
    InvalidRequest,
    QueueFull,
    VirtQueue,
    VirtqueueError,
    vring_need_event,
)


def state(vq: VirtQueue) -> dict[str, Any]:
    """Everything the queue holds, private books included, to compare before and after."""
    return copy.deepcopy(vars(vq))


def cycle(vq: VirtQueue, token: object, buffers: int = 1, written: int = 0) -> None:
    """One chain all the way round: add, pop, push, collect."""
    vq.add([(0x1000 * n, 4096) for n in range(buffers)], token)
    chain = vq.pop()
    assert chain is not None
    vq.push_used(chain.head, written)
    assert vq.get_used() == (token, written)


# ---------------------------------------------------------------------------------- construction


@pytest.mark.parametrize("size", [0, -4, 3, 12, 65536, 2**20])
def test_size_must_be_a_power_of_two_up_to_32768(size: int) -> None:
    with pytest.raises(InvalidRequest, match=rf"got {size}\b"):
        VirtQueue(size)


@pytest.mark.parametrize("size", [1, 2, 256, 32768])
def test_valid_sizes_start_all_free(size: int) -> None:
    vq = VirtQueue(size)
    assert (vq.size, vq.num_free, vq.in_flight, vq.pending_used) == (size, size, 0, 0)
    assert vq.pending_available == 0 and vq.in_device == 0
    assert vq.desc_next[: min(size, 4) - 1] == list(range(1, min(size, 4)))
    vq.check_invariants()


@pytest.mark.parametrize("start", [-1, 65536])
def test_start_index_must_be_16_bit(start: int) -> None:
    with pytest.raises(InvalidRequest, match=rf"start_index .* got {start}\b"):
        VirtQueue(8, start_index=start)


def test_every_refusal_is_a_virtqueue_error_and_a_bad_argument_is_also_a_value_error() -> None:
    """One ``except VirtqueueError`` catches whatever the ring refuses."""
    refusals: list[Callable[[], object]] = [
        lambda: VirtQueue(3),
        lambda: VirtQueue(8, start_index=-1),
        lambda: VirtQueue(2).add([], "empty"),
        lambda: VirtQueue(2).add([(0, 1)] * 3, "too long"),
        lambda: VirtQueue(2).add([(1 << 64, 1)], "address"),
        lambda: VirtQueue(2).push_used(0, 0),
    ]
    for refuse in refusals:
        with pytest.raises(VirtqueueError):
            refuse()
    with pytest.raises(ValueError):
        VirtQueue(3)


def test_vring_need_event_is_old_le_event_lt_new_modulo_2_16() -> None:
    assert vring_need_event(5, 6, 5)
    assert not vring_need_event(6, 6, 5)  # the entry asked about is not published yet
    assert not vring_need_event(4, 6, 5)  # already notified for it
    assert vring_need_event(65535, 1, 65534)  # across the wrap
    assert vring_need_event(0, 1, 65534)
    assert not vring_need_event(1, 1, 65534)
    assert not vring_need_event(7, 7, 7)  # nothing moved


@given(event=st.integers(0, 0xFFFF), old=st.integers(0, 0xFFFF), moved=st.integers(0, 0xFFFF))
def test_vring_need_event_matches_interval_arithmetic(event: int, old: int, moved: int) -> None:
    new = (old + moved) & 0xFFFF
    crossed = (event - old) & 0xFFFF < moved  # event is one of old, old+1, ..., old+moved-1
    assert vring_need_event(event, new, old) is crossed


# ---------------------------------------------------------------------------------- chains


def test_a_chain_round_trip_lays_out_descriptors_as_linux_does() -> None:
    vq = VirtQueue(8)
    head = vq.add([(0x1000, 4096), (0x8000, 8192), (0x20000, 512)], "report")
    assert head == 0
    assert vq.desc_flags[:3] == [
        VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
        VRING_DESC_F_NEXT | VRING_DESC_F_WRITE,
        VRING_DESC_F_WRITE,
    ]
    assert vq.desc_next[:2] == [1, 2]
    assert (vq.avail_ring[0], vq.avail_idx) == (0, 1)
    assert (vq.num_free, vq.in_flight, vq.added) == (5, 1, 1)

    chain = vq.pop()
    assert chain == AvailableChain(0, ((0x1000, 4096), (0x8000, 8192), (0x20000, 512)), 12800)
    assert vq.pop() is None
    assert vq.get_used() is None
    vq.push_used(chain.head, 100)
    assert vq.pending_used == 1 and vq.in_device == 0
    assert vq.get_used() == ("report", 100)
    assert (vq.num_free, vq.in_flight, vq.pending_used, vq.used) == (8, 0, 0, 1)
    vq.check_invariants()


def test_device_readable_chains_have_no_write_flag_and_nothing_to_write() -> None:
    vq = VirtQueue(4)
    vq.add([(0, 16), (16, 16)], "out", device_writable=False)
    assert vq.desc_flags[:2] == [VRING_DESC_F_NEXT, 0]
    chain = vq.pop()
    assert chain is not None and chain.writable_bytes == 0
    with pytest.raises(VirtqueueError, match="descriptor 0: 1 bytes written, the chain has 0"):
        vq.push_used(0, 1)
    vq.push_used(0, 0)


def test_collected_chains_go_back_to_the_head_of_the_free_list() -> None:
    vq = VirtQueue(8)
    vq.add([(0, 1), (1, 1)], "a")  # descriptors 0, 1
    vq.add([(2, 1)], "b")  # descriptor 2
    first = vq.pop()
    assert first is not None
    vq.push_used(first.head, 0)
    vq.get_used()
    assert vq.add([(3, 1), (4, 1), (5, 1)], "c") == 0  # reuses 0, 1, then the old free head 3
    assert vq.pop() == AvailableChain(2, ((2, 1),), 1)
    chain = vq.pop()
    assert chain is not None and chain.head == 0
    assert vq.desc_next[0:2] == [1, 3]
    vq.check_invariants()


def test_the_device_may_complete_out_of_order() -> None:
    vq = VirtQueue(4)
    for token in "abc":
        vq.add([(0, 1)], token)
    heads = [chain.head for chain in iter(vq.pop, None)]
    assert heads == [0, 1, 2]
    for head in (2, 0, 1):
        vq.push_used(head, 0)
    assert [vq.get_used() for _ in range(4)] == [("c", 0), ("a", 0), ("b", 0), None]


def test_none_is_a_valid_token() -> None:
    vq = VirtQueue(2)
    cycle(vq, None)
    vq.add([(0, 1)], None)
    assert vq.reset() == [None]


@pytest.mark.parametrize(
    ("buffers", "match"),
    [
        ([], "at least one buffer"),
        ([(0, 1)] * 5, "chain of 5 buffers can never fit a queue of 4"),
        ([(0, 1), (-1, 1)], "buffer 1: address -0x1 does not fit 64 bits"),
        ([(2**64, 1)], "buffer 0: address 0x10000000000000000"),
        ([(0, 2**32)], "buffer 0: length 4294967296 does not fit 32 bits"),
        ([(0, -1)], "length -1"),
    ],
)
def test_bad_chains_are_refused_and_change_nothing(
    buffers: list[tuple[int, int]], match: str
) -> None:
    vq = VirtQueue(4)
    before = state(vq)
    with pytest.raises(InvalidRequest, match=match):
        vq.add(buffers, "x")
    assert state(vq) == before


def test_queue_full_names_the_shortfall_and_leaves_state_unchanged() -> None:
    vq = VirtQueue(4, event_idx=True)
    vq.add([(0, 1), (1, 1)], "a")
    vq.add([(2, 1)], "b")
    chain = vq.pop()
    assert chain is not None
    vq.push_used(chain.head, 0)
    before = state(vq)
    with pytest.raises(QueueFull, match="needs 2, 1 of 4 are free") as caught:
        vq.add([(3, 1), (4, 1)], "c")
    assert (caught.value.needed, caught.value.free, caught.value.size) == (2, 1, 4)
    assert isinstance(caught.value, VirtqueueError)
    assert state(vq) == before
    # The queue goes on as if the refused add never happened.
    assert vq.get_used() == ("a", 0)
    assert vq.add([(3, 1), (4, 1)], "c") == 0
    vq.check_invariants()


def test_a_full_queue_accepts_again_once_the_driver_collects() -> None:
    vq = VirtQueue(2)
    vq.add([(0, 1), (1, 1)], "a")
    with pytest.raises(QueueFull):
        vq.add([(2, 1)], "b")
    chain = vq.pop()
    assert chain is not None
    vq.push_used(chain.head, 0)
    with pytest.raises(QueueFull):  # pushed is not enough: the driver must collect
        vq.add([(2, 1)], "b")
    vq.get_used()
    vq.add([(2, 1)], "b")


# ---------------------------------------------------------------------------------- kicks


def test_without_event_idx_every_kick_prepare_says_kick() -> None:
    vq = VirtQueue(8)
    for n in range(4):
        vq.add([(n, 1)], n)
        assert vq.kick_prepare()
    assert vq.kicks == 4


def test_without_event_idx_the_device_silences_kicks_with_no_notify() -> None:
    vq = VirtQueue(8)
    vq.suppress_notifications(True)
    assert vq.used_flags & VRING_USED_F_NO_NOTIFY
    vq.add([(0, 1)], "a")
    assert not vq.kick_prepare()
    vq.suppress_notifications(False)
    assert vq.used_flags == 0
    vq.add([(1, 1)], "b")
    assert vq.kick_prepare()
    assert vq.kicks == 1


def test_with_event_idx_kicks_only_when_the_device_asked() -> None:
    vq = VirtQueue(8, event_idx=True)
    vq.add([(0, 1)], "a")
    assert vq.kick_prepare()  # avail_event 0 is in [0, 1)
    vq.add([(1, 1)], "b")
    assert not vq.kick_prepare()  # the device has not caught up with the first kick yet
    assert vq.pop() is not None
    assert vq.avail_event == 1
    vq.add([(2, 1)], "c")
    assert not vq.kick_prepare()  # the device still has "b" and "c" to pop: it will see them
    assert vq.pop() is not None and vq.pop() is not None
    assert vq.avail_event == 3
    vq.add([(3, 1)], "d")
    vq.add([(4, 1)], "e")
    assert vq.kick_prepare()  # one kick for the batch
    assert not vq.kick_prepare()  # nothing new since
    assert vq.kicks == 2


def test_with_event_idx_no_notify_is_ignored_and_unsuppressing_rearms() -> None:
    vq = VirtQueue(8, event_idx=True)
    vq.used_flags = VRING_USED_F_NO_NOTIFY  # meaningless with event_idx: Linux ignores it
    vq.add([(0, 1)], "a")
    vq.add([(1, 1)], "b")
    assert vq.kick_prepare()
    assert vq.pop() is not None  # avail_event -> 1, "b" still waiting
    vq.suppress_notifications(True)
    assert vq.avail_event == 1
    vq.suppress_notifications(False)  # stop polling: kick me on the next add
    assert vq.avail_event == 2 and vq.pending_available == 1
    vq.add([(2, 1)], "c")
    assert vq.kick_prepare()


def test_kick_prepare_after_2_16_unchecked_adds_kicks_regardless() -> None:
    vq = VirtQueue(1, event_idx=True)
    for _ in range(0xFFFF):
        cycle(vq, "t")
    vq.add([(0, 1)], "last")  # the device polled everything but this and waits for a kick
    assert vq.avail_event == (vq.avail_idx - 1) & 0xFFFF
    assert vq.kick_prepare()


# ---------------------------------------------------------------------------------- interrupts


def test_without_event_idx_every_push_interrupts_unless_the_driver_disabled() -> None:
    vq = VirtQueue(8)
    for n in range(3):
        vq.add([(n, 1)], n)
    chains = list(iter(vq.pop, None))
    vq.push_used(chains[0].head, 0)
    assert vq.interrupt_needed()
    vq.push_used(chains[1].head, 0)
    assert vq.interrupt_needed()
    vq.disable_interrupts()
    assert vq.avail_flags & VRING_AVAIL_F_NO_INTERRUPT
    vq.push_used(chains[2].head, 0)
    assert not vq.interrupt_needed()
    assert not vq.enable_interrupts()  # three entries wait: poll, don't sleep
    assert vq.avail_flags == 0
    assert vq.interrupt_needed()
    assert vq.interrupts == 3
    for _ in range(3):
        vq.get_used()
    assert vq.enable_interrupts()


def test_with_event_idx_one_interrupt_per_batch_the_driver_caught_up_with() -> None:
    vq = VirtQueue(8, event_idx=True)
    for n in range(6):
        vq.add([(n, 1)], n)
    chains = list(iter(vq.pop, None))
    vq.push_used(chains[0].head, 0)
    assert vq.interrupt_needed()  # used_event 0 published
    vq.push_used(chains[1].head, 0)
    assert not vq.interrupt_needed()  # the driver has not caught up yet
    assert vq.get_used() is not None and vq.get_used() is not None
    assert vq.used_event == 2
    vq.push_used(chains[2].head, 0)
    vq.push_used(chains[3].head, 0)
    assert vq.interrupt_needed()
    assert vq.interrupts == 2


def test_with_event_idx_disabled_interrupts_can_still_fire_once() -> None:
    vq = VirtQueue(8, event_idx=True)
    for n in range(5):
        vq.add([(n, 1)], n)
    chains = list(iter(vq.pop, None))
    vq.push_used(chains[0].head, 0)
    assert vq.get_used() == (0, 0)  # used_event -> 1
    vq.disable_interrupts()
    assert vq.avail_flags == 0  # with event_idx Linux 5.10 writes no flag
    vq.push_used(chains[1].head, 0)
    assert vq.interrupt_needed()  # the interrupt armed before disabling
    assert vq.get_used() == (1, 0)
    assert vq.used_event == 1  # not advanced while disabled
    vq.push_used(chains[2].head, 0)
    assert not vq.interrupt_needed()
    vq.push_used(chains[3].head, 0)
    assert not vq.interrupt_needed()
    assert not vq.enable_interrupts()  # two wait
    assert vq.used_event == 2
    vq.get_used()
    vq.get_used()
    assert vq.enable_interrupts()
    vq.push_used(chains[4].head, 0)
    assert vq.interrupt_needed()


def test_interrupt_needed_after_2_16_unchecked_pushes_interrupts_regardless() -> None:
    vq = VirtQueue(1, event_idx=True)
    for _ in range(0xFFFF):
        cycle(vq, "t")
    vq.add([(0, 1)], "last")
    chain = vq.pop()
    assert chain is not None
    vq.push_used(chain.head, 0)  # the driver waits for an interrupt for exactly this one
    assert vq.used_event == (vq.used_idx - 1) & 0xFFFF
    assert vq.interrupt_needed()


# ---------------------------------------------------------------------------------- wrap


def test_indices_wrap_at_2_16_with_suppression_intact() -> None:
    vq = VirtQueue(4, event_idx=True, start_index=65533)
    seen = []
    for n in range(6):
        vq.add([(n, 4096)], n)
        seen.append(vq.kick_prepare())
        chain = vq.pop()
        assert chain is not None
        vq.push_used(chain.head, n)
        assert vq.interrupt_needed()
        assert vq.get_used() == (n, n)
    assert seen == [True] * 6
    assert (vq.avail_idx, vq.used_idx, vq.avail_event, vq.used_event) == (3, 3, 3, 3)
    # Slots follow idx % size across the wrap: 65533 % 4 == 1, then 2, 3, 0, 1, 2.
    assert vq.used_ring_len == [3, 4, 5, 2]


# ---------------------------------------------------------------------------------- corruption


def loaded(size: int = 8) -> VirtQueue:
    """A queue holding one published chain 0 -> 1 -> 2, device-writable."""
    vq = VirtQueue(size)
    vq.add([(0, 10), (10, 10), (20, 10)], "chain")
    return vq


def corrupt_and_pop(vq: VirtQueue, match: str) -> None:
    before = vq.pending_available, vq.in_device
    with pytest.raises(VirtqueueError, match=match):
        vq.pop()
    assert (vq.pending_available, vq.in_device) == before  # not consumed: fails again
    with pytest.raises(VirtqueueError, match=match):
        vq.pop()


def test_a_looping_chain_is_detected() -> None:
    vq = loaded()
    vq.desc_flags[2] |= VRING_DESC_F_NEXT
    vq.desc_next[2] = 1
    corrupt_and_pop(vq, "chain at descriptor 0 loops back to descriptor 1")


def test_a_chain_that_loops_onto_itself_is_detected() -> None:
    vq = loaded(size=1 << 15)
    vq.desc_next[1] = 1
    corrupt_and_pop(vq, "chain at descriptor 0 loops back to descriptor 1")


def test_a_next_out_of_range_is_detected() -> None:
    vq = loaded()
    vq.desc_next[1] = 8
    corrupt_and_pop(vq, "descriptor 1 in the chain at 0 links to 8, outside 0..7")


def test_a_head_out_of_range_is_detected() -> None:
    vq = loaded()
    vq.avail_ring[0] = 9
    corrupt_and_pop(vq, "avail ring slot 0 names descriptor 9, outside 0..7")


def test_an_avail_idx_too_far_ahead_is_detected() -> None:
    vq = loaded()
    vq.avail_idx = 9
    corrupt_and_pop(vq, "moved avail idx from 0 to 9: 9 chains, more than the 8")


def test_an_indirect_descriptor_is_refused() -> None:
    vq = loaded()
    vq.desc_flags[1] |= VRING_DESC_F_INDIRECT
    corrupt_and_pop(vq, "descriptor 1 in the chain at 0 is indirect")


def test_a_readable_descriptor_after_a_writable_one_is_refused() -> None:
    vq = loaded()
    vq.desc_flags[1] &= ~VRING_DESC_F_WRITE
    corrupt_and_pop(vq, "descriptor 1 in the chain at 0 is device-readable after")


def test_a_head_republished_while_the_device_holds_it_is_detected() -> None:
    vq = loaded()
    assert vq.pop() is not None
    vq.avail_ring[1] = 0
    vq.avail_idx = 2
    corrupt_and_pop(vq, "slot 1 names descriptor 0, whose chain the device already holds")


def test_a_used_entry_naming_no_chain_is_detected_by_the_driver() -> None:
    vq = loaded()
    chain = vq.pop()
    assert chain is not None
    vq.push_used(chain.head, 0)
    vq.used_ring_id[0] = 1  # inside the chain, but not its head
    with pytest.raises(VirtqueueError, match="slot 0 names descriptor 1, which heads no"):
        vq.get_used()
    vq.used_ring_id[0] = 40
    with pytest.raises(VirtqueueError, match=r"slot 0 names descriptor 40, outside 0\.\.7"):
        vq.get_used()


@pytest.mark.parametrize(
    ("head", "written", "match"),
    [
        (5, 0, "descriptor 5: the device holds no chain"),  # never popped
        (8, 0, "descriptor 8: outside 0..7"),
        (0, 31, "descriptor 0: 31 bytes written, the chain has 30"),
        (0, -1, "descriptor 0: -1 bytes written"),
    ],
)
def test_bad_pushes_are_refused_and_change_nothing(head: int, written: int, match: str) -> None:
    vq = loaded()
    assert vq.pop() is not None
    before = state(vq)
    with pytest.raises(VirtqueueError, match=match):
        vq.push_used(head, written)
    assert state(vq) == before


def test_pushing_a_chain_twice_is_refused() -> None:
    vq = loaded()
    chain = vq.pop()
    assert chain is not None
    vq.push_used(chain.head, 30)
    with pytest.raises(VirtqueueError, match="descriptor 0: the device holds no chain"):
        vq.push_used(chain.head, 0)
    assert vq.pending_used == 1


def test_check_invariants_catches_a_lost_descriptor() -> None:
    vq = loaded()
    vq.desc_next[2] = 0  # the free list now starts at 3... and the chain's end points home
    vq.check_invariants()  # the link after the last chain descriptor is not part of the chain
    vq.desc_next[3] = 0
    with pytest.raises(VirtqueueError, match="descriptor 0 is in the chain at 0 and in the free"):
        vq.check_invariants()


# ---------------------------------------------------------------------------------- reset


def test_reset_returns_every_outstanding_token_oldest_first() -> None:
    vq = VirtQueue(8, event_idx=True)
    for token in "abcdef":
        vq.add([(0, 1)], token)
    a, b, c, d = (vq.pop() for _ in range(4))
    assert a and b and c and d
    vq.push_used(c.head, 0)
    vq.push_used(a.head, 0)
    assert vq.get_used() == ("c", 0)
    vq.push_used(d.head, 0)
    assert vq.add([(0, 1)], "g") == c.head  # newest, in an old slot: not head order
    # "a", "d" pushed, uncollected; "b" held by the device; "e", "f", "g" never popped.
    lists = [vq.desc_next, vq.avail_ring, vq.used_ring_id, vq.desc_addr]
    assert vq.reset() == ["a", "b", "d", "e", "f", "g"]
    after = [vq.desc_next, vq.avail_ring, vq.used_ring_id, vq.desc_addr]
    assert all(x is y for x, y in zip(lists, after, strict=True))  # refilled, not reallocated
    assert (vq.num_free, vq.in_flight, vq.pending_used, vq.pending_available, vq.in_device) == (
        8,
        0,
        0,
        0,
        0,
    )
    assert (vq.added, vq.used) == (7, 1)  # totals survive
    assert vq.reset() == []
    assert state(vq) == state(VirtQueue(8, event_idx=True)) | {"added": 7, "used": 1}


def test_reset_returns_to_the_start_index() -> None:
    fresh = VirtQueue(4, event_idx=True, start_index=65534)
    vq = VirtQueue(4, event_idx=True, start_index=65534)
    for n in range(5):
        cycle(vq, n)
    vq.add([(0, 1)], "left")
    assert vq.kick_prepare()
    assert vq.reset() == ["left"]
    expected = state(fresh) | {"added": 6, "used": 5, "kicks": 1}
    assert state(vq) == expected
    cycle(vq, "again")
    vq.check_invariants()


# ---------------------------------------------------------------------------------- model check


class VirtQueueMachine(RuleBasedStateMachine):
    """Random driver and device steps against a model of FIFO publication and free completion.

    Notification answers are checked against unbounded counters: with event_idx, notify iff
    the other side's event index, as an absolute count, lies in [old, new); the queue does it
    with 16-bit modular arithmetic, so starting near 2**16 checks the wrap.
    """

    vq: VirtQueue

    @initialize(
        size=st.sampled_from([1, 2, 4, 8, 16]),
        event_idx=st.booleans(),
        start=st.sampled_from([0, 65530, 65535]) | st.integers(0, 0xFFFF),
    )
    def setup(self, size: int, event_idx: bool, start: int) -> None:
        self.vq = VirtQueue(size, event_idx=event_idx, start_index=start)
        self.size, self.event_idx, self.start = size, event_idx, start
        self.next_token = 0
        self.issued: set[int] = set()
        self.returned: list[int] = []
        self.collected_total = 0
        self._clear_model()

    def _clear_model(self) -> None:
        self.chains: dict[int, tuple[int, tuple[tuple[int, int], ...], bool]] = {}
        self.order: list[int] = []  # outstanding tokens, oldest first
        self.avail: deque[int] = deque()  # heads published, not popped
        self.held: list[int] = []  # heads popped, not pushed
        self.used_q: deque[tuple[int, int]] = deque()  # (head, written) pushed, not collected
        self.writable: dict[int, int] = {}
        # Absolute counts since the (re)start; the ring's indices are these plus start, mod 2**16.
        self.n_added = self.n_popped = self.n_pushed = self.n_collected = 0
        self.kicked_at = self.signalled_at = 0
        self.avail_event = self.used_event = 0
        self.interrupts_off = False
        self.no_notify = False

    def _give_back(self, token: int) -> None:
        assert token in self.issued and token not in self.returned, f"token {token} twice"
        self.returned.append(token)
        self.order.remove(token)

    # -- driver

    @rule(
        lengths=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4),
        addr=st.integers(0, 2**52),
        writable=st.booleans(),
        oversize=st.booleans(),
    )
    def add(self, lengths: list[int], addr: int, writable: bool, oversize: bool) -> None:
        vq = self.vq
        if not oversize:  # else small queues would refuse most chains as too long
            lengths = lengths[: self.size]
        buffers = tuple((addr + (n << 12), length) for n, length in enumerate(lengths))
        token = self.next_token
        self.next_token += 1
        free = self.size - sum(len(c[1]) for c in self.chains.values())
        if len(buffers) > self.size:
            with pytest.raises(InvalidRequest, match="can never fit"):
                vq.add(buffers, token, device_writable=writable)
            return
        if len(buffers) > free:
            before = state(vq)
            with pytest.raises(QueueFull) as caught:
                vq.add(buffers, token, device_writable=writable)
            assert (caught.value.needed, caught.value.free) == (len(buffers), free)
            assert state(vq) == before
            return
        head = vq.add(buffers, token, device_writable=writable)
        assert head not in self.chains
        self.chains[head] = (token, buffers, writable)
        self.order.append(token)
        self.issued.add(token)
        self.avail.append(head)
        self.n_added += 1

    @rule()
    def kick_prepare(self) -> None:
        old, new = self.kicked_at, self.n_added
        self.kicked_at = new
        expected = old <= self.avail_event < new if self.event_idx else not self.no_notify
        assert self.vq.kick_prepare() is expected

    @rule(count=st.integers(1, 4))
    def get_used(self, count: int) -> None:
        for _ in range(count):
            got = self.vq.get_used()
            if not self.used_q:
                assert got is None
                return
            head, written = self.used_q.popleft()
            token = self.chains.pop(head)[0]
            assert got == (token, written)
            self._give_back(token)
            self.n_collected += 1
            self.collected_total += 1
            if not self.interrupts_off:
                self.used_event = self.n_collected

    @rule()
    def disable_interrupts(self) -> None:
        self.vq.disable_interrupts()
        self.interrupts_off = True

    @rule()
    def enable_interrupts(self) -> None:
        assert self.vq.enable_interrupts() is (not self.used_q)
        self.interrupts_off = False
        self.used_event = self.n_collected

    # -- device

    @rule(count=st.integers(1, 4))
    def pop(self, count: int) -> None:
        for _ in range(count):
            chain = self.vq.pop()
            if not self.avail:
                assert chain is None
                return
            head = self.avail.popleft()
            _, buffers, writable = self.chains[head]
            total = sum(n for _, n in buffers) if writable else 0
            assert chain == AvailableChain(head, buffers, total)
            self.held.append(head)
            self.writable[head] = total
            self.n_popped += 1
            if self.event_idx:
                self.avail_event = self.n_popped

    @precondition(lambda self: self.held)
    @rule(picks=st.lists(st.integers(0, 2**16), min_size=1, max_size=4), fraction=st.floats(0, 1))
    def push_used(self, picks: list[int], fraction: float) -> None:
        """Complete some held chains, in any order (the device need not finish in FIFO order)."""
        for pick in picks:
            if not self.held:
                return
            head = self.held.pop(pick % len(self.held))
            written = int(self.writable[head] * fraction)
            self.vq.push_used(head, written)
            self.used_q.append((head, written))
            self.n_pushed += 1

    @rule(head=st.integers(0, 15), written=st.integers(0, 4), now=st.integers(0, 3))
    def push_used_not_held(self, head: int, written: int, now: int) -> None:
        if now or head in self.held:  # one time in four: the state copy is slow
            return
        before = state(self.vq)
        with pytest.raises(VirtqueueError, match=rf"push_used of descriptor {head}\b"):
            self.vq.push_used(head, written)
        assert state(self.vq) == before

    @rule()
    def interrupt_needed(self) -> None:
        old, new = self.signalled_at, self.n_pushed
        self.signalled_at = new
        expected = old <= self.used_event < new if self.event_idx else not self.interrupts_off
        assert self.vq.interrupt_needed() is expected

    @rule(adds=st.integers(0, 6), reverse=st.booleans(), notify=st.booleans())
    def round_trip(self, adds: int, reverse: bool, notify: bool) -> None:
        """A burst of adds, then the device catches up and the driver collects everything.

        It moves the indices along quickly (to the 16-bit wrap), and even in runs where
        Hypothesis's swarm testing switched the single-step rules off.
        """
        for n in range(adds):
            self.add(lengths=[4096], addr=n << 12, writable=True, oversize=False)
        if notify:
            self.kick_prepare()
        self.pop(count=self.size)
        picks = [len(self.held) - 1 if reverse else 0] * len(self.held)
        if picks:
            self.push_used(picks=picks, fraction=1.0)
        if notify:
            self.interrupt_needed()
        self.get_used(count=self.size)
        assert self.vq.pending_used == self.vq.pending_available == self.vq.in_flight == 0

    @rule(flag=st.booleans())
    def suppress_notifications(self, flag: bool) -> None:
        self.vq.suppress_notifications(flag)
        if self.event_idx:
            if not flag:
                self.avail_event = self.n_added
        else:
            self.no_notify = flag

    # -- both

    @rule(now=st.integers(0, 3))
    def reset(self, now: int) -> None:
        if now:  # one time in four, or the queue rarely fills
            return
        expected = list(self.order)
        assert self.vq.reset() == expected
        for token in expected:
            self._give_back(token)
        self._clear_model()

    # -- after every step

    @invariant()
    def books_balance(self) -> None:
        if not hasattr(self, "vq"):
            return
        vq = self.vq
        vq.check_invariants()
        assert vq.num_free + sum(len(c[1]) for c in self.chains.values()) == self.size
        assert vq.in_flight == len(self.chains) == len(self.order)
        assert vq.pending_available == len(self.avail)
        assert vq.in_device == len(self.held)
        assert vq.pending_used == len(self.used_q)
        assert vq.avail_idx == (self.start + self.n_added) & 0xFFFF
        assert vq.used_idx == (self.start + self.n_pushed) & 0xFFFF
        # What each side asked of the other, as it sits in the shared memory.
        assert vq.used_event == (self.start + self.used_event) & 0xFFFF
        if self.event_idx:
            assert vq.avail_event == (self.start + self.avail_event) & 0xFFFF
            assert vq.avail_flags == vq.used_flags == 0
        else:
            assert vq.avail_event == self.start  # never written without event_idx
            assert vq.avail_flags == (VRING_AVAIL_F_NO_INTERRUPT if self.interrupts_off else 0)
            assert vq.used_flags == (VRING_USED_F_NO_NOTIFY if self.no_notify else 0)
        assert vq.added == len(self.issued)
        assert vq.used == self.collected_total

    def teardown(self) -> None:
        if not hasattr(self, "vq"):
            return
        self.reset(now=0)
        assert sorted(self.returned) == sorted(self.issued)  # each exactly once (_give_back)


VirtQueueMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=60, deadline=None
)
TestVirtQueueMachine = VirtQueueMachine.TestCase
