"""The hinting designs: each one's decisions as a pure class, driven by the hinting worker.

One module per design, with its sources in the kernel notes and the seed thread:

- ``none`` (``base.Policy``): no hinting, the baseline;
- ``scanner``: Duyck's April 2019 proposal, the seed;
- ``page_reporting``: Linux 5.7+ ``mm/page_reporting.c``;
- ``percpu_capture``: Nitesh v9, per-CPU capture at free time;
- ``bitmap``: Nitesh v11/v12, a zone bitmap at MAX_ORDER-2.
"""

from .base import Batch, Block, Policy
from .bitmap import BitmapPolicy
from .page_reporting import PageReportingPolicy
from .percpu_capture import PercpuCapturePolicy
from .scanner import ScannerPolicy

__all__ = [
    "Batch",
    "BitmapPolicy",
    "Block",
    "PageReportingPolicy",
    "PercpuCapturePolicy",
    "Policy",
    "ScannerPolicy",
]
