"""The chart carries the zipapp: the ConfigMap holds exactly the committed file, the pods
mount it where the broker execs `gpu-agent`, and everything fits Kubernetes' size limits."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from typing import Any

import pytest

from tests.chart.helmchart import CHART, Chart, agent_container, by_kind, env_of, one, pod_spec
from tests.release.scripts import PYZ

pytestmark = pytest.mark.needs_helm

MiB = 1024 * 1024


def test_configmap_holds_the_committed_zipapp_under_1_mib(chart: Chart) -> None:
    docs = chart.template()
    configmap = one(docs, "ConfigMap")
    assert configmap["metadata"]["name"] == "gpu-mcp-k8s-gpu-mcp-agent"
    assert configmap["metadata"]["labels"]["app.kubernetes.io/component"] == "agent"
    assert base64.b64decode(configmap["binaryData"]["gpu-agent"]) == PYZ.read_bytes()
    # etcd refuses objects over 1 MiB; keep well clear of it.
    assert len(json.dumps(configmap)) < 0.5 * MiB


def test_pods_run_it_as_gpu_agent_in_a_stock_python_image(chart: Chart) -> None:
    docs = chart.template()
    container = agent_container(docs)
    assert container["image"] == "docker.io/library/python:3.13-slim-trixie"
    assert container["command"] == ["sleep", "infinity"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "agent-zipapp")
    assert mount == {
        "name": "agent-zipapp",
        "mountPath": "/usr/local/bin/gpu-agent",  # on the image's PATH: `gpu-agent` as ever
        "subPath": "gpu-agent",
        "readOnly": True,
    }
    volume = next(v for v in pod_spec(docs)["volumes"] if v["name"] == "agent-zipapp")
    assert volume["configMap"] == {"name": "gpu-mcp-k8s-gpu-mcp-agent", "defaultMode": 0o555}
    assert env_of(container)["GPU_AGENT_PYCACHE"] == "/tmp/gpu-agent-pycache"  # on the emptyDir
    # A subPath mount never sees ConfigMap updates: a new agent must change the pod template.
    annotations = one(docs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert (
        annotations["k8s-gpu-mcp.io/agent-sha256"] == hashlib.sha256(PYZ.read_bytes()).hexdigest()
    )


def test_pycache_can_be_turned_off(chart: Chart) -> None:
    env = env_of(agent_container(chart.template("agent.zipapp.pycache=false")))
    assert "GPU_AGENT_PYCACHE" not in env and env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_zipapp_image_digest_wins_over_tag(chart: Chart) -> None:
    digest = "sha256:" + "cd" * 32
    docs = chart.template(f"agent.zipapp.image.digest={digest}")
    assert agent_container(docs)["image"] == f"docker.io/library/python@{digest}"


def test_image_source_has_no_configmap_and_no_mount(chart: Chart) -> None:
    docs = chart.template("agent.source=image")
    container = agent_container(docs)
    assert container["image"] == "ghcr.io/k8s-gpu-mcp/agent:0.1.0"
    assert not by_kind(docs, "ConfigMap")
    assert [m["name"] for m in container["volumeMounts"]] == ["tmp"]
    assert "GPU_AGENT_PYCACHE" not in env_of(container)
    assert (
        "k8s-gpu-mcp.io/agent-sha256"
        not in (one(docs, "DaemonSet")["spec"]["template"]["metadata"]["annotations"])
    )


def test_unknown_source_is_refused_by_the_schema(chart: Chart) -> None:
    error = chart.template_error("agent.source=pip")
    assert "agent" in error and "source" in error


def test_helm_release_record_stays_under_the_secret_limit(chart: Chart) -> None:
    """Helm keeps each release in a Secret (1 MiB at most) as base64(gzip(JSON)) holding the
    chart's files *and* the rendered manifest, so the zipapp is stored twice. Encode them
    the same way and keep clear of the limit."""
    rendered = chart.run("template", "gpu-mcp", str(CHART), "--namespace", "gpu-diagnostics")
    assert rendered.returncode == 0, rendered.stderr
    files: list[dict[str, Any]] = [
        {"name": p.relative_to(CHART).as_posix(), "data": base64.b64encode(p.read_bytes()).decode()}
        for p in sorted(CHART.rglob("*"))
        if p.is_file()
    ]
    record = json.dumps({"chart": {"files": files}, "manifest": rendered.stdout}).encode()
    stored = len(base64.b64encode(gzip.compress(record, compresslevel=9)))
    assert stored < 0.8 * MiB, f"the release record would be {stored / MiB:.2f} MiB"
