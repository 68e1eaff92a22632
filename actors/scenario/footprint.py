"""The simulator's own memory for a scenario, estimated before the run starts.

A guest far larger than the machine running the simulator would otherwise fail minutes into
boot with a MemoryError, or push the machine into swap. ``runtime.harness.model.execute``
refuses a run whose estimate exceeds the machine's memory, before it writes anything.

The estimate follows the structures that grow with the guest (``actors/mm``), per guest:

- the host's per-page state (``GuestBacking``): bitmaps of 1 bit per 4 KiB page, two always
  (backed, discarded), three more only when the run needs them (accessed and swapped with a
  ``host.memory`` limit, lazily freed with ``host.discard = "free"``), and one bit per host
  huge page;
- the allocator's free blocks after boot: one per top-order block, about 192 bytes each as a
  Python object (issue 18's measurement: 42% of a 12 TiB guest's 1,389 MiB);
- the end-of-run full invariant check's temporaries: 353 MiB at 12 TiB (the same
  measurement), about 0.11 bytes per page;
- each vCPU's task, per-CPU lists and workload state: 12 KiB (a 1 TiB guest grew by 5 MiB
  from 64 to 448 vCPUs);
- and once, the interpreter with pagehint imported and a small guest run: 56 MiB (a 4 GiB idle
  guest peaked at 55 MiB).

Checked against peak RSS of 20 ms idle runs (policy none, 1 GiB boot memory, measured by
``ru_maxrss``; estimate in brackets): 4 GiB 55 MiB (56), 256 GiB 85 MiB (91), 1 TiB 185 MiB
(196), 1 TiB with a host.memory limit and MADV_FREE 265 MiB (292). It is what a run needs
when its free memory stays in large blocks; a workload that fragments free memory into single
pages needs more.
"""

from __future__ import annotations

from pagehint.protocol.units import PAGE_SIZE, format_size

from .schema import HOST_BACKINGS, Scenario

INTERPRETER_BYTES = 56 << 20
BYTES_PER_FREE_BLOCK = 192
CHECK_BYTES_PER_PAGE = 0.11
BYTES_PER_VCPU = 12 << 10


def estimated_bytes(scenario: Scenario) -> tuple[int, str]:
    """The simulator's estimated peak memory for ``scenario``, and what it is made of."""
    guest, host = scenario.guest, scenario.host
    pages = guest.memory // PAGE_SIZE
    bitmaps = 2 + (2 if host.memory else 0) + (1 if host.discard == "free" else 0)
    host_pages, _ = HOST_BACKINGS.get(host.backing, (1, False))
    host_state = pages * bitmaps // 8 + pages // host_pages // 8
    free_blocks = (pages >> (guest.max_order - 1)) * BYTES_PER_FREE_BLOCK
    check = round(pages * CHECK_BYTES_PER_PAGE)
    per_guest = host_state + free_blocks + check + guest.vcpus * BYTES_PER_VCPU
    total = INTERPRETER_BYTES + host.guests * per_guest
    made_of = (
        f"{host.guests} x (host page state {format_size(host_state)} + free blocks "
        f"{format_size(free_blocks)} + invariant check {format_size(check)} + "
        f"{guest.vcpus} vCPUs {format_size(guest.vcpus * BYTES_PER_VCPU)}) + interpreter "
        f"{format_size(INTERPRETER_BYTES)}"
    )
    return total, made_of
