"""RBAC grants exactly what the broker uses: exec in this namespace, read-only cluster view."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.chart.helmchart import CI_FILES, NAMESPACE, Chart, by_kind, one, pod_spec

pytestmark = pytest.mark.needs_helm

FULL = next(p for p in CI_FILES if p.name == "full-values.yaml")


def grants(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) a role allows, flattened."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_exec_role_is_namespaced_and_exact(chart: Chart) -> None:
    role = one(chart.template(), "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert grants(role) == {
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        # create: SPDY exec, and WebSocket exec from 1.35; get: WebSocket exec before that.
        ("", "pods/exec", "create"),
        ("", "pods/exec", "get"),
        ("apps", "daemonsets", "get"),  # broker doctor: the chart's DaemonSet
        ("apps", "daemonsets", "list"),
    }
    assert all("resourceNames" not in rule for rule in role["rules"])


def test_cluster_role_is_read_only_and_exact(chart: Chart) -> None:
    role = one(chart.template(), "ClusterRole")
    assert "namespace" not in role["metadata"]
    assert grants(role) == {
        (group, resource, verb)
        for group, resource in (("", "nodes"), ("", "pods"), ("", "events"),
                                ("node.k8s.io", "runtimeclasses"))
        for verb in ("get", "list")
    } | {("", "namespaces", "get")}  # fmt: skip
    (own_namespace,) = [r for r in role["rules"] if "namespaces" in r["resources"]]
    assert own_namespace["resourceNames"] == [NAMESPACE]


# --- pod reads: cluster-wide (default) or per listed namespace -----------------------

NAMESPACED = next(p for p in CI_FILES if p.name == "namespaced-reads-values.yaml")


def test_namespaced_pod_reads_keep_pods_out_of_the_cluster_role(chart: Chart) -> None:
    docs = chart.template(values=[NAMESPACED])
    cluster = one(docs, "ClusterRole")
    assert grants(cluster) == {
        (group, resource, verb)
        for group, resource in (("", "nodes"), ("", "events"), ("node.k8s.io", "runtimeclasses"))
        for verb in ("get", "list")
    } | {("", "namespaces", "get")}
    exec_role, *readers = sorted(by_kind(docs, "Role"), key=lambda r: r["metadata"]["name"])
    assert exec_role["metadata"]["namespace"] == NAMESPACE
    assert grants(exec_role) >= {("", "pods", "get"), ("", "pods", "list")}
    assert sorted(r["metadata"]["namespace"] for r in readers) == ["inference", "ml-research"]
    for reader in readers:
        assert grants(reader) == {("", "pods", "get"), ("", "pods", "list")}
        assert reader["metadata"]["name"] == f"gpu-mcp-k8s-gpu-mcp-{NAMESPACE}-pod-read"


def test_namespaced_pod_reads_are_bound_to_the_subjects_in_each_namespace(
    chart: Chart,
) -> None:
    docs = chart.template(values=[NAMESPACED])
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in by_kind(docs, "Role")}
    bindings = by_kind(docs, "RoleBinding")
    bound = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings}
    assert bound == roles
    group = {"kind": "Group", "name": "gpu-sre", "apiGroup": "rbac.authorization.k8s.io"}
    assert all(b["subjects"] == [group] for b in bindings)
    unbound = chart.template("rbac.subjects=null", values=[NAMESPACED])
    assert len(by_kind(unbound, "Role")) == 3 and not by_kind(unbound, "RoleBinding")


def test_pod_read_roles_of_two_releases_do_not_collide(chart: Chart) -> None:
    here = by_kind(chart.template(values=[NAMESPACED]), "Role")
    there = by_kind(chart.template(values=[NAMESPACED], namespace="other"), "Role")
    in_ml = [r["metadata"]["name"] for r in [*here, *there]
             if r["metadata"]["namespace"] == "ml-research"]  # fmt: skip
    assert len(in_ml) == 2 and len(set(in_ml)) == 2


def test_pod_read_namespaces_need_cluster_wide_reads_off(chart: Chart) -> None:
    error = chart.template_error("rbac.podReadNamespaces={ml-research}")
    assert "rbac.clusterWidePodReads=false" in error
    only_here = chart.template("rbac.clusterWidePodReads=false")
    assert [r["metadata"]["namespace"] for r in by_kind(only_here, "Role")] == [NAMESPACE]


def test_cluster_scoped_names_do_not_collide_across_namespaces(chart: Chart) -> None:
    here = chart.template(values=[FULL])
    there = chart.template(values=[FULL], namespace="other")
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        assert one(here, kind)["metadata"]["name"] != one(there, kind)["metadata"]["name"]
    assert one(there, "Role")["metadata"]["namespace"] == "other"
    assert one(there, "RoleBinding")["subjects"][2]["namespace"] == "other"


def test_no_bindings_unless_subjects_are_given(chart: Chart) -> None:
    docs = chart.template()
    assert not by_kind(docs, "RoleBinding") and not by_kind(docs, "ClusterRoleBinding")


def test_bindings_bind_the_given_subjects_to_both_roles(chart: Chart) -> None:
    docs = chart.template(values=[FULL])
    role, cluster_role = one(docs, "Role"), one(docs, "ClusterRole")
    binding, cluster_binding = one(docs, "RoleBinding"), one(docs, "ClusterRoleBinding")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert cluster_binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": cluster_role["metadata"]["name"],
    }
    expected = [
        {"kind": "Group", "name": "gpu-sre", "apiGroup": "rbac.authorization.k8s.io"},
        {"kind": "User", "name": "alice@example.com", "apiGroup": "rbac.authorization.k8s.io"},
        {"kind": "ServiceAccount", "name": "broker", "namespace": NAMESPACE},
    ]
    assert binding["subjects"] == expected
    assert cluster_binding["subjects"] == expected


def test_service_account_subject_keeps_its_own_namespace(chart: Chart) -> None:
    docs = chart.template(
        "rbac.subjects[0].kind=ServiceAccount",
        "rbac.subjects[0].name=mcp-broker",
        "rbac.subjects[0].namespace=platform",
    )
    subject = one(docs, "ClusterRoleBinding")["subjects"][0]
    assert subject == {"kind": "ServiceAccount", "name": "mcp-broker", "namespace": "platform"}


def test_agent_service_account_is_bound_to_nothing(chart: Chart) -> None:
    docs = chart.template(values=[FULL])
    agent_sa = pod_spec(docs)["serviceAccountName"]
    for binding in [*by_kind(docs, "RoleBinding"), *by_kind(docs, "ClusterRoleBinding")]:
        assert all(s["name"] != agent_sa for s in binding["subjects"])


def test_rbac_can_be_left_to_the_cluster_admin(chart: Chart) -> None:
    docs = chart.template("rbac.create=false", values=[FULL])
    for kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
        assert not by_kind(docs, kind), kind


# --- the grants match what the broker actually calls --------------------------------

BROKER = Path(__file__).resolve().parents[2] / "broker"
# Each kubernetes_asyncio API method the broker may call -> the RBAC it needs, and where:
# "namespace" (only in the chart's namespace: the Role) or "cluster" (any namespace or
# cluster-scoped: the ClusterRole). A method missing here fails the test below: map it
# and grant it (or put it behind a values switch) deliberately.
NEEDS: dict[str, tuple[str, set[tuple[str, str, str]]]] = {
    "read_node": ("cluster", {("", "nodes", "get")}),
    "list_node": ("cluster", {("", "nodes", "list")}),
    "read_namespaced_pod": ("cluster", {("", "pods", "get")}),
    "list_namespaced_pod": ("cluster", {("", "pods", "list")}),
    "list_pod_for_all_namespaces": ("cluster", {("", "pods", "list")}),
    "list_namespaced_event": ("cluster", {("", "events", "list")}),
    "list_event_for_all_namespaces": ("cluster", {("", "events", "list")}),
    # WebSocket exec is a GET upgrade: authorised as get, and from 1.35 as create too.
    "connect_get_namespaced_pod_exec": (
        "namespace",
        {("", "pods/exec", "get"), ("", "pods/exec", "create")},
    ),
    "connect_post_namespaced_pod_exec": ("namespace", {("", "pods/exec", "create")}),
    # The in-cluster broker's own calls (broker.auth.mode=kubernetes): its ClusterRole.
    "create_token_review": ("broker", {("authentication.k8s.io", "tokenreviews", "create")}),
    # Every authenticated user may ask about themselves (system:basic-user) and read
    # /version (system:public-info-viewer): no grant.
    "create_self_subject_access_review": ("anyone", set()),
    "create_self_subject_rules_review": ("anyone", set()),
    "get_code": ("anyone", set()),
    # broker doctor: the chart's DaemonSet, the RuntimeClass, its namespace's labels.
    "list_namespaced_daemon_set": ("namespace", {("apps", "daemonsets", "list")}),
    "list_runtime_class": ("cluster", {("node.k8s.io", "runtimeclasses", "list")}),
    "read_namespace": ("cluster", {("", "namespaces", "get")}),
    # Its fallback when the chart is not in -n: look in every namespace. Not granted (a
    # cluster-wide read of every DaemonSet's spec); the doctor says it could not look.
    "list_daemon_set_for_all_namespaces": ("optional", {("apps", "daemonsets", "list")}),
}
# Impersonation is headers on ordinary requests, not an API method: found by text.
IMPERSONATES: dict[str, set[tuple[str, str, str]]] = {
    "impersonate-user": {("", "users", "impersonate")},
    "impersonate-group": {("", "groups", "impersonate")},
    "impersonate-uid": {("authentication.k8s.io", "uids", "impersonate")},
    "impersonate-extra-": {("authentication.k8s.io", "userextras", "impersonate")},
}


def broker_sources() -> list[str]:
    """The text of every broker module outside the simulator."""
    return [
        path.read_text()
        for path in sorted(BROKER.rglob("*.py"))
        if "sim" not in path.relative_to(BROKER).parts
    ]


def broker_api_calls() -> tuple[set[str], set[str]]:
    """(Kubernetes API methods named in broker/ outside the simulator, API classes used)."""
    from kubernetes_asyncio import client

    apis = {n for n in dir(client) if n.endswith("Api") and n[:1].isupper()}
    methods = {m for a in apis for m in dir(getattr(client, a)) if not m.startswith("_")}
    words: set[str] = set()
    for text in broker_sources():
        words |= set(re.findall(r"\b[A-Za-z_]\w*\b", text))
    return words & methods, words & apis


def broker_own_needs() -> set[tuple[str, str, str]]:
    """What the in-cluster broker does as itself: TokenReview and impersonation."""
    calls, _ = broker_api_calls()
    needs = {g for m in calls if NEEDS.get(m, ("", set()))[0] == "broker" for g in NEEDS[m][1]}
    text = "\n".join(broker_sources()).lower()
    if "tokenreviews" in text:  # a TokenReview POSTed without the generated client
        needs.add(("authentication.k8s.io", "tokenreviews", "create"))
    for header, grant in IMPERSONATES.items():
        if header in text:
            needs |= grant
    return needs


def test_rbac_grants_what_the_broker_reads_and_nothing_it_does_not(chart: Chart) -> None:
    calls, api_classes = broker_api_calls()
    assert calls, "found no Kubernetes API calls in broker/: is the scan broken?"
    # Reads from the core API group only (events are core/v1 Events, not events.k8s.io);
    # the in-cluster broker also authenticates callers.
    assert api_classes <= {
        "CoreV1Api", "AuthenticationV1Api", "AuthorizationV1Api",
        "AppsV1Api", "NodeV1Api", "VersionApi",  # broker doctor
    }, api_classes  # fmt: skip
    unmapped = calls - NEEDS.keys()
    assert not unmapped, f"broker calls {sorted(unmapped)}: add the RBAC they need"
    docs = chart.template()
    role, cluster = grants(one(docs, "Role")), grants(one(docs, "ClusterRole"))
    calls = {m for m in calls if NEEDS[m][0] in ("namespace", "cluster")}
    for method in sorted(calls):
        scope, needed = NEEDS[method]
        have = cluster if scope == "cluster" else role | cluster
        assert needed <= have, f"{method} needs {sorted(needed - have)}"
    used = {grant for method in calls for grant in NEEDS[method][1]}
    # Every resource the ClusterRole names is read by the broker; verbs stay get/list.
    assert {r for _, r, _ in cluster} == {
        r for _, r, _ in used if r not in ("pods/exec", "daemonsets")
    }
    assert {v for _, _, v in cluster} <= {"get", "list"}


def test_namespaced_pod_reads_grant_every_broker_pod_read_in_those_namespaces(
    chart: Chart,
) -> None:
    """With clusterWidePodReads=false, the broker's pod reads work in the listed
    namespaces; only its all-namespaces pod list is left out (answers say so)."""
    calls, _ = broker_api_calls()
    docs = chart.template(values=[NAMESPACED])
    cluster = grants(one(docs, "ClusterRole"))
    in_namespace = {r["metadata"]["namespace"]: grants(r) | cluster for r in by_kind(docs, "Role")}
    cluster_wide_only = {"list_pod_for_all_namespaces", "list_daemon_set_for_all_namespaces"}
    # The broker's own calls (TokenReview) and self-reviews are not diagnosis reads.
    reads = {m for m in calls if NEEDS[m][0] in ("namespace", "cluster")}
    for method in sorted(reads - cluster_wide_only):
        needed = NEEDS[method][1]
        if any(resource == "pods" for _, resource, _ in needed):
            for namespace, have in in_namespace.items():
                assert needed <= have, f"{method} in {namespace} needs {needed - have}"
        else:
            scope = NEEDS[method][0]
            have = cluster if scope == "cluster" else in_namespace[NAMESPACE]
            assert needed <= have, f"{method} needs {sorted(needed - have)}"
    assert ("", "pods", "list") not in cluster


def broker_role(docs: list[dict[str, Any]]) -> dict[str, Any]:
    roles = [r for r in by_kind(docs, "ClusterRole") if r["metadata"]["name"].endswith("-broker")]
    assert len(roles) == 1, [r["metadata"]["name"] for r in by_kind(docs, "ClusterRole")]
    return roles[0]


def test_the_broker_account_grants_what_the_broker_does_as_itself(chart: Chart) -> None:
    """Whatever the broker code does as itself (TokenReview, impersonation headers) is
    granted to its ServiceAccount; and once it does any, nothing else is."""
    needs = broker_own_needs()
    granted = grants(broker_role(chart.template("broker.enabled=true")))
    assert needs <= granted, (
        f"the broker needs {sorted(needs - granted)}: grant it in broker-rbac.yaml"
    )
    if needs:
        # serviceaccounts: impersonating system:serviceaccount:NS:NAME is authorised on it.
        implied = (
            {("", "serviceaccounts", "impersonate")}
            if ("", "users", "impersonate") in needs
            else set()
        )
        assert granted <= needs | implied, (
            f"granted but unused: {sorted(granted - needs - implied)}"
        )
