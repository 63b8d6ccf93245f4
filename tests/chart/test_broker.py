"""The optional in-cluster broker: what `helm template` renders with broker.enabled=true."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.helmchart import CI_FILES, NAMESPACE, Chart, by_kind, one
from tests.chart.pod_security import restricted_violations, strictest_level
from tests.chart.test_rbac import broker_role, grants

pytestmark = pytest.mark.needs_helm

CI = {p.name: p for p in CI_FILES}
TEAM = CI["broker-values.yaml"]
SOLO = CI["broker-token-values.yaml"]
NAME = "gpu-mcp-k8s-gpu-mcp-broker"
BROKER_SELECTOR = {
    "app.kubernetes.io/name": "k8s-gpu-mcp",
    "app.kubernetes.io/instance": "gpu-mcp",
    "app.kubernetes.io/component": "broker",
}
AGENT_SELECTOR = {"app.kubernetes.io/name": "k8s-gpu-mcp", "app.kubernetes.io/component": "agent"}
BROKER_KINDS = ("Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor")


def broker_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def broker_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = broker_pod(docs)["containers"]
    assert [c["name"] for c in containers] == ["broker"]
    container: dict[str, Any] = containers[0]
    return container


def flag(args: list[str], name: str) -> list[str]:
    """Every value given to `--name` in an argument list."""
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == name]


def test_off_by_default(chart: Chart) -> None:
    docs = chart.template()
    for kind in BROKER_KINDS:
        assert not by_kind(docs, kind), kind
    names = [d["metadata"]["name"] for d in docs]
    assert not [n for n in names if "broker" in n]


def test_runs_the_http_broker_with_kubernetes_auth(chart: Chart) -> None:
    container = broker_container(chart.template("broker.enabled=true"))
    assert container["command"] == ["broker"]
    args = container["args"]
    assert args[:11] == [
        "serve",
        "--transport",
        "http",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--auth",
        "kubernetes",
        "--metrics-port",
        "9090",
    ]
    assert flag(args, "--namespace") == [NAMESPACE]
    # The Service's DNS names pass the broker's Host check (DNS-rebinding protection).
    assert flag(args, "--allowed-host") == [
        NAME,
        f"{NAME}.{NAMESPACE}",
        f"{NAME}.{NAMESPACE}.svc",
        f"{NAME}.{NAMESPACE}.svc.cluster.local",
    ]
    assert "env" not in container  # no static token in kubernetes mode
    assert container["image"] == "ghcr.io/k8s-gpu-mcp/broker:0.1.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "metrics": 9090}


def test_probes_resources_and_extra_hosts(chart: Chart) -> None:
    container = broker_container(chart.template(values=[TEAM]))
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert set(container["resources"]) == {"requests", "limits"}
    assert "gpu-mcp.example.com" in flag(container["args"], "--allowed-host")
    digest = "sha256:" + "fedcba9876543210" * 4
    assert container["image"] == f"registry.example.com/gpu/broker@{digest}"


def test_broker_pod_is_restricted_and_keeps_its_token(chart: Chart) -> None:
    for values in (TEAM, SOLO):
        pod = broker_pod(chart.template(values=[values]))
        assert restricted_violations(pod) == []
        assert strictest_level(pod) == "restricted"
        sc = pod["containers"][0]["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        # It calls the API server: its token must be mounted (the agent's is not).
        assert pod["automountServiceAccountToken"] is True
        assert pod["serviceAccountName"] == NAME


def test_the_restricted_check_would_catch_a_root_broker(chart: Chart) -> None:
    pod = broker_pod(chart.template(values=[TEAM]))
    rooted = {**pod, "securityContext": {**pod["securityContext"], "runAsUser": 0}}
    assert restricted_violations(rooted)


# --- RBAC of the broker's own ServiceAccount ------------------------------------------

KUBERNETES_AUTH = {
    ("authentication.k8s.io", "tokenreviews", "create"),
    ("", "users", "impersonate"),
    ("", "groups", "impersonate"),
    ("", "serviceaccounts", "impersonate"),
}


def bindings_of(docs: list[dict[str, Any]], account: str) -> list[dict[str, Any]]:
    return [
        b
        for b in [*by_kind(docs, "RoleBinding"), *by_kind(docs, "ClusterRoleBinding")]
        if any(s["kind"] == "ServiceAccount" and s["name"] == account for s in b["subjects"])
    ]


def test_kubernetes_auth_account_may_only_review_tokens_and_impersonate(chart: Chart) -> None:
    docs = chart.template(values=[TEAM])
    role = broker_role(docs)
    assert grants(role) == KUBERNETES_AUTH
    assert "namespace" not in role["metadata"]
    # Bound to the broker's account alone, and the account to nothing else: it reads and
    # execs only as the callers it impersonates.
    (binding,) = bindings_of(docs, NAME)
    assert binding["kind"] == "ClusterRoleBinding"
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    account = next(a for a in by_kind(docs, "ServiceAccount") if a["metadata"]["name"] == NAME)
    assert account["automountServiceAccountToken"] is False  # the pod opts in explicitly


def test_impersonation_can_be_narrowed(chart: Chart) -> None:
    docs = chart.template(
        "broker.enabled=true",
        "broker.impersonation.users={alice@example.com}",
        "broker.impersonation.serviceAccounts=false",
        values=[TEAM],
    )
    rules = {r["resources"][0]: r for r in broker_role(docs)["rules"]}
    assert rules["users"]["resourceNames"] == ["alice@example.com"]
    assert rules["groups"]["resourceNames"] == ["gpu-sre", "system:authenticated"]
    assert "serviceaccounts" not in rules
    assert "resourceNames" not in rules["tokenreviews"]


def test_token_auth_acts_as_its_account_bound_to_the_diagnosis_roles(chart: Chart) -> None:
    docs = chart.template(values=[SOLO])
    container = broker_container(docs)
    assert flag(container["args"], "--auth") == ["token"]
    assert container["env"] == [
        {
            "name": "K8S_GPU_MCP_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "gpu-mcp-broker-token", "key": "token"}},
        }
    ]
    assert not [
        r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"].endswith("-broker")
    ]
    bound_to = {(b["kind"], b["roleRef"]["name"]) for b in bindings_of(docs, NAME)}
    assert bound_to == {
        ("RoleBinding", "gpu-mcp-k8s-gpu-mcp-exec"),
        ("ClusterRoleBinding", f"gpu-mcp-k8s-gpu-mcp-{NAMESPACE}-cluster-read"),
    }
    assert "Nobody is bound" not in chart.notes(values=[SOLO])


def test_token_auth_refuses_to_render_without_its_secret(chart: Chart) -> None:
    error = chart.template_error("broker.enabled=true", "broker.auth.mode=token")
    assert "broker.auth.tokenSecret.name" in error and "create secret generic" in error


# --- Service, NetworkPolicy, PDB, ServiceMonitor --------------------------------------


def test_service_is_cluster_internal_and_sticky(chart: Chart) -> None:
    docs = chart.template(values=[TEAM])
    service = one(docs, "Service")
    assert service["metadata"]["name"] == NAME
    spec = service["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["selector"] == BROKER_SELECTOR
    assert spec["sessionAffinity"] == "ClientIP"
    assert spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] == 10800
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in spec["ports"]}
    assert ports == {"http": (8080, "http"), "metrics": (9090, "metrics")}
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"].items() <= pod_labels.items()


def test_broker_and_agent_pods_never_select_each_other(chart: Chart) -> None:
    docs = chart.template(values=[TEAM])
    broker_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    agent_labels = one(docs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    # The broker discovers agents by AGENT_SELECTOR: its own pods must not match.
    assert not AGENT_SELECTOR.items() <= broker_labels.items()
    assert not BROKER_SELECTOR.items() <= agent_labels.items()
    for policy in by_kind(docs, "NetworkPolicy"):
        selected = policy["spec"]["podSelector"]["matchLabels"].items()
        assert (selected <= broker_labels.items()) != (selected <= agent_labels.items())


def test_broker_pod_template_carries_no_chart_version(chart: Chart) -> None:
    labels = one(chart.template(values=[TEAM]), "Deployment")["spec"]["template"]["metadata"]
    assert "helm.sh/chart" not in labels["labels"]
    assert "app.kubernetes.io/version" not in labels["labels"]


def test_network_policy_admits_only_the_mcp_and_metrics_ports(chart: Chart) -> None:
    docs = chart.template(values=[TEAM])
    policy = next(p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == NAME)
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == BROKER_SELECTOR
    assert spec["policyTypes"] == ["Ingress"]
    http, metrics = spec["ingress"]
    assert http["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert http["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ide-gateway"}}}
    ]
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert metrics["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    # Defaults: the MCP port from anywhere (every request is authenticated).
    default = chart.template("broker.enabled=true")
    policy = next(p for p in by_kind(default, "NetworkPolicy") if p["metadata"]["name"] == NAME)
    assert "from" not in policy["spec"]["ingress"][0]
    # Metrics off, or nobody allowed: no rule for the metrics port at all.
    for sets in (("broker.metrics.enabled=false",), ("broker.networkPolicy.metricsFrom=null",)):
        docs = chart.template("broker.enabled=true", *sets)
        policy = next(p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == NAME)
        assert [r["ports"][0]["port"] for r in policy["spec"]["ingress"]] == ["http"]


def test_disruption_budget_only_with_several_replicas(chart: Chart) -> None:
    assert not by_kind(chart.template("broker.enabled=true"), "PodDisruptionBudget")
    docs = chart.template(values=[TEAM])
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    budget = one(docs, "PodDisruptionBudget")["spec"]
    assert budget == {"maxUnavailable": 1, "selector": {"matchLabels": BROKER_SELECTOR}}
    (spread,) = broker_pod(docs)["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"  # never blocks scheduling
    assert spread["labelSelector"] == {"matchLabels": BROKER_SELECTOR}
    assert "topologySpreadConstraints" not in broker_pod(chart.template("broker.enabled=true"))


def test_service_monitor_scrapes_the_metrics_port(chart: Chart) -> None:
    assert not by_kind(chart.template("broker.enabled=true"), "ServiceMonitor")
    docs = chart.template(values=[TEAM])
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    spec = monitor["spec"]
    assert (
        spec["selector"]["matchLabels"].items()
        <= one(docs, "Service")["metadata"]["labels"].items()
    )
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert spec["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    error = chart.template_error(
        "broker.enabled=true",
        "broker.metrics.enabled=false",
        "broker.metrics.serviceMonitor.enabled=true",
    )
    assert "broker.metrics.enabled=true" in error


def test_metrics_off_drops_the_port_and_the_flag(chart: Chart) -> None:
    docs = chart.template(values=[SOLO])
    assert "--metrics-port" not in broker_container(docs)["args"]
    assert [p["name"] for p in one(docs, "Service")["spec"]["ports"]] == ["http"]


# --- NOTES ---------------------------------------------------------------------------


def test_notes_say_how_to_connect_an_ide(chart: Chart) -> None:
    notes = chart.notes(values=[TEAM])
    assert f"kubectl -n {NAMESPACE} port-forward svc/{NAME} 8080:8080" in notes
    assert "http://localhost:8080/mcp" in notes
    assert "kubectl -n NAMESPACE create token" in notes and "OIDC" in notes
    assert "initialises a new one" in notes  # replicas > 1: what happens to sessions
    solo = chart.notes(values=[SOLO])
    assert "get secret gpu-mcp-broker-token" in solo
    assert "In-cluster broker" not in chart.notes()
