"""Every rendered manifest validates against the Kubernetes OpenAPI schemas (strict).

kubernetes-validate ships the schemas of Kubernetes 1.25 to 1.37, strict variants
included (unknown fields are errors). Each ci values file states the release it targets
(`# kube-version:`; 1.33 by default); files without DRA are also checked against the
chart's minimum (1.28) and a newer release (1.35).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.chart.helmchart import CI_FILES, Chart, kube_version_of

pytestmark = pytest.mark.needs_helm

EXTRA_VERSIONS = ("1.28.0", "1.35.0")
# Custom resources: kubernetes-validate knows only the built-in API, so these are checked
# field by field in their own tests (tests/chart/test_broker.py) instead.
NOT_BUILT_IN = {"monitoring.coreos.com/v1": "the Prometheus Operator's CRD, not core Kubernetes"}


def _validate_all(docs: list[dict[str, Any]], version: str) -> None:
    assert docs, "nothing rendered"
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"] in NOT_BUILT_IN:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError as missing:
            pytest.fail(f"{name}: no schema to validate against: {missing.message}")
        except kubernetes_validate.ValidationError as bad:
            where = ".".join(str(p) for p in bad.path)
            pytest.fail(f"{name} is invalid for Kubernetes {version} at {where}: {bad.message}")


def _cases() -> list[tuple[Path | None, str]]:
    cases: list[tuple[Path | None, str]] = [(None, v) for v in ("1.33.0", *EXTRA_VERSIONS)]
    for path in CI_FILES:
        target = kube_version_of(path)
        cases.append((path, target))
        if "mode: dra" not in path.read_text():
            cases += [(path, v) for v in EXTRA_VERSIONS if v != target]
    return cases


@pytest.mark.parametrize(
    ("values", "version"),
    _cases(),
    ids=lambda v: v.name if isinstance(v, Path) else ("default" if v is None else v),
)
def test_rendered_manifests_match_kubernetes_schemas(
    chart: Chart, values: Path | None, version: str
) -> None:
    docs = chart.template(values=[values] if values else [], kube=version)
    _validate_all(docs, version)


def test_validation_catches_an_invalid_manifest(chart: Chart) -> None:
    """The validator is strict: a misspelt field in our DaemonSet would be caught."""
    docs = chart.template()
    daemonset = next(d for d in docs if d["kind"] == "DaemonSet")
    broken = {**daemonset, "spec": {**daemonset["spec"], "updateStrategie": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33.0", strict=True)


@pytest.mark.parametrize(
    ("api_version", "version"),
    [
        ("resource.k8s.io/v1beta1", "1.32.0"),
        ("resource.k8s.io/v1beta1", "1.33.0"),
        ("resource.k8s.io/v1beta2", "1.33.0"),
        ("resource.k8s.io/v1", "1.34.0"),
        ("resource.k8s.io/v1", "1.35.0"),
    ],
)
@pytest.mark.parametrize("admin", [True, False])
def test_resource_claim_template_validates_for_each_api_version(
    chart: Chart, api_version: str, version: str, admin: bool
) -> None:
    sets = ["gpu.mode=dra", f"gpu.dra.apiVersion={api_version}", f"gpu.dra.adminAccess={admin}"]
    if not admin:
        sets += ["gpu.dra.allocationMode=ExactCount", "gpu.dra.count=2"]
    docs = chart.template(*sets, kube=version)
    claims = [d for d in docs if d["kind"] == "ResourceClaimTemplate"]
    assert [c["apiVersion"] for c in claims] == [api_version]
    _validate_all(docs, version)
