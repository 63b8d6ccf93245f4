"""Errors raised by the simulated cluster (broker.sim); messages say what to fix."""

from __future__ import annotations


class SimError(Exception):
    """Base class for simulated-cluster errors; str() is a user-facing message."""


class SimScenarioError(SimError):
    """The scenario file (or dict) is malformed: the message names the bad key and why."""


class SimStartError(SimError):
    """The simulated API server could not start (port in use, unwritable kubeconfig, ...)."""
