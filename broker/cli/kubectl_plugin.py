"""``kubectl-mcp``: the broker's commands as a kubectl plugin.

kubectl runs any ``kubectl-<name>`` found on PATH for ``kubectl <name> ...``, passing the
remaining arguments and the environment (``KUBECONFIG`` included), so
``kubectl mcp diagnose NODE``, ``kubectl mcp sweep``, ``kubectl mcp nodes`` (and
``kubectl mcp explain POD -n NS`` where installed) work. kubectl does not pass its own
global flags to plugins: give ``--context``/``--kubeconfig`` after ``mcp``.
"""

from __future__ import annotations

from broker.cli.app import make_app

__all__ = ["main"]


def main() -> None:
    """Console script ``kubectl-mcp``."""
    make_app("kubectl mcp", with_sim=False)(prog_name="kubectl mcp")
