"""What ``broker doctor`` reads from the chart's objects, rendered by the real helm: the
DaemonSet and its pods carry the agent labels it lists them by, the annotations it
reads the GPU mode and the Pod Security level from, and the agent env it reads the node
sources from (the agent's own variable names)."""

from __future__ import annotations

import pytest

from agent.app import ENV_HOST_PROC, ENV_HOST_SYS, ENV_JOURNAL, ENV_KMSG
from broker.diagnosis.node_sources import SOURCES, node_sources
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


def test_the_doctor_reads_the_agents_own_variables() -> None:
    assert [name for _, name, _ in SOURCES] == [ENV_KMSG, ENV_JOURNAL, ENV_HOST_SYS, ENV_HOST_PROC]


DEFAULT = {"kernel_log": "on", "journal": "off", "host_sysfs": "off", "host_proc": "off"}


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ((), DEFAULT),
        (
            ("hostJournal.enabled=true", "hostSys.enabled=true", "hostProc.enabled=true"),
            {"kernel_log": "on", "journal": "on", "host_sysfs": "on", "host_proc": "on"},
        ),
        (
            ("xid.enabled=false", "hostSys.enabled=true"),
            {"kernel_log": "off", "journal": "off", "host_sysfs": "on", "host_proc": "off"},
        ),
    ],
)
def test_node_sources_from_the_rendered_pod(
    chart: Chart, sets: tuple[str, ...], expected: dict[str, str]
) -> None:
    template = one(chart.template(*sets), "DaemonSet")["spec"]["template"]
    assert node_sources([template]) == expected
    # Mid-rollout, old and new pods disagree on what changed: "mixed", not a guess.
    default = one(chart.template(), "DaemonSet")["spec"]["template"]
    mixed = node_sources([template, default])
    assert {k for k, v in mixed.items() if v == "mixed"} == {
        k for k in expected if expected[k] != DEFAULT[k]
    }
