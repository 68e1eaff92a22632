"""Workloads: pure generators of the operations a vCPU executes (``ops``), synthetic ones
modelled on will-it-scale and memhog (``synthetic``), and replay of recorded traces (``trace``).
"""

from .ops import (
    PHASES_DONE,
    THP_ORDER,
    Done,
    Loop,
    Map,
    Op,
    Phase,
    Think,
    Unmap,
    Workload,
    delayed,
    idle,
    nothing,
    phased,
    take,
    then_idle,
)
from .synthetic import churn, memhog, page_fault1, page_fault2
from .trace import Trace, TraceError, TraceEvent, parse_trace, replay, split_by_cpu

__all__ = [
    "PHASES_DONE",
    "THP_ORDER",
    "Done",
    "Loop",
    "Map",
    "Op",
    "Phase",
    "Think",
    "Trace",
    "TraceError",
    "TraceEvent",
    "Unmap",
    "Workload",
    "churn",
    "delayed",
    "idle",
    "memhog",
    "nothing",
    "page_fault1",
    "page_fault2",
    "parse_trace",
    "phased",
    "replay",
    "split_by_cpu",
    "take",
    "then_idle",
]
