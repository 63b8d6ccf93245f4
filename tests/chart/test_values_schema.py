"""values.schema.json rejects wrong types, unknown modes and typos with a clear message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.chart.helmchart import CHART, CI_FILES, Chart

pytestmark = pytest.mark.needs_helm

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def merged(base: Any, overlay: Any) -> Any:
    """Values as helm merges them: maps merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        return {
            k: merged(base.get(k), overlay[k]) if k in overlay else base[k]
            for k in {**base, **overlay}
        }
    return overlay


def test_schema_is_valid_and_accepts_the_defaults_and_ci_files() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    validator = jsonschema.Draft7Validator(SCHEMA)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert not [e.message for e in validator.iter_errors(defaults)]
    for path in CI_FILES:
        values = merged(defaults, yaml.safe_load(path.read_text()))
        errors = [e.message for e in validator.iter_errors(values)]
        assert not errors, f"{path.name}: {errors}"


@pytest.mark.parametrize(
    ("args", "where", "says"),
    [
        (["--set", "gpu.mode=nvidia"], "/gpu/mode", "must be one of"),
        (["--set", "gpu.mode=Privileged"], "/gpu/mode", "must be one of"),
        (["--set-string", "xid.enabled=yes"], "/xid/enabled", "want boolean"),
        (["--set", "gpu.dra.count=two"], "/gpu/dra/count", "want integer"),
        (["--set", "gpu.devicePlugin.count=0"], "/gpu/devicePlugin/count", "minimum"),
        (["--set", "gpu.dra.apiVersion=resource.k8s.io/v2"], "/gpu/dra/apiVersion", "one of"),
        (["--set", "gpu.dra.allocationMode=Some"], "/gpu/dra/allocationMode", "one of"),
        (
            ["--set", "rbac.subjects[0].kind=Robot", "--set", "rbac.subjects[0].name=r2"],
            "kind",
            "one of",
        ),
        (["--set", "rbac.subjects[0].kind=User"], "/rbac/subjects/0", "name"),
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy", "one of"),
        (["--set", "image.digest=latest"], "/image/digest", "match"),
        (["--set", "hostProc.hostPath=proc"], "/hostProc/hostPath", "match"),
        (["--set", "hostJournal.hostPath=var/log/journal"], "/hostJournal/hostPath", "match"),
        (["--set-string", "hostJournal.enabled=true"], "/hostJournal/enabled", "boolean"),
        (["--set", "hostJournal.supplementalGroups={0}"], "supplementalGroups/0", "minimum"),
        (["--set", "hostJournal.supplementalGroups={adm}"], "supplementalGroups/0", "integer"),
        (["--set", "hostJournal.supplementalGroups={4,4}"], "supplementalGroups", "are equal"),
        (["--set", "hostJournal.path=/var/log"], "'path' not allowed", ""),
        (["--set", "hostSys.hostPath=sys"], "/hostSys/hostPath", "match"),
        (["--set", "hostSys.mountAll=true"], "'mountAll' not allowed", ""),
        (
            ["--set", "rollingUpdate.maxUnavailable=lots"],
            "/rollingUpdate/maxUnavailable",
            "pattern",
        ),
        (["--set", "gpuMode=dra"], "additional properties 'gpuMode' not allowed", ""),
        (["--set", "gpu.privileged.acknowledge=true"], "'acknowledge' not allowed", ""),
        (["--set", "agent.nonRoot.uid=0"], "/agent/nonRoot/uid", "minimum"),
        (["--set-string", "rbac.clusterWidePodReads=no"], "/rbac/clusterWidePodReads", "boolean"),
        (["--set", "rbac.podReadNamespaces={ML_Team}"], "/rbac/podReadNamespaces/0", "match"),
        (["--set", "rbac.podReadNamespaces={ml,ml}"], "/rbac/podReadNamespaces", "are equal"),
        (["--set", "broker.auth.mode=oidc"], "/broker/auth/mode", "one of"),
        (["--set", "broker.service.port=80"], "/broker/service/port", "minimum"),
        (["--set", "broker.image.digest=latest"], "/broker/image/digest", "match"),
        (["--set", "broker.replicas=0"], "/broker/replicas", "minimum"),
        (["--set", "broker.service.sessionAffinity=Sticky"], "/broker/service/sessionAffinity", ""),
        (["--set", "broker.metrics.serviceMonitor.interval=soon"], "interval", "match"),
    ],
)
def test_schema_rejects_bad_values_clearly(
    chart: Chart, args: list[str], where: str, says: str
) -> None:
    done = chart.run("template", "gpu-mcp", str(CHART), *args)
    assert done.returncode != 0, f"helm accepted {args}"
    assert "values don't meet the specifications of the schema" in done.stderr
    assert where in done.stderr and says in done.stderr, done.stderr


def test_lint_reports_schema_errors_too(chart: Chart, tmp_path: Path) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text("gpu:\n  mode: kubevirt\n")
    done = chart.run("lint", "--strict", str(CHART), "-f", str(bad))
    assert done.returncode != 0
    assert "/gpu/mode" in done.stdout + done.stderr
