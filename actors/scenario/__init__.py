"""The scenario: its schema (``schema``), how it is built into actors (``building``), what a run
reports (``outcomes``), and the guest model that ties them together (``model``)."""

from .building import Guest, Machine, build, build_guest, make_policy
from .model import MODEL, GuestModel
from .schema import Scenario

__all__ = [
    "MODEL",
    "Guest",
    "GuestModel",
    "Machine",
    "Scenario",
    "build",
    "build_guest",
    "make_policy",
]
