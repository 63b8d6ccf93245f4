"""Scenario loading and validation, node generation, selectors and table cells."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from broker.sim import SimCluster, SimScenarioError, load_scenario
from broker.sim.scenario import expand_nodes, parse_scenario
from broker.sim.selectors import (
    FIELDS,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from broker.sim.tables import human_duration


def test_default_scenario_has_the_demo_faults() -> None:
    sc = load_scenario(None)
    by_name = {n.name: n for n in sc.nodes}
    kinds = {
        name: {f["kind"] for f in node.agent.get("faults", [])} for name, node in by_name.items()
    }
    assert "fell_off_bus" in kinds["gpu-node-002"]
    assert "row_remap_failure" in kinds["gpu-node-003"]
    assert "thermal_throttle" in kinds["gpu-node-004"]
    assert by_name["gpu-node-005"].agent_pod == "pending"
    assert by_name["gpu-node-006"].agent_pod == "missing"
    assert {f["xid"] for f in by_name["gpu-node-007"].agent["faults"]} == {13}
    reasons = {w.name: (w.phase, w.exit_code, w.reason, w.last_reason) for w in sc.workloads}
    assert reasons["data-prep-6c9f7d8b4-h2m9x"][3] == "OOMKilled"
    assert reasons["eval-nightly-29409120-4kq8z"][:2] == ("Succeeded", 0)


def test_nodes_are_padded_with_healthy_generated_ones() -> None:
    sc = load_scenario({"nodes": [{"name": "gpu-node-002", "gpu_count": 2}], "cpu_nodes": 1})
    nodes = expand_nodes(sc, 1000)
    gpu = [n for n in nodes if n.gpu]
    assert len(gpu) == 1000 and len(nodes) == 1001
    assert gpu[0].gpu_count == 2 and gpu[1].name == "gpu-node-0001"
    assert "gpu-node-0002" in {n.name for n in gpu}  # no clash with the named node's style
    assert len({n.name for n in nodes}) == 1001
    assert all(n.agent == {} and n.agent_pod == "ready" for n in gpu[1:])


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"nodes": [{"name": "a", "gpus": 3}]}, "nodes[0]: unknown key 'gpus'"),
        ({"nodes": [{"name": "a", "gpu_count": "8"}]}, "nodes[0].gpu_count: expected an integer"),
        ({"nodes": [{"name": "Bad_Name"}]}, "not a valid node name"),
        ({"nodes": [{"name": "a", "product": "B200"}]}, "unknown; known: H100-80GB"),
        ({"nodes": [{"name": "a", "agent_pod": "sleepy"}]}, "agent_pod: one of ready"),
        ({"nodes": [{"name": "a"}, {"name": "a"}]}, "duplicate node 'a'"),
        ({"workloads": [{"name": "w", "node": "ghost"}]}, "no node named 'ghost'"),
        ({"workloads": [{"name": "w", "state": "terminated"}]}, "exit_code: required"),
        ({"users": [{"name": "u", "rules": [{"verbs": ["get"]}]}]}, "needs non-empty"),
        ({"defaults": {"gpu_count": 99}}, "defaults"),
        ({"nodes": [{"name": "a", "faults": {"exec_garbage": "lots"}}]}, "exec_garbage"),
        ([1, 2], "top level must be a mapping"),
        (
            {
                "nodes": [{"name": "a"}],
                "workloads": [{"name": "w", "node": "a", "visible_gpus": [8]}],
            },
            "workloads[0].visible_gpus: distinct GPU indexes of node a (0..7), got [8]",
        ),
        ({"workloads": [{"name": "w", "gpu_processes": [0]}]}, "the pod has no node, so no GPUs"),
        (
            {
                "nodes": [{"name": "a"}],
                "workloads": [{"name": "w", "node": "a", "gpus": 1, "gpu_processes": [0, 1]}],
            },
            "gpu_processes: more GPUs than the pod's 1",
        ),
        (
            {
                "nodes": [{"name": "a"}],
                "workloads": [
                    {
                        "name": "w",
                        "node": "a",
                        "visible_gpus": [0],
                        "env": {"NVIDIA_VISIBLE_DEVICES": "0"},
                    }
                ],
            },
            "env already sets NVIDIA_VISIBLE_DEVICES",
        ),
    ],
)
def test_bad_scenarios_name_the_problem(doc: object, message: str) -> None:
    with pytest.raises(SimScenarioError) as err:
        parse_scenario(doc)
    assert message in str(err.value)


def test_scenario_files_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("nodes:\n  - name: n1\n    product: T4\n    gpu_count: 4\n")
    assert load_scenario(tmp_path / "s.yaml").nodes[0].product == "T4"
    (tmp_path / "s.json").write_text(json.dumps({"cpu_nodes": 3}))
    assert load_scenario(tmp_path / "s.json").cpu_nodes == 3
    (tmp_path / "bad.yaml").write_text("nodes: [\n")
    with pytest.raises(SimScenarioError, match="invalid YAML"):
        load_scenario(tmp_path / "bad.yaml")
    with pytest.raises(SimScenarioError, match="cannot read scenario"):
        load_scenario(tmp_path / "missing.yaml")


def test_agent_scenario_keeps_xid_wall_clock_times() -> None:
    sc = load_scenario(
        {
            "nodes": [
                {
                    "name": "n",
                    "agent": {"faults": [{"gpu": 0, "kind": "xid", "xid": 13, "ago_s": 100}]},
                }
            ]
        }  # fmt: skip
    )
    cluster = SimCluster(sc, start=1_000_000.0)
    later = cluster.agent_scenario("n", now=1_000_050.0)
    assert later["faults"][0]["ago_s"] == 150.0  # still 100 s before the sim started
    assert later["uptime_s"] == sc.nodes[0].uptime_s + 50
    assert later["node"] == "n" and later["gpu_count"] == 8
    cluster.update_agent("n", disabled_tools=["get_nvlink_topology"])
    assert cluster.agent_scenario("n")["disabled_tools"] == ["get_nvlink_topology"]


@pytest.mark.parametrize(
    ("selector", "labels", "match"),
    [
        ("a=b", {"a": "b"}, True),
        ("a==b,c!=d", {"a": "b", "c": "e"}, True),
        ("a!=b", {}, True),
        ("a in (x, y)", {"a": "y"}, True),
        ("a notin (x,y)", {"a": "y"}, False),
        ("a", {"a": ""}, True),
        ("!a", {"a": ""}, False),
        ("n>3", {"n": "4"}, True),
        ("n<3", {"n": "x"}, False),
        ("nvidia.com/gpu.present=true", {"nvidia.com/gpu.present": "true"}, True),
        ("", {"x": "y"}, True),
    ],
)
def test_label_selectors_match_like_apimachinery(
    selector: str, labels: dict[str, str], match: bool
) -> None:
    assert parse_label_selector(selector).matches(labels) is match


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("-x=y", 'unable to parse requirement: key: Invalid value: "-x"'),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("a=b,", "found '', expected: !, identifier, or 'end of string'"),
        ("a=b=c", "found '=', expected: ',' or 'end of string'"),
        ("a=bad value!", "found 'value'"),
        ("n>x", "the value must be an integer"),
    ],
)
def test_bad_label_selectors(selector: str, message: str) -> None:
    with pytest.raises(SelectorError) as err:
        parse_label_selector(selector)
    assert message in str(err.value)


def test_field_selectors() -> None:
    supported, getter = FIELDS["pods"]
    sel = parse_field_selector("spec.nodeName=n1,status.phase!=Failed", supported)
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    assert sel.matches(getter(pod))
    pod["status"]["phase"] = "Failed"
    assert not sel.matches(getter(pod))
    with pytest.raises(SelectorError, match="field label not supported: spec.bogus"):
        parse_field_selector("spec.bogus=1", supported)
    with pytest.raises(SelectorError, match="can't understand 'nonsense'"):
        parse_field_selector("nonsense", supported)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5s"), (119, "119s"), (150, "2m30s"), (600, "10m"), (3 * 3600 + 60, "3h1m"),
     (9 * 3600, "9h"), (3 * 86400 + 3600, "3d1h"), (40 * 86400, "40d"), (-5, "<invalid>")],
)  # fmt: skip
def test_human_duration_matches_kubectl(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


# Consistency: pods, GPUs and capacity must agree ------------------------------------------


def _cluster(doc: dict[str, object], gpu_nodes: int = 0) -> SimCluster:
    return SimCluster(load_scenario(doc), gpu_nodes)


def test_a_pending_pod_that_a_free_node_would_take_is_refused() -> None:
    doc = {
        "nodes": [{"name": "gpu-node-001", "gpu_count": 8}],
        "workloads": [{"name": "big", "gpus": 8, "phase": "Pending", "state": "waiting"}],
    }
    with pytest.raises(SimScenarioError, match=r"workloads\[0\]: Pending with no node, but "
                       r"gpu-node-001 has room for it"):  # fmt: skip
        _cluster(doc)
    # A generated node is named as such: --nodes must not contradict the scenario.
    doc["nodes"] = [{"name": "gpu-node-001", "gpu_count": 8, "unschedulable": True}]
    _cluster(doc)
    with pytest.raises(SimScenarioError, match=r"generated from `defaults` for --nodes"):
        _cluster(doc, gpu_nodes=3)


def test_more_gpus_allocated_than_a_node_has_is_refused() -> None:
    doc = {
        "nodes": [{"name": "gpu-node-001", "gpu_count": 4}],
        "workloads": [
            {"name": "a", "node": "gpu-node-001", "gpus": 3},
            {"name": "b", "node": "gpu-node-001", "gpus": 2},
            {"name": "done", "node": "gpu-node-001", "gpus": 4, "phase": "Succeeded",
             "state": "terminated", "exit_code": 0},
        ],
    }  # fmt: skip
    with pytest.raises(SimScenarioError, match=r"workloads\[1\]\.gpus: gpu-node-001 would have "
                       r"5 nvidia.com/gpu allocated but has 4"):  # fmt: skip
        _cluster(doc)
    doc["workloads"][1]["gpus"] = 1  # type: ignore[index]
    _cluster(doc)  # finished pods hold nothing


def test_a_placed_pod_must_match_its_node_selector() -> None:
    doc = {
        "nodes": [{"name": "gpu-node-001"}],
        "workloads": [{"name": "a", "node": "gpu-node-001",
                       "node_selector": {"nvidia.com/gpu.product": "NVIDIA-L4"}}],
    }  # fmt: skip
    with pytest.raises(SimScenarioError, match=r"workloads\[0\]\.node_selector: gpu-node-001 "
                       r"does not carry nvidia.com/gpu.product=NVIDIA-L4"):  # fmt: skip
        _cluster(doc)


@pytest.mark.parametrize("gpu_nodes", [12, 50, 300])
def test_the_demo_pending_pod_is_unschedulable_at_any_size(gpu_nodes: int) -> None:
    """The scheduler's message is built from the nodes: every reason counted, as
    kube-scheduler's FitError prints it."""
    cluster = SimCluster(load_scenario(None), gpu_nodes)
    pod = cluster.pod("ml-research", "llm-pretrain-big-0-p4v9c")
    assert pod is not None and "nodeName" not in pod["spec"]
    message = pod["status"]["conditions"][0]["message"]
    total = gpu_nodes + 2
    assert message.startswith(f"0/{total} nodes are available: ")
    assert "2 Insufficient nvidia.com/gpu" in message  # the two A100 nodes: 7 free each
    assert "1 node(s) were unschedulable" in message
    assert "1 node(s) had untolerated taint {nvidia.com/gpu-health: unhealthy}" in message
    assert f"{total - 5} node(s) didn't match Pod's node affinity/selector" in message
    assert message.endswith(
        f"preemption: 0/{total} nodes are available: "
        + ", ".join(sorted(["2 No preemption victims found for incoming pod",
                            f"{total - 2} Preemption is not helpful for scheduling"]))
        + "."
    )  # fmt: skip
    events = [e for e in cluster.events("ml-research") if e["reason"] == "FailedScheduling"]
    assert [e["message"] for e in events] == [message]


def test_a_cluster_without_the_chart_or_the_nvidia_runtime() -> None:
    """What the doctor must diagnose: no DaemonSet, agent pods, release, RuntimeClass."""
    cluster = _cluster({"chart_installed": False, "runtime_classes": []}, gpu_nodes=3)
    assert cluster.agent_pod_name("gpu-node-001") is None
    assert not any(p["metadata"]["namespace"] == "gpu-diagnostics" for p in cluster.pods())
    assert [d["metadata"]["name"] for d in cluster.objects("daemonsets", "apps")] == [
        "nvidia-device-plugin-daemonset"
    ]
    assert cluster.objects("secrets", "") == []
    assert cluster.objects("runtimeclasses", "node.k8s.io") == []
    names = {
        sa["metadata"]["name"] for sa in cluster.objects("serviceaccounts", "", "gpu-diagnostics")
    }
    assert names == {"default"}


def test_a_container_that_never_started_has_the_epoch_as_its_start() -> None:
    """StartError (e.g. the NVIDIA prestart hook failed): the kubelet reports a zero start
    time, which the API server serialises as the Unix epoch."""
    w = {"name": "w", "namespace": "ml", "node": "a", "phase": "Failed", "state": "terminated",
         "exit_code": 128, "reason": "StartError"}  # fmt: skip
    cluster = _cluster({"nodes": [{"name": "a"}], "workloads": [w]})
    pod = cluster.pod("ml", "w")
    assert pod is not None
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["startedAt"] == "1970-01-01T00:00:00Z"
    assert term["finishedAt"] > "2020"


_MIG_NODE = {
    "name": "n-mig",
    "product": "A100-80GB",
    "mig": {"gpu": 0, "profiles": ["1g.10gb", "1g.10gb", "3g.40gb"], "strategy": "mixed"},
}


def _mig_pod(name: str, instance: int, **kw: object) -> dict[str, object]:
    return {
        "name": name,
        "node": "n-mig",
        "gpus": 1,
        "gpu_resource": "nvidia.com/mig-1g.10gb",
        "mig_instance": instance,
        "phase": "Running",
        **kw,
    }


def test_a_mig_slice_the_device_plugin_gave_is_the_agents_mig_device() -> None:
    cluster = _cluster({"nodes": [_MIG_NODE], "workloads": [_mig_pod("a", 2)]})
    (pod,) = [p for p in cluster.pods("default") if p["metadata"]["name"] == "a"]
    (env,) = pod["spec"]["containers"][0]["env"]
    from agent.fake import FakeBackend

    listed = FakeBackend(cluster.agent_scenario("n-mig")).inventory()[0].mig_instances
    assert env == {"name": "NVIDIA_VISIBLE_DEVICES", "value": listed[1].uuid}


@pytest.mark.parametrize(
    ("pods", "message"),
    [
        ([_mig_pod("a", 4)], "n-mig has no MIG GPU instance 4; it has 1, 2, 3"),
        ([_mig_pod("a", 3)], "instance 3 of n-mig is a 3g.40gb slice"),
        ([_mig_pod("a", 1), _mig_pod("b", 1)], "instance 1 of n-mig is already held by default/a"),
        ([_mig_pod("a", 1, gpu_resource="nvidia.com/gpu")], "needs gpus: 1 of a MIG resource"),
    ],
)
def test_bad_mig_slices_name_the_problem(pods: list[dict[str, object]], message: str) -> None:
    with pytest.raises(SimScenarioError, match=re.escape(message)):
        _cluster({"nodes": [_MIG_NODE], "workloads": pods})
