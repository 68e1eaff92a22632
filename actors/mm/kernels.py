"""Guest kernel profiles: what differs between the kernels a hinting design runs on.

``guest.kernel`` picks one. Each sets the defaults of the knobs it governs; a knob the scenario
sets explicitly still wins, and ``pagehint config --explain`` says which applied. The sources
of each switch are in ``docs/kernels.md``.
"""

from __future__ import annotations

import attrs

from .pcp import PcpRules


@attrs.frozen
class KernelProfile:
    """What a guest kernel version decides that the model cares about."""

    name: str
    summary: str
    putback_to_tail: bool
    """Reported pages go back at the tail of their free list: ``FPI_TO_TAIL`` in
    ``page_reporting_drain`` (5.10, f04a5d5d913f and 47b6a24a2382). 5.7 puts them back by the
    ordinary rule: at the head for orders 9 and 10 unless shuffling picks the tail."""
    reporting_order_knob: bool
    """``page_reporting_order`` is a module parameter (5.14); before, the reporting order is
    ``pageblock_order`` (``PAGE_REPORTING_MIN_ORDER``) and cannot be changed."""
    pcp_rules: PcpRules
    """How the per-CPU lists are sized and drained (``actors/mm/pcp.py``)."""
    thp_on_pcp: bool
    """THP-order blocks live on the per-CPU lists (44042b449872, ``pcp_allowed_order``, 5.14):
    free page reporting cannot see them there, and they bypass the zone lock."""

    def pcp_orders(self, pageblock_order: int) -> tuple[int, ...]:
        """The orders the per-CPU lists hold: 0, and the THP order where the kernel keeps it
        (orders 1-3 too, which no workload here allocates)."""
        return (0, pageblock_order) if self.thp_on_pcp else (0,)


KERNELS: dict[str, KernelProfile] = {
    profile.name: profile
    for profile in (
        KernelProfile(
            "5.7",
            "free page reporting as merged: reported pages put back at the head",
            putback_to_tail=False,
            reporting_order_knob=False,
            pcp_rules="fixed",
            thp_on_pcp=False,
        ),
        KernelProfile(
            "5.10",
            "FPI_TO_TAIL: reported pages put back at the tail of their free list",
            putback_to_tail=True,
            reporting_order_knob=False,
            pcp_rules="fixed",
            thp_on_pcp=False,
        ),
        KernelProfile(
            "5.14",
            "page_reporting_order; THP-order pages on the per-CPU lists; pcp high from the "
            "low watermark",
            putback_to_tail=True,
            reporting_order_knob=True,
            pcp_rules="scaled",
            thp_on_pcp=True,
        ),
        KernelProfile(
            "6.12",
            "a current kernel: per-CPU high auto-tuned between high_min and high_max (6.7)",
            putback_to_tail=True,
            reporting_order_knob=True,
            pcp_rules="auto",
            thp_on_pcp=True,
        ),
    )
}
DEFAULT_KERNEL = "6.12"
