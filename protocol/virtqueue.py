"""A pure model of one virtio 1.x split virtqueue (virtio spec 2.7), both sides of the ring.

Like h11 for HTTP, this is the protocol without the I/O: no trio, no clock, no notification
delivery.  One `VirtQueue` object is the queue's shared memory, and both the driver (the
guest's ``drivers/virtio/virtio_ring.c``) and the device (QEMU's ``hw/virtio/virtio.c``) are
methods on it.  The caller moves the data: after ``add`` it asks ``kick_prepare`` whether the
device must be notified and sends that notification itself; after ``push_used`` it asks
``interrupt_needed`` whether to interrupt the guest.  A notification is where a real guest
pays a VM exit, so counting them honestly is the point of modelling the suppression rules.

Layout, as in the spec:

* the descriptor table ``desc_addr`` / ``desc_len`` / ``desc_flags`` / ``desc_next``;
* the available ring ``avail_flags`` / ``avail_idx`` / ``avail_ring`` / ``used_event``,
  written by the driver;
* the used ring ``used_flags`` / ``used_idx`` / ``used_ring_id`` / ``used_ring_len`` /
  ``avail_event``, written by the device.

These attributes are public because they are the memory both sides share: reading them is how
a test sees the ring, and writing them directly models a buggy or hostile peer (the device
side validates what it reads, as QEMU does).  Every list is allocated once, at construction;
``reset`` refills the same lists.  Ring indices are free-running 16-bit counters and a ring
slot is ``idx % size`` (``idx & (size - 1)``: the size is a power of two dividing 2**16).

Not modelled: indirect descriptors (``VIRTIO_RING_F_INDIRECT_DESC``), the packed ring, memory
barriers (every call is atomic here), and ``VIRTIO_F_NOTIFY_ON_EMPTY``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import attrs

__all__ = [
    "MAX_QUEUE_SIZE",
    "VRING_AVAIL_F_NO_INTERRUPT",
    "VRING_DESC_F_INDIRECT",
    "VRING_DESC_F_NEXT",
    "VRING_DESC_F_WRITE",
    "VRING_USED_F_NO_NOTIFY",
    "AvailableChain",
    "InvalidRequest",
    "QueueFull",
    "VirtQueue",
    "VirtqueueError",
    "vring_need_event",
]

VRING_DESC_F_NEXT: Final = 1
"""The descriptor continues in ``desc_next``."""
VRING_DESC_F_WRITE: Final = 2
"""The buffer is device-writable (``virtqueue_add_inbuf``); otherwise device-readable."""
VRING_DESC_F_INDIRECT: Final = 4
"""The buffer holds a table of descriptors; never set here (the feature is not offered)."""
VRING_USED_F_NO_NOTIFY: Final = 1
"""Device to driver, without event_idx: do not kick me, I am polling."""
VRING_AVAIL_F_NO_INTERRUPT: Final = 1
"""Driver to device, without event_idx: do not interrupt me."""
MAX_QUEUE_SIZE: Final = 32768
"""The largest split queue the spec allows (Queue Size is 16 bits and a power of two)."""

_IDX_MASK: Final = 0xFFFF
_ADDR_LIMIT: Final = 1 << 64  # desc.addr is le64
_LEN_LIMIT: Final = 1 << 32  # desc.len and used_elem.len are le32


class _Empty:
    """The type of `_EMPTY`: a token slot with no chain (tokens themselves may be None)."""

    def __repr__(self) -> str:
        return "<no token>"

    def __reduce__(self) -> str:
        return "_EMPTY"  # copies and pickles stay the one sentinel that ``is`` tests compare


_EMPTY: Final = _Empty()


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """Whether moving an index from ``old_idx`` to ``new_idx`` crossed ``event_idx``.

    This is ``vring_need_event`` from ``include/uapi/linux/virtio_ring.h``: the other side asked
    to be notified once the entry at ``event_idx`` is published, and that entry is among those
    published since the last notification check iff ``old_idx <= event_idx < new_idx`` in
    16-bit modular arithmetic.
    """
    return ((new_idx - event_idx - 1) & _IDX_MASK) < ((new_idx - old_idx) & _IDX_MASK)


class VirtqueueError(Exception):
    """Base of every error this module raises: a request the ring cannot take, or one side
    broke the ring's contract."""


class InvalidRequest(VirtqueueError, ValueError):
    """A request the ring can never take, whatever its state: a size, an index or a chain
    outside what the spec allows. The caller's mistake, so also a ``ValueError``."""


class QueueFull(VirtqueueError):
    """``add`` needed more free descriptors than there are (Linux's ``-ENOSPC``).

    Nothing was changed.  The caller must wait for ``get_used`` to free descriptors and try
    again, or give the buffers back: the queue never drops a chain silently.
    """

    def __init__(self, needed: int, free: int, size: int) -> None:
        super().__init__(
            f"virtqueue full: a chain of {needed} descriptors needs {needed}, "
            f"{free} of {size} are free"
        )
        self.needed = needed
        self.free = free
        self.size = size


@attrs.frozen(slots=True)
class AvailableChain:
    """One descriptor chain as the device reads it from the available ring.

    ``writable_bytes`` is the total length of the device-writable descriptors: the most the
    device may report as written in ``push_used`` (spec 2.7.8: the device must not write more).
    """

    head: int
    buffers: tuple[tuple[int, int], ...]
    writable_bytes: int = 0


class VirtQueue:
    """The memory of one split virtqueue, with the driver's and the device's operations on it.

    Driver side (virtio_ring.c): ``add``, ``kick_prepare``, ``get_used``,
    ``disable_interrupts``, ``enable_interrupts``.  Device side (QEMU): ``pop``, ``push_used``,
    ``interrupt_needed``, ``suppress_notifications``.  Both: ``reset``.

    ``start_index`` starts every ring index there instead of at 0 (as if that many chains had
    already gone round), so tests can reach the 16-bit wrap in a few steps.
    """

    def __init__(self, size: int, *, event_idx: bool = False, start_index: int = 0) -> None:
        if not 1 <= size <= MAX_QUEUE_SIZE or size & (size - 1):
            raise InvalidRequest(f"virtqueue size must be a power of two in 1..32768, got {size}")
        if not 0 <= start_index <= _IDX_MASK:
            raise InvalidRequest(
                f"start_index must be a 16-bit ring index 0..65535, got {start_index}"
            )
        self._size = size
        self._mask = size - 1
        self._event_idx = event_idx
        self._start_index = start_index

        # ---- shared memory: the descriptor table and the two rings
        self.desc_addr = [0] * size
        self.desc_len = [0] * size
        self.desc_flags = [0] * size
        self.desc_next = [0] * size
        self.avail_flags = 0
        self.avail_idx = start_index
        self.avail_ring = [0] * size
        self.used_event = start_index
        self.used_flags = 0
        self.used_idx = start_index
        self.used_ring_id = [0] * size
        self.used_ring_len = [0] * size
        self.avail_event = start_index

        # ---- driver-private (struct vring_virtqueue)
        self._free_head = 0
        self._num_free = size
        self._avail_idx_shadow = start_index
        self._avail_flags_shadow = 0
        self._num_added = 0  # chains added since the last kick_prepare
        self._last_used_idx = start_index
        self._tokens: list[object] = [_EMPTY] * size  # desc_state[head].data
        self._add_order = [0] * size  # when each outstanding head was added, for reset's order
        self._in_flight = 0

        # ---- device-private (QEMU's VirtQueue)
        self._last_avail_idx = start_index
        self._signalled_used = start_index
        self._num_pushed = 0  # entries pushed since the last interrupt_needed
        self._held = [False] * size  # popped and not yet pushed, by head
        self._writable = [0] * size  # writable bytes of each held chain
        self._seen = [0] * size  # loop detection: the pop that last visited each descriptor
        self._pop_serial = 0
        self._in_device = 0

        # ---- totals for the simulation; reset keeps them
        self.added = 0
        """Chains the driver has added."""
        self.used = 0
        """Chains the driver has collected with ``get_used``."""
        self.kicks = 0
        """Times ``kick_prepare`` said the device must be notified."""
        self.interrupts = 0
        """Times ``interrupt_needed`` said the driver must be interrupted."""

        self._initialise()

    def _initialise(self) -> None:
        """The state of a freshly set-up queue, written into the lists already allocated.

        Memory starts zeroed and every descriptor is on the free list in order, chained through
        ``next`` (``__vring_new_virtqueue``).  Interrupts start enabled: the reporting queue has
        a callback.
        """
        start = self._start_index
        for i in range(self._size):
            self.desc_addr[i] = 0
            self.desc_len[i] = 0
            self.desc_flags[i] = 0
            self.desc_next[i] = i + 1 if i + 1 < self._size else 0
            self.avail_ring[i] = 0
            self.used_ring_id[i] = 0
            self.used_ring_len[i] = 0
            self._tokens[i] = _EMPTY
            self._add_order[i] = 0
            self._held[i] = False
            self._writable[i] = 0
            self._seen[i] = 0
        self.avail_flags = 0
        self.avail_idx = start
        self.used_event = start
        self.used_flags = 0
        self.used_idx = start
        self.avail_event = start
        self._free_head = 0
        self._num_free = self._size
        self._avail_idx_shadow = start
        self._avail_flags_shadow = 0
        self._num_added = 0
        self._last_used_idx = start
        self._in_flight = 0
        self._last_avail_idx = start
        self._signalled_used = start
        self._num_pushed = 0
        self._pop_serial = 0
        self._in_device = 0

    def __repr__(self) -> str:
        return (
            f"<VirtQueue size={self._size} event_idx={self._event_idx} free={self._num_free} "
            f"avail_idx={self.avail_idx} used_idx={self.used_idx}>"
        )

    # ------------------------------------------------------------------ configuration and counts

    @property
    def size(self) -> int:
        return self._size

    @property
    def event_idx(self) -> bool:
        """Whether ``VIRTIO_RING_F_EVENT_IDX`` was negotiated (suppression by index, not flag)."""
        return self._event_idx

    @property
    def num_free(self) -> int:
        """Descriptors on the driver's free list."""
        return self._num_free

    @property
    def in_flight(self) -> int:
        """Chains the driver added and has not collected yet (wherever they are in the ring)."""
        return self._in_flight

    @property
    def pending_used(self) -> int:
        """Used entries the device published that the driver has not collected yet."""
        return (self.used_idx - self._last_used_idx) & _IDX_MASK

    @property
    def pending_available(self) -> int:
        """Chains the driver published that the device has not popped yet."""
        return (self.avail_idx - self._last_avail_idx) & _IDX_MASK

    @property
    def in_device(self) -> int:
        """Chains the device popped and has not pushed to the used ring yet."""
        return self._in_device

    # ------------------------------------------------------------------ driver side

    def add(
        self, buffers: Sequence[tuple[int, int]], token: object, *, device_writable: bool = True
    ) -> int:
        """Publish one chain of ``(addr, length)`` buffers; return its head descriptor.

        ``virtqueue_add_split`` without indirect descriptors: the chain is taken from the head
        of the free list (whose ``next`` links already run along it), each descriptor but the
        last gets ``NEXT``, all get ``WRITE`` when ``device_writable`` (free page reports go in
        with ``virtqueue_add_inbuf``), and the head goes into the next available ring slot.
        ``token`` is handed back by ``get_used`` (or ``reset``) when the device is done.

        Raises `QueueFull`, changing nothing, when fewer than ``len(buffers)`` descriptors are
        free; `InvalidRequest` for an empty chain, one longer than the queue (it could never
        fit, so waiting would not help) or a buffer that does not fit the descriptor's fields.
        """
        needed = len(buffers)
        if needed == 0:
            raise InvalidRequest("a chain needs at least one buffer, got none")
        if needed > self._size:
            raise InvalidRequest(
                f"a chain of {needed} buffers can never fit a queue of {self._size} descriptors "
                "(indirect descriptors are not modelled)"
            )
        for n, (addr, length) in enumerate(buffers):
            if not 0 <= addr < _ADDR_LIMIT:
                raise InvalidRequest(f"buffer {n}: address {addr:#x} does not fit 64 bits")
            if not 0 <= length < _LEN_LIMIT:
                raise InvalidRequest(f"buffer {n}: length {length} does not fit 32 bits")
        if needed > self._num_free:
            raise QueueFull(needed, self._num_free, self._size)

        flags = VRING_DESC_F_NEXT | (VRING_DESC_F_WRITE if device_writable else 0)
        head = i = prev = self._free_head
        for addr, length in buffers:
            self.desc_addr[i] = addr
            self.desc_len[i] = length
            self.desc_flags[i] = flags
            prev = i
            i = self.desc_next[i]
        self.desc_flags[prev] = flags & ~VRING_DESC_F_NEXT
        self._free_head = i
        self._num_free -= needed

        self._tokens[head] = token
        self._add_order[head] = self.added
        self._in_flight += 1
        self.added += 1

        self.avail_ring[self._avail_idx_shadow & self._mask] = head
        self._avail_idx_shadow = (self._avail_idx_shadow + 1) & _IDX_MASK
        self.avail_idx = self._avail_idx_shadow
        self._num_added += 1
        return head

    def kick_prepare(self) -> bool:
        """Whether the device must be notified of the chains added since the last call.

        ``virtqueue_kick_prepare_split``: with event_idx, iff the device's ``avail_event`` lies
        among the indices published since then; without, iff the device has not set
        ``VRING_USED_F_NO_NOTIFY``; in that mode the answer comes from the flag alone, even when
        nothing was added, as in Linux.  Linux forces a kick from inside ``add`` before 2**16
        chains accumulate unchecked, because a 16-bit distance cannot span more; a caller that
        let that many pile up gets True here instead.
        """
        new = self._avail_idx_shadow
        old = (new - self._num_added) & _IDX_MASK
        overflowed = self._num_added > _IDX_MASK
        self._num_added = 0
        if overflowed:
            needed = True
        elif self._event_idx:
            needed = vring_need_event(self.avail_event, new, old)
        else:
            needed = not self.used_flags & VRING_USED_F_NO_NOTIFY
        if needed:
            self.kicks += 1
        return needed

    def get_used(self) -> tuple[object, int] | None:
        """The next chain the device is done with, as ``(token, written)``; None if none.

        ``virtqueue_get_buf``: the chain's descriptors go back to the head of the free list
        (``detach_buf_split``).  While interrupts are enabled the driver then sets
        ``used_event`` to its new ``last_used_idx``, asking (with event_idx) to be interrupted
        when the device publishes the very next entry.
        """
        last = self._last_used_idx
        if last == self.used_idx:
            return None
        slot = last & self._mask
        head = self.used_ring_id[slot]
        written = self.used_ring_len[slot]
        if not 0 <= head < self._size:
            raise VirtqueueError(
                f"used ring slot {slot} names descriptor {head}, outside 0..{self._size - 1}"
            )
        token = self._tokens[head]
        if token is _EMPTY:
            raise VirtqueueError(
                f"used ring slot {slot} names descriptor {head}, which heads no outstanding chain"
            )
        self._detach(head)
        self._last_used_idx = (last + 1) & _IDX_MASK
        if not self._avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT:
            self.used_event = self._last_used_idx
        self.used += 1
        return token, written

    def _detach(self, head: int) -> None:
        """Put the chain at ``head`` back on the free list and forget its token."""
        i = head
        count = 1
        while self.desc_flags[i] & VRING_DESC_F_NEXT:
            i = self.desc_next[i]
            count += 1
            if count > self._size or not 0 <= i < self._size:
                raise VirtqueueError(f"the chain at descriptor {head} no longer ends: rewritten?")
        self.desc_next[i] = self._free_head
        self._free_head = head
        self._num_free += count
        self._tokens[head] = _EMPTY
        self._in_flight -= 1

    def disable_interrupts(self) -> None:
        """``virtqueue_disable_cb``: ask the device not to interrupt (the driver will poll).

        Without event_idx this sets ``VRING_AVAIL_F_NO_INTERRUPT``.  With event_idx Linux
        (5.10) writes nothing: it only stops advancing ``used_event``, so the device may still
        interrupt once, when it reaches the entry the driver last asked about.
        """
        if not self._avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT:
            self._avail_flags_shadow |= VRING_AVAIL_F_NO_INTERRUPT
            if not self._event_idx:
                self.avail_flags = self._avail_flags_shadow

    def enable_interrupts(self) -> bool:
        """``virtqueue_enable_cb``: re-arm interrupts; False if used entries already wait.

        On False the driver must call ``get_used`` again rather than sleep: the device may
        have published them before it could see the re-armed ``used_event`` and so will not
        interrupt for them.
        """
        if self._avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT:
            self._avail_flags_shadow &= ~VRING_AVAIL_F_NO_INTERRUPT
            if not self._event_idx:
                self.avail_flags = self._avail_flags_shadow
        self.used_event = self._last_used_idx
        return self._last_used_idx == self.used_idx

    # ------------------------------------------------------------------ device side

    def pop(self) -> AvailableChain | None:
        """The next chain the driver published, following ``NEXT``; None if none.

        ``virtqueue_pop``: with event_idx the device then sets ``avail_event`` to its new
        ``last_avail_idx``, asking to be kicked when the driver publishes beyond what it has
        consumed.  A corrupt ring (an index too far ahead, a head or ``next`` out of range, a
        chain that loops, an indirect descriptor, a readable descriptor after a writable one,
        a head the device already holds) raises `VirtqueueError` naming the descriptor, and
        leaves the queue as it was.  A chain longer than the queue must revisit a descriptor,
        so the loop check also bounds the length.
        """
        avail = self.avail_idx
        last = self._last_avail_idx
        if avail == last:
            return None
        ahead = (avail - last) & _IDX_MASK
        if ahead > self._size:
            raise VirtqueueError(
                f"the driver moved avail idx from {last} to {avail}: {ahead} chains, "
                f"more than the {self._size} the queue holds"
            )
        slot = last & self._mask
        head = self.avail_ring[slot]
        if not 0 <= head < self._size:
            raise VirtqueueError(
                f"avail ring slot {slot} names descriptor {head}, outside 0..{self._size - 1}"
            )
        if self._held[head]:
            raise VirtqueueError(
                f"avail ring slot {slot} names descriptor {head}, "
                "whose chain the device already holds"
            )

        self._pop_serial += 1
        serial = self._pop_serial
        buffers: list[tuple[int, int]] = []
        writable = 0
        any_writable = False
        i = head
        while True:
            if self._seen[i] == serial:
                raise VirtqueueError(f"the chain at descriptor {head} loops back to descriptor {i}")
            self._seen[i] = serial
            flags = self.desc_flags[i]
            if flags & VRING_DESC_F_INDIRECT:
                raise VirtqueueError(
                    f"descriptor {i} in the chain at {head} is indirect, "
                    "but VIRTIO_RING_F_INDIRECT_DESC was not negotiated"
                )
            if flags & VRING_DESC_F_WRITE:
                writable += self.desc_len[i]
                any_writable = True
            elif any_writable:
                raise VirtqueueError(
                    f"descriptor {i} in the chain at {head} is device-readable "
                    "after a device-writable one"
                )
            buffers.append((self.desc_addr[i], self.desc_len[i]))
            if not flags & VRING_DESC_F_NEXT:
                break
            nxt = self.desc_next[i]
            if not 0 <= nxt < self._size:
                raise VirtqueueError(
                    f"descriptor {i} in the chain at {head} links to {nxt}, "
                    f"outside 0..{self._size - 1}"
                )
            i = nxt

        self._last_avail_idx = (last + 1) & _IDX_MASK
        if self._event_idx:
            self.avail_event = self._last_avail_idx
        self._held[head] = True
        self._writable[head] = writable
        self._in_device += 1
        return AvailableChain(head, tuple(buffers), writable)

    def push_used(self, head: int, written: int) -> None:
        """Publish the chain at ``head`` as used, ``written`` bytes written into it.

        ``virtqueue_push``.  Pushing a head the device does not hold (never popped, or pushed
        already) or reporting more bytes than the chain's writable buffers hold is a device
        bug: `VirtqueueError`, nothing changed.
        """
        if not 0 <= head < self._size:
            raise VirtqueueError(f"push_used of descriptor {head}: outside 0..{self._size - 1}")
        if not self._held[head]:
            raise VirtqueueError(
                f"push_used of descriptor {head}: the device holds no chain with that head "
                "(never popped, or pushed already)"
            )
        if not 0 <= written <= self._writable[head]:
            raise VirtqueueError(
                f"push_used of descriptor {head}: {written} bytes written, the chain has "
                f"{self._writable[head]} device-writable"
            )
        slot = self.used_idx & self._mask
        self.used_ring_id[slot] = head
        self.used_ring_len[slot] = written
        self.used_idx = (self.used_idx + 1) & _IDX_MASK
        self._held[head] = False
        self._in_device -= 1
        self._num_pushed += 1

    def interrupt_needed(self) -> bool:
        """Whether to interrupt the driver for the entries pushed since the last call.

        ``virtio_should_notify``: with event_idx, iff the driver's ``used_event`` lies among the
        indices published since then; without, iff the driver has not set
        ``VRING_AVAIL_F_NO_INTERRUPT`` (from the flag alone, even when nothing was pushed).
        After 2**16 or more pushes unchecked the 16-bit distance is meaningless, and QEMU
        interrupts regardless; so does this.
        """
        new = self.used_idx
        old = self._signalled_used
        overflowed = self._num_pushed > _IDX_MASK
        self._signalled_used = new
        self._num_pushed = 0
        if overflowed:
            needed = True
        elif self._event_idx:
            needed = vring_need_event(self.used_event, new, old)
        else:
            needed = not self.avail_flags & VRING_AVAIL_F_NO_INTERRUPT
        if needed:
            self.interrupts += 1
        return needed

    def suppress_notifications(self, flag: bool) -> None:
        """The device asks not to be kicked while it polls the ring (``flag``), or to be again.

        Without event_idx this sets or clears ``VRING_USED_F_NO_NOTIFY``.  With event_idx there
        is no flag: the device suppresses kicks by leaving ``avail_event`` behind (``pop``
        moves it), so suppressing is a no-op, and un-suppressing sets ``avail_event`` to the
        current ``avail_idx``: kick me at the next add (vhost's ``vhost_enable_notify``).  The
        device should then check ``pending_available`` for chains added meanwhile.
        """
        if self._event_idx:
            if not flag:
                self.avail_event = self.avail_idx
        elif flag:
            self.used_flags |= VRING_USED_F_NO_NOTIFY
        else:
            self.used_flags &= ~VRING_USED_F_NO_NOTIFY

    # ------------------------------------------------------------------ both sides

    def reset(self) -> list[object]:
        """Reset the device; return the token of every chain not yet collected, oldest first.

        The device forgets the chains it holds and the driver gets every outstanding token
        back (``virtqueue_detach_unused_buf`` after a device reset) so it can recover the
        buffers: chains never popped, popped and held, and pushed but not collected.  The
        queue is then as constructed, every descriptor free; the lists are refilled, not
        reallocated, and the totals (``added``, ``used``, ``kicks``, ``interrupts``) kept.
        """
        heads = [h for h in range(self._size) if self._tokens[h] is not _EMPTY]
        heads.sort(key=self._add_order.__getitem__)
        tokens = [self._tokens[h] for h in heads]
        self._initialise()
        return tokens

    def check_invariants(self) -> None:
        """Check the driver's books: the free list and the outstanding chains tile the table.

        Raises `VirtqueueError` naming the first inconsistency.  For tests; O(size).
        """
        owner: dict[int, str] = {}

        def claim(i: int, what: str) -> None:
            if not 0 <= i < self._size:
                raise VirtqueueError(f"{what} reaches descriptor {i}, outside the table")
            if i in owner:
                raise VirtqueueError(f"descriptor {i} is in {owner[i]} and in {what}")
            owner[i] = what

        in_flight = 0
        for head in range(self._size):
            if self._tokens[head] is _EMPTY:
                continue
            in_flight += 1
            what = f"the chain at {head}"
            i = head
            claim(i, what)
            while self.desc_flags[i] & VRING_DESC_F_NEXT:
                i = self.desc_next[i]
                claim(i, what)
        i = self._free_head
        for _ in range(self._num_free):
            claim(i, "the free list")
            i = self.desc_next[i]
        if len(owner) != self._size:
            stray = sorted(set(range(self._size)) - owner.keys())
            raise VirtqueueError(f"descriptors {stray} are neither free nor in a chain")
        if in_flight != self._in_flight:
            raise VirtqueueError(f"in_flight is {self._in_flight} but {in_flight} chains are held")
        if sum(self._held) != self._in_device:
            raise VirtqueueError(f"in_device is {self._in_device} but {sum(self._held)} are held")
