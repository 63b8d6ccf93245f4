"""The simulated API server over raw HTTPS: discovery, lists, selectors, tables, RBAC,
faults, and the Status bodies a real API server sends for bad requests."""

from __future__ import annotations

import asyncio
import calendar
import json
import time

from broker.sim import Rule, SimServer
from broker.sim.objects import AGENT_LABELS
from tests.broker.sim.helpers import Api

AGENT_SELECTOR = "app.kubernetes.io/name=k8s-gpu-mcp,app.kubernetes.io/component=agent"


async def test_discovery_documents(api: Api) -> None:
    status, version, _ = await api.get("/version")
    assert status == 200 and version["gitVersion"] == "v1.33.1" and version["minor"] == "33"
    _, core, _ = await api.get("/api/v1")
    names = {r["name"]: r for r in core["resources"]}
    assert {"nodes", "pods", "events", "namespaces", "pods/exec", "pods/log"} <= set(names)
    assert names["pods/exec"]["verbs"] == ["create", "get"]
    assert names["nodes"]["namespaced"] is False and names["pods"]["namespaced"] is True
    _, groups, _ = await api.get("/apis")
    assert [g["name"] for g in groups["groups"]] == [
        "apps",
        "events.k8s.io",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "batch",
        "coordination.k8s.io",
        "node.k8s.io",
        "discovery.k8s.io",
        "jobset.x-k8s.io",  # CRDs of the training operators: their own versions
        "kubeflow.org",
    ]
    jobset = next(g for g in groups["groups"] if g["name"] == "jobset.x-k8s.io")
    assert jobset["preferredVersion"] == {"groupVersion": "jobset.x-k8s.io/v1alpha2",
                                          "version": "v1alpha2"}  # fmt: skip
    assert "metrics.k8s.io" not in {g["name"] for g in groups["groups"]}  # no metrics-server
    status, body, _ = await api.get("/openapi/v3")
    assert status == 404 and body["reason"] == "NotFound"


async def test_gpu_nodes_carry_feature_discovery_labels_and_capacity(api: Api) -> None:
    status, node, _ = await api.get("/api/v1/nodes/gpu-node-002")
    assert status == 200 and node["kind"] == "Node"
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.present"] == "true"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/gpu.count"] == "8"
    assert labels["nvidia.com/cuda.driver.major"] == "575"
    # The fallen-off-bus GPU was withdrawn by the device plugin.
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "7"
    assert {"key": "nvidia.com/gpu-health", "value": "unhealthy", "effect": "NoSchedule"} in node[
        "spec"
    ]["taints"]
    _, mig, _ = await api.get("/api/v1/nodes/gpu-node-009")
    assert mig["metadata"]["labels"]["nvidia.com/mig.strategy"] == "mixed"
    assert mig["status"]["capacity"]["nvidia.com/mig-1g.10gb"] == "2"
    assert mig["status"]["capacity"]["nvidia.com/gpu"] == "7"
    _, cpu, _ = await api.get("/api/v1/nodes/cpu-node-1")
    assert "nvidia.com/gpu.present" not in cpu["metadata"]["labels"]


async def test_agent_pods_found_by_label_one_per_gpu_node_with_an_agent(api: Api) -> None:
    status, pods, _ = await api.get(
        "/api/v1/namespaces/gpu-diagnostics/pods", params={"labelSelector": AGENT_SELECTOR}
    )
    assert status == 200 and pods["kind"] == "PodList"
    by_node = {p["spec"]["nodeName"]: p for p in pods["items"]}
    assert "gpu-node-006" not in by_node  # the node without an agent pod
    assert len(by_node) == 9
    pending = by_node["gpu-node-005"]
    assert pending["status"]["phase"] == "Pending"
    waiting = pending["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ContainerCreating"
    ready = by_node["gpu-node-001"]
    assert ready["status"]["phase"] == "Running"
    assert all(c["status"] == "True" for c in ready["status"]["conditions"])
    assert ready["metadata"]["labels"].items() >= AGENT_LABELS.items()
    assert "kind" not in ready  # list items carry no TypeMeta, as from a real server


async def test_field_and_label_selectors(api: Api) -> None:
    _, pods, _ = await api.get(
        "/api/v1/pods", params={"fieldSelector": "spec.nodeName=gpu-node-002"}
    )
    names = sorted(p["metadata"]["name"] for p in pods["items"])
    assert "llama3-finetune-x7k2p" in names and all(
        p["spec"]["nodeName"] == "gpu-node-002" for p in pods["items"]
    )
    _, failed, _ = await api.get(
        "/api/v1/pods", params={"fieldSelector": "status.phase=Failed,metadata.namespace!=x"}
    )
    assert {p["metadata"]["name"] for p in failed["items"]} == {
        "llama3-finetune-x7k2p",
        "mixtral-sft-k8d2m",
        "cuda-kernel-dev-r8t5n",
    }
    _, nodes, _ = await api.get(
        "/api/v1/nodes", params={"labelSelector": "nvidia.com/gpu.product in (NVIDIA-L4,Tesla-T4)"}
    )
    assert [n["metadata"]["name"] for n in nodes["items"]] == ["gpu-node-006", "gpu-node-010"]
    _, cpu, _ = await api.get("/api/v1/nodes", params={"labelSelector": "!nvidia.com/gpu.present"})
    assert [n["metadata"]["name"] for n in cpu["items"]] == ["cpu-node-1", "cpu-node-2"]
    _, events, _ = await api.get(
        "/api/v1/namespaces/data-eng/events",
        params={"fieldSelector": "involvedObject.name=data-prep-6c9f7d8b4-h2m9x,type=Warning"},
    )
    assert [e["reason"] for e in events["items"]] == ["BackOff"]


async def test_failed_pods_and_events_line_up_with_the_xid_times(api: Api, sim: SimServer) -> None:
    _, pod, _ = await api.get("/api/v1/namespaces/ml-research/pods/llama3-finetune-x7k2p")
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 1 and term["reason"] == "Error"
    assert "unspecified launch failure" in term["message"]
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    # The agent's XID 79 is 2400 s before start; the pod died 2 s later.
    scenario = sim.cluster.agent_scenario("gpu-node-002", now=sim.cluster.start)
    xid_at = sim.cluster.start - scenario["faults"][0]["ago_s"]
    finished = calendar.timegm(time.strptime(term["finishedAt"], "%Y-%m-%dT%H:%M:%SZ"))
    assert 0 <= finished - xid_at <= 3
    _, oom, _ = await api.get("/api/v1/namespaces/data-eng/pods/data-prep-6c9f7d8b4-h2m9x")
    cs = oom["status"]["containerStatuses"][0]
    assert cs["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert cs["lastState"]["terminated"]["exitCode"] == 137 and cs["restartCount"] == 4
    _, done, _ = await api.get("/api/v1/namespaces/ml-research/pods/eval-nightly-29409120-4kq8z")
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    _, events, _ = await api.get(
        "/api/v1/namespaces/ml-research/events",
        params={"fieldSelector": "involvedObject.name=llama3-finetune-x7k2p"},
    )
    assert [e["reason"] for e in events["items"]].count("Started") == 1
    status, log, _ = await api.get(
        "/api/v1/namespaces/ml-research/pods/llama3-finetune-x7k2p/log",
        params={"tailLines": "1"},
        accept="*/*",
    )
    assert status == 200 and log.startswith("E0000") and log.count("\n") == 1


async def test_table_output_for_kubectl_get(api: Api) -> None:
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    status, table, _ = await api.get("/api/v1/pods", accept=accept)
    assert status == 200 and table["kind"] == "Table"
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns[:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    rows = {r["cells"][0]: r for r in table["rows"]}
    assert rows["data-prep-6c9f7d8b4-h2m9x"]["cells"][2] == "CrashLoopBackOff"
    assert rows["data-prep-6c9f7d8b4-h2m9x"]["cells"][3].startswith("4 (")
    assert rows["llama3-finetune-x7k2p"]["cells"][1:3] == ["0/1", "Error"]
    meta = rows["llama3-finetune-x7k2p"]["object"]
    assert (
        meta["kind"] == "PartialObjectMetadata" and meta["metadata"]["namespace"] == "ml-research"
    )
    _, nodes, _ = await api.get("/api/v1/nodes/gpu-node-010", accept=accept)
    assert nodes["rows"][0]["cells"][1] == "Ready,SchedulingDisabled"


async def test_pagination_with_limit_and_continue(api: Api) -> None:
    _, first, _ = await api.get("/api/v1/nodes", params={"limit": "5"})
    assert len(first["items"]) == 5 and first["metadata"]["remainingItemCount"] == 7
    _, rest, _ = await api.get(
        "/api/v1/nodes", params={"limit": "100", "continue": first["metadata"]["continue"]}
    )
    names = [n["metadata"]["name"] for n in first["items"] + rest["items"]]
    assert len(names) == len(set(names)) == 12 and "continue" not in rest["metadata"]


async def test_bad_requests_get_real_status_bodies(api: Api) -> None:
    status, body, _ = await api.get("/api/v1/namespaces/gpu-diagnostics/pods/nope")
    assert status == 404
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "kind": "pods"},
        "code": 404,
    }
    status, body, _ = await api.get("/api/v1/pods", params={"labelSelector": "app in (a"})
    assert status == 400 and body["reason"] == "BadRequest"
    assert body["message"].startswith("unable to parse requirement")
    status, body, _ = await api.get("/api/v1/pods", params={"labelSelector": "-bad=x"})
    assert status == 400 and "invalid" in body["message"].lower()
    status, body, _ = await api.get("/api/v1/pods", params={"fieldSelector": "spec.foo=bar"})
    assert (status, body["message"]) == (400, "field label not supported: spec.foo")
    status, body, _ = await api.get("/api/v1/nodes", token=None)
    assert status == 401
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    status, body, _ = await api.get("/api/v1/nodes", token="not-a-token")
    assert status == 401
    status, body, _ = await api.get("/apis/apps/v1/controllerrevisions")
    assert status == 404 and body["message"] == "the server could not find the requested resource"
    status, body, _ = await api.request("DELETE", "/api/v1/nodes/gpu-node-001")
    assert status == 405 and body["reason"] == "MethodNotAllowed"


async def test_rbac_denial_names_the_permission(api: Api, sim: SimServer) -> None:
    viewer = sim.user_token("viewer")
    path = "/api/v1/namespaces/gpu-diagnostics/pods/x/exec"
    status, body, _ = await api.request("POST", path, token=viewer, params={"command": "gpu-agent"})
    assert status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == (
        'pods "x" is forbidden: User "viewer" cannot create resource "pods/exec" in API group "" '
        'in the namespace "gpu-diagnostics"'
    )
    assert body["details"] == {"name": "x", "kind": "pods"}
    sim.add_user("nobody", rules=[Rule(verbs=("get",), resources=("pods",), namespaces=("a",))])
    status, body, _ = await api.get("/api/v1/nodes", token=sim.user_token("nobody"))
    assert status == 403 and body["message"] == (
        'nodes is forbidden: User "nobody" cannot list resource "nodes" in API group "" '
        "at the cluster scope"
    )


async def test_self_subject_access_review_json(api: Api, sim: SimServer) -> None:
    def review(sub: str) -> dict[str, object]:
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "spec": {
                "resourceAttributes": {
                    "namespace": "gpu-diagnostics",
                    "verb": "create",
                    "resource": "pods",
                    "subresource": sub,
                }
            },
        }

    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    status, body, _ = await api.request("POST", path, body=review("exec"))
    assert status == 201 and body["status"]["allowed"] is True
    sre = sim.user_token("sre")
    _, body, _ = await api.request("POST", path, body=review("exec"), token=sre)
    assert body["status"]["allowed"] is True
    _, body, _ = await api.request("POST", path, body=review(""), token=sre)
    assert body["status"]["allowed"] is False  # sre may exec, not create pods
    status, body, _ = await api.request("POST", path, body={"spec": {}})
    assert status == 422 and body["reason"] == "Invalid"


async def test_injected_api_faults(api: Api, sim: SimServer) -> None:
    faults = sim.faults("gpu-node-003")
    faults.api_429, faults.retry_after_s = 2, 3
    path = "/api/v1/nodes/gpu-node-003"
    for _ in range(2):
        status, body, headers = await api.get(path)
        assert status == 429 and headers["Retry-After"] == "3"
        assert body["reason"] == "TooManyRequests"
        assert body["details"] == {"retryAfterSeconds": 3}
    status, _, _ = await api.get(path)
    assert status == 200  # the counter ran out
    faults.api_500 = -1
    for _ in range(3):
        status, body, _ = await api.get(path)
        assert status == 500 and body["reason"] == "InternalError"
    # Only that node's requests fail; lists are about no single node.
    status, _, _ = await api.get("/api/v1/nodes/gpu-node-001")
    assert status == 200
    status, _, _ = await api.get(
        "/api/v1/pods", params={"fieldSelector": "spec.nodeName=gpu-node-003"}
    )
    assert status == 500  # a list pinned to the node is about the node
    faults.api_500 = 0
    faults.api_latency_s = 0.3
    t0 = time.monotonic()
    status, _, _ = await api.get(path)
    assert status == 200 and time.monotonic() - t0 >= 0.3
    sim.faults().api_429 = 1
    status, _, _ = await api.get("/api/v1/nodes")
    assert status == 429


async def test_agent_pod_state_changes_at_runtime(api: Api, sim: SimServer) -> None:
    name = sim.agent_pod("gpu-node-001")
    assert name is not None
    sim.set_agent_pod("gpu-node-001", "not_ready")
    _, pod, _ = await api.get(f"/api/v1/namespaces/gpu-diagnostics/pods/{name}")
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert pod["status"]["phase"] == "Running" and ready["status"] == "False"
    sim.set_agent_pod("gpu-node-001", "crashloop")
    _, events, _ = await api.get(
        "/api/v1/namespaces/gpu-diagnostics/events",
        params={"fieldSelector": f"involvedObject.name={name}"},
    )
    assert [e["reason"] for e in events["items"]] == ["BackOff"]
    sim.set_agent_pod("gpu-node-001", "missing")
    status, _, _ = await api.get(f"/api/v1/namespaces/gpu-diagnostics/pods/{name}")
    assert status == 404 and sim.agent_pod("gpu-node-001") is None


async def test_watch_streams_current_objects_then_times_out(api: Api) -> None:
    t0 = time.monotonic()
    status, body, _ = await asyncio.wait_for(
        api.get("/api/v1/nodes", params={"watch": "1", "timeoutSeconds": "1"}), 10
    )
    assert status == 200 and time.monotonic() - t0 >= 1
    events = [line for line in body.splitlines() if line] if isinstance(body, str) else [body]
    assert len(events) == 12 and all('"type":"ADDED"' in e for e in events)


async def test_grouped_kinds_list_get_watch_and_refuse_like_the_api_server(api: Api) -> None:
    status, body, _ = await api.get("/apis/apps/v1/namespaces/gpu-diagnostics/daemonsets")
    assert status == 200 and body["kind"] == "DaemonSetList" and body["apiVersion"] == "apps/v1"
    (ds,) = body["items"]
    assert ds["status"]["desiredNumberScheduled"] == 9 and ds["status"]["numberReady"] == 8
    status, body, _ = await api.get("/apis/batch/v1/namespaces/ml-research/jobs/nope")
    assert status == 404 and body["message"] == 'jobs.batch "nope" not found'
    assert body["details"] == {"name": "nope", "group": "batch", "kind": "jobs"}
    status, _, _ = await api.get("/apis/node.k8s.io/v1/namespaces/default/runtimeclasses")
    assert status == 404  # a cluster-scoped kind has no namespaced path
    status, body, _ = await api.get(
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        params={"fieldSelector": "metadata.name=gpu-node-003"},
    )
    assert [lease["metadata"]["name"] for lease in body["items"]] == ["gpu-node-003"]
    status, body, _ = await api.get(
        "/apis/apps/v1/daemonsets", params={"watch": "1", "timeoutSeconds": "1"}
    )
    events = [json.loads(line) for line in body.splitlines()] if isinstance(body, str) else [body]
    assert status == 200 and {e["type"] for e in events} == {"ADDED"} and len(events) == 2
    status, body, _ = await api.get("/apis/apps/v1/daemonsets", token=api.sim.user_token("sre"))
    assert status == 403 and body["message"] == (
        'daemonsets.apps is forbidden: User "sre" cannot list resource "daemonsets" in API '
        'group "apps" at the cluster scope'
    )
