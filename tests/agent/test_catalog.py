"""The agent's contract module: the one status vocabulary, and the rule that the broker
imports the agent only through ``agent.catalog`` (and ``agent.xid``'s catalog lookup)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from agent.catalog import STATUSES, TOOL_DEFINITIONS, TOOL_NAMES, rank, worst
from tests.agent.helpers import ROOT


def _agent_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(n for n in names if n == "agent" or n.startswith("agent."))
    return found


def test_the_catalog_depends_on_no_other_agent_module() -> None:
    assert _agent_imports(ROOT / "agent" / "catalog.py") == set()


def test_statuses_are_ordered_best_first() -> None:
    assert STATUSES == ("healthy", "warning", "degraded", "critical")
    assert [rank(s) for s in STATUSES] == [0, 1, 2, 3]
    assert worst() == "healthy"
    assert worst("warning", "critical", "healthy") == "critical"
    assert worst("healthy", "surprise") == "surprise"  # unknown ranks as warning, not healthy


@pytest.mark.parametrize("tool", TOOL_DEFINITIONS, ids=TOOL_NAMES)
def test_every_status_enum_is_the_vocabulary(tool: dict[str, object]) -> None:
    def enums(node: object) -> list[list[object]]:
        if isinstance(node, dict):
            own = [node["enum"]] if "enum" in node and "healthy" in node["enum"] else []
            return own + [e for v in node.values() for e in enums(v)]
        if isinstance(node, list):
            return [e for v in node for e in enums(v)]
        return []

    for enum in enums(tool["outputSchema"]):
        assert enum == list(STATUSES)
