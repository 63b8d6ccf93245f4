"""The agent pod template: stable across chart upgrades, and the pod the simulator serves.

A label that changes with the chart (helm.sh/chart, the version) in the DaemonSet's pod
template makes every chart upgrade a new template, so every agent pod restarts
(node-exporter's chart tests the same). The simulated cluster builds the chart's agent
pod by hand (broker/sim/objects.py); the second half keeps that copy honest.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.sim.objects import RELEASE as SIM_RELEASE
from broker.sim.objects import agent_pod
from broker.sim.scenario import NodeSpec, Scenario
from tests.chart.helmchart import CHART, CI_FILES, Chart, kube_version_of, one

pytestmark = pytest.mark.needs_helm

CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
# Labels the DaemonSet controller adds to the pods it creates.
CONTROLLER_LABELS = {"controller-revision-hash", "pod-template-generation"}
# The sim still serves the old pod (chart-version labels, no PYTHONDONTWRITEBYTECODE):
# strict, so the marker must go when broker/sim/objects.py catches up.


def template_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    template: dict[str, Any] = one(docs, "DaemonSet")["spec"]["template"]
    return template


@pytest.mark.parametrize("values", [None, *CI_FILES], ids=lambda p: p.name if p else "default")
def test_pod_template_carries_no_chart_version(chart: Chart, values: Path | None) -> None:
    docs = chart.template(
        values=[values] if values else [], kube=kube_version_of(values) if values else None
    )
    labels = template_of(docs)["metadata"]["labels"]
    assert "helm.sh/chart" not in labels
    assert "app.kubernetes.io/version" not in labels
    assert CHART_META["version"] not in labels.values()
    # The DaemonSet itself does carry them: `kubectl get ds -L helm.sh/chart` still works.
    own = one(docs, "DaemonSet")["metadata"]["labels"]
    assert own["helm.sh/chart"] == f"k8s-gpu-mcp-{CHART_META['version']}"


def test_a_chart_upgrade_leaves_the_pod_template_alone(chart: Chart, tmp_path: Path) -> None:
    """Same values, next chart version and appVersion (image pinned): same pod template."""
    bumped = tmp_path / "k8s-gpu-mcp"
    shutil.copytree(CHART, bumped)
    meta = {**CHART_META, "version": "9.8.7", "appVersion": "9.8.7"}
    (bumped / "Chart.yaml").write_text(yaml.safe_dump(meta))
    pin = f"image.tag={CHART_META['appVersion']}"
    for sets in ([pin], [pin, "gpu.mode=dra", "gpu.dra.apiVersion=resource.k8s.io/v1"]):
        before = chart.template(*sets, kube="1.34.0")
        after = chart.template(*sets, kube="1.34.0", chart_dir=bumped)
        assert one(after, "DaemonSet")["metadata"]["labels"]["helm.sh/chart"] == (
            "k8s-gpu-mcp-9.8.7"
        )
        assert template_of(after) == template_of(before)
        # A ResourceClaimTemplate's spec is immutable: a changed one fails `helm upgrade`.
        claims = [d for d in before if d["kind"] == "ResourceClaimTemplate"]
        claims_after = [d for d in after if d["kind"] == "ResourceClaimTemplate"]
        assert [c["spec"] for c in claims] == [c["spec"] for c in claims_after]


# --- the simulated cluster's agent pod is the chart's ------------------------------


def served_like(rendered: Any, served: Any, where: str = "") -> list[str]:
    """Where *served* (an API object) disagrees with *rendered* (what the chart asked for).

    The API server fills in defaults and omits false/empty fields, so a field the
    chart leaves out may be present, and a false or empty one may be absent.
    """
    if isinstance(rendered, dict):
        if not isinstance(served, dict):
            return [f"{where}: {served!r} is not a map"]
        found: list[str] = []
        for key, want in rendered.items():
            if key not in served:
                if want not in (False, None, [], {}, ""):
                    found.append(f"{where}.{key}: missing (chart: {want!r})")
                continue
            found += served_like(want, served[key], f"{where}.{key}")
        return found
    if isinstance(rendered, list):
        if not isinstance(served, list) or len(served) != len(rendered):
            return [f"{where}: {_names(served)} != chart {_names(rendered)}"]
        return [p for i, (r, s) in enumerate(zip(rendered, served, strict=True))
                for p in served_like(r, s, f"{where}[{i}]")]  # fmt: skip
    return [] if rendered == served else [f"{where}: {served!r} != chart {rendered!r}"]


def _names(items: Any) -> Any:
    """A list of named objects (env, volumes) by name, for a readable mismatch."""
    if isinstance(items, list) and all(isinstance(i, dict) and "name" in i for i in items):
        return [i["name"] for i in items]
    return items


@pytest.fixture(scope="module")
def both(chart: Chart) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(the chart's DaemonSet, its pod template, the sim's agent pod), same release."""
    namespace = Scenario().namespace
    docs = chart.template(release=SIM_RELEASE, namespace=namespace)
    pod = agent_pod(NodeSpec(name="gpu-node-001"), 0, namespace, "ready", 0.0, 0.0, "1")
    return one(docs, "DaemonSet"), template_of(docs), pod


def test_sim_agent_pod_has_the_chart_labels_and_annotations(
    both: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    daemonset, template, pod = both
    served = {k: v for k, v in pod["metadata"]["labels"].items() if k not in CONTROLLER_LABELS}
    assert served == template["metadata"]["labels"]
    assert pod["metadata"]["annotations"] == template["metadata"]["annotations"]
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("DaemonSet", daemonset["metadata"]["name"])
    assert pod["metadata"]["namespace"] == daemonset["metadata"]["namespace"]
    assert pod["metadata"]["generateName"] == daemonset["metadata"]["name"] + "-"


def test_sim_agent_pod_runs_the_chart_container(
    both: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    _, template, pod = both
    rendered, served = template["spec"]["containers"], pod["spec"]["containers"]
    assert [c["name"] for c in served] == [c["name"] for c in rendered] == ["agent"]
    assert served[0]["command"] == rendered[0]["command"] == ["sleep", "infinity"]
    assert served[0]["image"] == rendered[0]["image"]
    assert not served_like(rendered, served, "containers")


def test_sim_agent_pod_spec_is_the_chart_pod_spec(
    both: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    _, template, pod = both
    rendered = dict(template["spec"])
    # The DaemonSet controller pins each pod to its node: it replaces the required node
    # affinity with the node's own name, and adds its own tolerations to the chart's.
    rendered.pop("affinity")
    tolerations = rendered.pop("tolerations")
    assert all(t in pod["spec"]["tolerations"] for t in tolerations)
    assert not served_like(rendered, pod["spec"], "spec")


def test_the_comparison_notices_drift(
    both: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    _, template, pod = both
    container = {**template["spec"]["containers"][0], "command": ["gpu-agent"]}
    assert served_like([container], pod["spec"]["containers"])
    assert served_like({"hostPID": True}, pod["spec"])
    assert not served_like({"hostPID": False}, pod["spec"])
