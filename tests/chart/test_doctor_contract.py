"""What ``broker doctor`` reads from the chart's objects, rendered by the real helm: the
DaemonSet and its pods carry the agent labels it lists them by, and the annotations it
reads the GPU mode and the Pod Security level from."""

from __future__ import annotations

from broker.diagnosis.preflight import GPU_MODE_ANNOTATION, PSS_LEVEL_ANNOTATION
from broker.kube.names import AGENT_SELECTOR
from tests.chart.helmchart import Chart, one
from tests.chart.pod_security import strictest_level

SELECTOR = dict(part.split("=") for part in AGENT_SELECTOR.split(","))


def test_the_daemonset_and_its_pods_match_the_doctors_selector(chart: Chart) -> None:
    ds = one(chart.template(), "DaemonSet")
    assert SELECTOR.items() <= ds["metadata"]["labels"].items()
    template = ds["spec"]["template"]
    assert SELECTOR.items() <= template["metadata"]["labels"].items()
    annotations = template["metadata"]["annotations"]
    assert annotations[GPU_MODE_ANNOTATION] == "runtimeClass"
    assert template["spec"]["runtimeClassName"] == "nvidia"  # the RuntimeClass check's name
    assert annotations[PSS_LEVEL_ANNOTATION] == strictest_level(template["spec"])


def test_other_modes_need_no_runtime_class(chart: Chart) -> None:
    ds = one(chart.template("gpu.mode=devicePlugin"), "DaemonSet")
    template = ds["spec"]["template"]
    assert "runtimeClassName" not in template["spec"]
    assert template["metadata"]["annotations"][GPU_MODE_ANNOTATION] == "devicePlugin"
