"""A scenario's hinting as the run uses it: every derived value resolved once, here.

Validation (``check_hinting``), building (the virtqueue and the design's decisions), analysis
(batch fill) and ``pagehint designs`` read these values from ``resolve``, so what is checked is
what runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from pagehint.protocol.units import PAGE_SIZE, format_duration, format_size
from pagehint.protocol.virtqueue import MAX_QUEUE_SIZE

from ..designs import DesignConfig, Limits, Policy
from ..designs.registry import find_design
from ..mm.buddy import Watermarks
from ..mm.kernels import KERNELS
from ..mm.pcp import PcpSizes, zone_batchsize

if TYPE_CHECKING:
    from .schema import Scenario

# QEMU creates the reporting virtqueue with 32 entries:
# virtio_add_queue(vdev, 32, virtio_balloon_handle_report) in hw/virtio/virtio-balloon.c.
QEMU_REPORTING_QUEUE_SIZE = 32


@attrs.frozen
class Hinting:
    """The design, its knobs and their resolved values, and the virtqueue they report through."""

    design: type[Policy]
    config: DesignConfig
    limits: Limits  # after the host's batch
    own_capacity: int  # blocks per report before the host's batch (what sized the queue)
    queue_size: int

    @property
    def hints(self) -> bool:
        """Whether the design hints at all (``none`` does not)."""
        return self.design is not Policy


def resolve(scenario: Scenario) -> Hinting:
    """The one resolution of ``[policy]`` (with the guest kernel's defaults for the knobs the
    scenario leaves unset), ``[virtio]`` and ``host.batch_size``."""
    guest, host = scenario.guest, scenario.host
    design = find_design(scenario.policy.name)
    config = design.kernel_defaults(scenario.policy, KERNELS[guest.kernel])
    own = design.limits(config, guest.max_order, guest.pageblock_order, 0)
    limits = own
    if host.batch_size:
        limits = design.limits(config, guest.max_order, guest.pageblock_order, host.batch_size)
    size = scenario.virtio.queue_size
    if size is None:  # QEMU's 32, or the smallest power of two that holds a report
        size = max(QEMU_REPORTING_QUEUE_SIZE, 1 << max(0, own.capacity - 1).bit_length())
    return Hinting(design, config, limits, own.capacity, size)


def check_hinting(scenario: Scenario) -> list[str]:
    """The hinting values that are each well-typed but impossible, naming the keys to change."""
    hinting = resolve(scenario)
    limits, size, config = hinting.limits, hinting.queue_size, hinting.config
    problems = []
    if hinting.own_capacity < 1:
        problems.append(f"policy.capacity: must be positive, got {hinting.own_capacity}")
    if not 0 <= limits.min_order < limits.max_order:
        problems.append(
            f"policy.min_order: must be within 0..{limits.max_order - 1} (guest.max_order - 1), "
            f"got {limits.min_order}"
        )
    if config.poll_budget < 1:
        problems.append(f"policy.poll_budget: must be positive, got {config.poll_budget}")
    if scenario.virtio.queue_size is None and size > MAX_QUEUE_SIZE:
        problems.append(
            f"policy.capacity: a report of {hinting.own_capacity} blocks needs a virtqueue of "
            f"{size} descriptors; a virtqueue has at most {MAX_QUEUE_SIZE}"
        )
    elif size < 1 or size & (size - 1) or size > MAX_QUEUE_SIZE:
        problems.append(
            f"virtio.queue_size: must be a power of two up to {MAX_QUEUE_SIZE}, got {size}"
        )
    elif hinting.hints and limits.capacity > size:
        if limits.capacity != hinting.own_capacity:
            problems.append(
                f"host.batch_size: {format_size(scenario.host.batch_size)} makes reports of "
                f"{limits.capacity} blocks of order {limits.min_order} (policy.capacity after "
                f"the host's batch), more than the virtqueue holds (virtio.queue_size = {size})"
            )
        else:
            problems.append(
                f"policy.capacity: a report of {limits.capacity} blocks does not fit the "
                f"virtqueue (virtio.queue_size = {size})"
            )
    if scenario.guest.shuffle and hinting.design.excludes_shuffle:
        problems.append(
            f"guest.shuffle: design {hinting.design.name!r} cannot run with a shuffled free "
            f"list: {hinting.design.excludes_shuffle}"
        )
    return problems + hinting.design.check(config, limits)


def pcp_sizes(scenario: Scenario) -> PcpSizes:
    """Every vCPU's per-CPU list sizing: ``guest.pcp_batch`` and ``guest.pcp_high`` where set,
    else the guest kernel's rules for a zone of ``guest.memory`` shared by ``guest.vcpus``."""
    guest = scenario.guest
    total = guest.memory // PAGE_SIZE
    batch = guest.pcp_batch if guest.pcp_batch is not None else zone_batchsize(total)
    if guest.pcp_high is not None:
        return PcpSizes(batch, guest.pcp_high, guest.pcp_high)
    low = Watermarks.linux_default(total).low
    return PcpSizes.for_kernel(KERNELS[guest.kernel].pcp_rules, batch, low, total, guest.vcpus)


def applied(scenario: Scenario) -> list[tuple[str, str, str]]:
    """Each value the guest kernel or the cost profile governs, as (key, value, where from):
    what ``pagehint config --explain`` shows for a scenario."""
    guest, kernel = scenario.guest, KERNELS[scenario.guest.kernel]
    sizes, hinting = pcp_sizes(scenario), resolve(scenario)
    kernel_says = f"guest.kernel {kernel.name}"
    rows = [
        (
            "guest.pcp_batch",
            str(sizes.batch),
            "set" if guest.pcp_batch is not None else "zone_batchsize() of guest.memory",
        ),
        (
            "guest.pcp_high",
            str(sizes.high_min)
            if sizes.high_min == sizes.high_max
            else f"{sizes.high_min}..{sizes.high_max} (auto-tuned)",
            "set" if guest.pcp_high is not None else f"{kernel_says}: {kernel.pcp_rules} rule",
        ),
        (
            "per-CPU lists hold",
            "orders " + ", ".join(map(str, kernel.pcp_orders(guest.pageblock_order))),
            kernel_says,
        ),
    ]
    for key in hinting.design.kernel_knobs:
        raw = getattr(scenario.policy, key)
        value = getattr(hinting.config, key)
        rows.append(
            (f"policy.{key}", str(value).lower(), "set" if raw is not None else kernel_says)
        )
    min_order_from = f"{hinting.design.name}'s own"
    if scenario.policy.min_order is not None:
        min_order_from = "set"
        if hinting.design.name == "page_reporting" and not kernel.reporting_order_knob:
            min_order_from += f", though {kernel_says} has no page_reporting_order (5.14+)"
    rows.append(("policy.min_order", str(hinting.limits.min_order), min_order_from))
    costs = scenario.costs
    explicit = dict(costs.overrides)
    resolved = costs.resolve()
    for field in attrs.fields(type(resolved)):
        source = "set" if field.name in explicit else f"costs.profile {costs.profile}"
        rows.append((f"costs.{field.name}", format_duration(getattr(resolved, field.name)), source))
    return rows
