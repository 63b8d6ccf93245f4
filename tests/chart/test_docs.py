"""The chart README documents every value, and documents nothing that does not exist."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.chart.helmchart import CHART
from tests.chart.pod_security import BASELINE_CAPABILITIES

README = (CHART / "README.md").read_text()
VALUES_SECTION = README.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
DOCUMENTED = set(re.findall(r"^\| `([A-Za-z][\w.]*)` \|", VALUES_SECTION, re.MULTILINE))


def leaf_paths(values: Any, prefix: str = "") -> list[str]:
    if isinstance(values, dict) and values:
        return [p for k, v in values.items() for p in leaf_paths(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def test_every_value_is_in_the_readme_table() -> None:
    paths = leaf_paths(yaml.safe_load((CHART / "values.yaml").read_text()))
    missing = [p for p in paths if not any(p == d or p.startswith(d + ".") for d in DOCUMENTED)]
    assert not missing, f"values.yaml keys missing from README.md's table: {missing}"


def test_the_readme_table_names_only_real_values() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in DOCUMENTED:
        node: Any = values
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"README documents unknown {path}"
            node = node[part]


def test_readme_shows_install_connect_and_permission_checks() -> None:
    assert "helm install" in README and "--create-namespace" in README
    assert "broker serve --namespace gpu-diagnostics" in README
    assert "kubectl mcp diagnose NODE" in README
    assert "kubectl auth can-i create pods --subresource=exec" in README


def test_readme_never_offers_the_wrong_exec_check() -> None:
    """`kubectl auth can-i create pods/exec` asks about a pod named "exec"."""
    commands = [
        line.strip() for line in README.splitlines() if line.strip().startswith("kubectl auth")
    ]
    assert commands
    assert not [c for c in commands if "pods/exec" in c]


def test_readme_documents_the_xid_source_and_its_pod_security_level() -> None:
    assert "GPU_AGENT_KMSG=auto" in README and "syslog(2)" in README
    assert "xid.mountDevKmsg=true" in README and "EPERM" in README
    # The README lists baseline's addable capabilities exactly as admission checks them.
    row = next(line for line in README.splitlines() if line.startswith("| default (XID on"))
    assert "`privileged`" in row and "CAP_SYSLOG" in row
    assert {cap for cap in BASELINE_CAPABILITIES if f"`{cap}`" in row} == BASELINE_CAPABILITIES
