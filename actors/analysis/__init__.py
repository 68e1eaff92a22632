"""The guest model's log analysis: typed events, derived views, canned reports and plots.

``pagehint analyze RUN_DIR|LOG|SWEEP_DIR ...`` (``cli``) opens logs with DuckDB
(``pagehint.runtime.harness.logdb``) and answers what this field asks of a run: how much memory
went back to the host and how fast; how long requests queued for the zone lock, by requester
and over time; how the hinting worker woke, polled and filled its reports (the NAPI picture);
false OOMs and peak isolated memory; host discards, refaults and swap. Over several runs (a
sweep) every report is keyed by the factors that differ between the runs' configs, averaged
over seeds. ``open_run`` gives the same from Python; docs/log-schema.md documents every event
and view. ``pagehint check`` (``check``) replays a log against the model's invariants.

By job: ``fields`` (the typed columns of ``events``), ``views`` (derived views), ``reports``
(canned reports, each with its notes), ``database`` (``open_run``), ``tables`` (showing
results), ``plots`` (PNG figures), ``cli`` and ``check`` (the two commands).
"""

from .database import open_run
from .fields import FIELDS
from .reports import DEFAULT_REPORTS, REPORT_NAMES, guest_reports

__all__ = ["DEFAULT_REPORTS", "FIELDS", "REPORT_NAMES", "guest_reports", "open_run"]
