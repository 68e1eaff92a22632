"""The simulator's own memory for a scenario, estimated before the run starts.

A guest far larger than the machine running the simulator would otherwise fail minutes into
boot with a MemoryError, or push the machine into swap. ``runtime.harness.model.execute``
refuses a run whose estimate exceeds the machine's memory, before it writes anything.

The estimate follows the structures that grow with the guest (``actors/mm``), per guest:

- the host's per-page state (``GuestBacking``): roaring bitmaps, two always (backed,
  discarded), three more only when the run needs them (accessed and swapped with a
  ``host.memory`` limit, lazily freed with ``host.discard = "free"``), and one of host huge
  pages. A bitmap spanning the guest holds a container per 2**16 pages, kept as runs while the
  pages come in blocks: 75 bytes each (a 12 TiB range, 49,152 containers, took 3.69 MB of C
  heap by ``mallinfo2``; an idle 12 TiB guest's whole host state took 58 KiB, its backed
  pages being one range). Pages alternating in and out cost up to 8 KiB a container, 1 bit
  per page, which this does not count;
- the allocator's free blocks after boot: one per top-order block, 9 bytes each, a byte of
  state and two 4-byte list links in arrays (a 12 TiB zone after boot, 192 GiB allocated:
  36 MiB by ``tracemalloc``, 27 MiB of it those arrays, the rest the boot blocks' dict
  entries; as dict entries before issue 18 its free blocks took 578 MiB, 192 bytes each). The
  full invariant check at the end walks the zone without temporaries that grow with it (1 KiB
  at 12 TiB, down from 320 MiB), so it costs nothing here;
- each vCPU's task, per-CPU lists and workload state: 12 KiB (a 1 TiB guest grew by 5 MiB
  from 64 to 448 vCPUs);
- and once, the interpreter with pagehint, rich and DuckDB loaded (DuckDB writes the run's
  ``log.parquet`` at its end) and a small guest run: 96 MiB (a 4 GiB idle run through the
  CLI peaked at 95 MiB).

Checked against peak RSS of 20 ms idle runs through the CLI (``pagehint run idle``, policy
none, 1 GiB boot memory, ``ru_maxrss``; estimate in brackets): 4 GiB 95 MiB (96), 1 TiB
97 MiB (98), 12 TiB 122 MiB (130), 12 TiB with 448 vCPUs, a 16 TiB host.memory limit and
MADV_FREE 133 MiB (145). It is what a run needs when its free memory stays in large blocks;
a workload that fragments free memory into single pages needs more.
"""

from __future__ import annotations

from pagehint.protocol.units import format_size, pages

from .schema import HOST_BACKINGS, Scenario

INTERPRETER_BYTES = 96 << 20
BYTES_PER_FREE_BLOCK = 9
BYTES_PER_VCPU = 12 << 10
BYTES_PER_CONTAINER = 75
CONTAINER_PAGES = 1 << 16


def estimated_bytes(scenario: Scenario) -> tuple[int, str]:
    """The simulator's estimated peak memory for ``scenario``, and what it is made of."""
    guest, host = scenario.guest, scenario.host
    n_pages = pages(guest.memory)
    bitmaps = 2 + (2 if host.memory else 0) + (1 if host.discard == "free" else 0)
    host_pages, _ = HOST_BACKINGS.get(host.backing, (1, False))
    containers = bitmaps * -(-n_pages // CONTAINER_PAGES) + -(
        -n_pages // host_pages // CONTAINER_PAGES
    )
    host_state = containers * BYTES_PER_CONTAINER
    free_blocks = (n_pages >> (guest.max_order - 1)) * BYTES_PER_FREE_BLOCK
    per_guest = host_state + free_blocks + guest.vcpus * BYTES_PER_VCPU
    total = INTERPRETER_BYTES + host.guests * per_guest
    made_of = (
        f"{host.guests} x (host page state {format_size(host_state)} + free blocks "
        f"{format_size(free_blocks)} + {guest.vcpus} vCPUs "
        f"{format_size(guest.vcpus * BYTES_PER_VCPU)}) + interpreter "
        f"{format_size(INTERPRETER_BYTES)}"
    )
    return total, made_of
