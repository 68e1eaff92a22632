"""Synthetic workloads: will-it-scale's page faults, memhog, an idle guest, random churn."""

from __future__ import annotations

import heapq
import itertools
import random

from .ops import THP_ORDER, Loop, Map, Think, Unmap, Workload


def page_fault1(mapping_pages: int, thp: bool) -> Workload:
    """will-it-scale page_fault1: map a private anonymous region, touch every page, unmap."""
    order = THP_ORDER if thp else 0
    while True:
        yield Map(0, mapping_pages, order)
        yield Unmap(0)
        yield Loop()


def page_fault2(mapping_pages: int) -> Workload:
    """will-it-scale page_fault2: MAP_PRIVATE of a file, write every page (a copy per fault).

    The file's page cache is read in once and stays allocated for the whole run.
    """
    yield Map(1, mapping_pages, 0)  # the file, read into the page cache
    while True:
        yield Map(0, mapping_pages, 0, copy=True)
        yield Unmap(0)
        yield Loop()


def memhog(size_pages: int, thp: bool, pause_ns: int, loops: int = 0) -> Workload:
    """numactl's memhog in a loop: allocate and touch ``size``, free it, pause, repeat.

    With ``loops`` > 0, it ends after that many (memory freed). The pause is a sleep: the vCPU
    is idle through it.
    """
    order = THP_ORDER if thp else 0
    done = 0
    while not loops or done < loops:
        yield Map(0, size_pages, order)
        yield Unmap(0)
        yield Loop()
        done += 1
        if not loops or done < loops:
            yield Think(pause_ns, idle=True)


def churn(
    rng: random.Random,
    mean_pages: int,
    mean_lifetime_ns: int,
    max_live_pages: int,
    thp_fraction: float,
    think_ns: int,
) -> Workload:
    """Allocations of random size (exponential) and lifetime (exponential), from a seed.

    At most ``max_live_pages`` are live at once: at the limit, the oldest-expiring one is freed
    early, as memory pressure would force.
    """
    expiries: list[tuple[int, int, int]] = []  # (expiry_ns, region, pages)
    live_pages = 0
    now = 0
    for region in itertools.count():
        while expiries and expiries[0][0] <= now:
            _, done, freed = heapq.heappop(expiries)
            live_pages -= freed
            now = yield Unmap(done)
        thp = rng.random() < thp_fraction
        unit = 1 << THP_ORDER if thp else 1
        pages = max(unit, round(rng.expovariate(1 / mean_pages) / unit) * unit)
        pages = min(pages, max(unit, max_live_pages // unit * unit))
        while expiries and live_pages + pages > max_live_pages:
            _, done, freed = heapq.heappop(expiries)
            live_pages -= freed
            now = yield Unmap(done)
        now = yield Map(region, pages, THP_ORDER if thp else 0)
        live_pages += pages
        lifetime = max(1, round(rng.expovariate(1 / mean_lifetime_ns)))
        heapq.heappush(expiries, (now + lifetime, region, pages))
        yield Loop()
        if think_ns:
            now = yield Think(round(rng.expovariate(1 / think_ns)))
