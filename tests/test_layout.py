"""The architecture's rules (ARCHITECTURE.md), checked on the source: no import loops in
agent/ or broker/, kubernetes_asyncio only inside broker/kube/, the agent free of the
broker's dependencies, the broker reading only the agent's contract, and every broker wing
importing only the wings below it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first: a wing may import its own modules and the wings before it, never after.
WINGS = ("errors", "kube", "transport", "fleet", "diagnosis", "server", "cli")
# What of the agent the broker may import: the contract, the XID catalog lookup and the
# version (the contract's version: an agent of it is not asked for its tools list).
AGENT_CONTRACT = {"agent", "agent.catalog", "agent.xid", "agent.__version__"}
AGENT_FORBIDDEN = ("mcp", "mcp_types", "pydantic", "anyio", "broker", "kubernetes_asyncio")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """Every module ``path`` imports (absolute names), typing-only imports left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            for alias in node.names:  # `from broker import errors` imports broker.errors
                yield f"{base}.{alias.name}", node.lineno


def graph(package: str) -> dict[str, set[str]]:
    known = {module_name(p) for p in sources(package)}
    edges: dict[str, set[str]] = {m: set() for m in known}
    for path in sources(package):
        here = module_name(path)
        for name, _ in imports(path):
            if name in known and name != here:
                edges[here].add(name)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("package", ["agent", "broker"])
def test_no_import_loops(package: str) -> None:
    # A package's __init__ re-exporting its own modules is not a loop of the design.
    edges = graph(package)
    for module, targets in edges.items():
        edges[module] = {t for t in targets if not module.startswith(t + ".")}
    assert cycles(edges) == []


def test_kubernetes_asyncio_only_in_the_kube_wing() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sources("broker")
        if not module_name(path).startswith(("broker.kube", "broker.sim"))
        for name, line in imports(path)
        if name.split(".")[0] == "kubernetes_asyncio"
    ]
    assert offenders == [], "kubernetes_asyncio belongs in broker/kube/ (ARCHITECTURE.md)"


def test_agent_imports_none_of_the_broker_stack() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sources("agent")
        for name, line in imports(path)
        if name.split(".")[0] in AGENT_FORBIDDEN
    ]
    assert offenders == []


def test_broker_reads_only_the_agents_contract() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sources("broker")
        if not module_name(path).startswith("broker.sim")  # the sim hosts the real agent
        for name, line in imports(path)
        if name.split(".")[0] == "agent"
        and name not in AGENT_CONTRACT
        and name.rpartition(".")[0] not in AGENT_CONTRACT - {"agent"}
    ]
    assert offenders == []


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "broker" and parts[1] in WINGS else None


def test_broker_wings_import_downwards() -> None:
    offenders = []
    for path in sources("broker"):
        mine = wing(module_name(path))
        if mine is None:
            continue
        for name, line in imports(path):
            theirs = wing(name)
            if theirs is not None and WINGS.index(theirs) > WINGS.index(mine):
                offenders.append(f"{path.relative_to(ROOT)}:{line} ({mine}) imports {name}")
    assert offenders == [], "a wing imports only the wings below it (ARCHITECTURE.md)"


def test_the_checks_see_a_loop() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
