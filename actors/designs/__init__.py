"""The hinting designs: each one a pure class (see ``base``), driven by the hinting worker.

One module per design, registered under the entry-point group ``pagehint.designs`` as a
user's package registers its own (``registry`` finds them), with its sources in the kernel
notes and the seed thread:

- ``none`` (``base.Policy``): no hinting, the baseline;
- ``scanner``: Duyck's April 2019 proposal, the seed;
- ``page_reporting``: Linux 5.7+ ``mm/page_reporting.c``;
- ``percpu_capture``: Nitesh v9, per-CPU capture at free time;
- ``bitmap``: Nitesh v11/v12, a zone bitmap at MAX_ORDER-2.
"""

from .base import Batch, Block, DesignConfig, Limits, Policy
from .bitmap import BitmapConfig, BitmapPolicy
from .page_reporting import PageReportingConfig, PageReportingPolicy
from .percpu_capture import PercpuCaptureConfig, PercpuCapturePolicy
from .scanner import ScannerConfig, ScannerPolicy

__all__ = [
    "Batch",
    "BitmapConfig",
    "BitmapPolicy",
    "Block",
    "DesignConfig",
    "Limits",
    "PageReportingConfig",
    "PageReportingPolicy",
    "PercpuCaptureConfig",
    "PercpuCapturePolicy",
    "Policy",
    "ScannerConfig",
    "ScannerPolicy",
]
