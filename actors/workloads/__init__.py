"""Workloads: pure generators of the operations a vCPU executes (``ops``), synthetic ones
modelled on will-it-scale and memhog (``synthetic``), and replay of recorded traces (``trace``).
"""

from .ops import THP_ORDER, Loop, Map, Op, Think, Unmap, Workload, delayed, take
from .synthetic import churn, idle, memhog, page_fault1, page_fault2
from .trace import Trace, TraceError, TraceEvent, parse_perf_script, replay, split_by_cpu

__all__ = [
    "THP_ORDER",
    "Loop",
    "Map",
    "Op",
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
    "page_fault1",
    "page_fault2",
    "parse_perf_script",
    "replay",
    "split_by_cpu",
    "take",
]
