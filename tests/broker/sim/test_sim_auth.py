"""TokenReview, SubjectAccessReview, impersonation and group RBAC in the simulated API
server: the shapes and messages a real API server answers with, and the audit record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.sim import Rule, SimScenarioError, SimServer, start_sim
from broker.sim.auth import Attributes
from tests.broker.sim.helpers import Api, Kubectl

NS = "gpu-diagnostics"
BROKER_SA = "system:serviceaccount:gpu-diagnostics:gpu-mcp-broker"
TOKENREVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
SARS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
EXEC = f"/api/v1/namespaces/{NS}/pods/x/exec"

BROKER_RULES = [
    Rule(verbs=("create",), resources=("tokenreviews",), api_groups=("authentication.k8s.io",)),
    Rule(verbs=("impersonate",), resources=("users", "groups", "serviceaccounts"),
         api_groups=("",)),
]  # fmt: skip


def add_broker(sim: SimServer, rules: list[Rule] | None = None) -> str:
    sim.add_user(BROKER_SA, rules=BROKER_RULES if rules is None else rules)
    return sim.user_token(BROKER_SA)


async def send(
    api: Api, method: str, path: str, token: str, headers: list[tuple[str, str]] = (), **kw: Any
) -> tuple[int, Any]:
    """A request with (repeatable) extra headers, e.g. several Impersonate-Group."""
    import json

    from multidict import CIMultiDict

    all_headers = CIMultiDict([("Authorization", f"Bearer {token}"), *headers])
    if "body" in kw:
        all_headers["Content-Type"] = "application/json"
        kw["data"] = json.dumps(kw.pop("body")).encode()
    async with api.session.request(method, api.sim.url + path, headers=all_headers, **kw) as r:
        return r.status, await r.json(content_type=None)


def token_review(token: str, audiences: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"token": token}
    if audiences is not None:
        spec["audiences"] = audiences
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}


async def test_token_review_names_the_user_or_says_not_authenticated(
    api: Api, sim: SimServer
) -> None:
    broker = add_broker(sim)
    sim.add_user("alice", groups=["gpu-sre"])
    status, body = await send(api, "POST", TOKENREVIEWS, broker,
                              body=token_review(sim.user_token("alice")))  # fmt: skip
    assert status == 201 and body["kind"] == "TokenReview"
    assert body["apiVersion"] == "authentication.k8s.io/v1"
    result = body["status"]
    assert result["authenticated"] is True
    assert result["user"]["username"] == "alice"
    assert result["user"]["groups"] == ["gpu-sre", "system:authenticated"]
    assert result["audiences"] == ["https://kubernetes.default.svc.cluster.local"]

    status, body = await send(api, "POST", TOKENREVIEWS, broker, body=token_review("forged"))
    assert status == 201
    assert "authenticated" not in body["status"] and body["status"]["user"] == {}
    assert "invalid bearer token" in body["status"]["error"]
    wrong_audience = token_review(sim.user_token("alice"), ["https://elsewhere"])
    _, body = await send(api, "POST", TOKENREVIEWS, broker, body=wrong_audience)
    assert "authenticated" not in body["status"]

    status, body = await send(api, "POST", TOKENREVIEWS, broker, body={"spec": {}})
    assert status == 422 and body["reason"] == "Invalid"
    status, body = await send(api, "POST", TOKENREVIEWS, sim.user_token("viewer"),
                              body=token_review("x"))  # fmt: skip
    assert status == 403 and body["message"] == (
        'tokenreviews.authentication.k8s.io is forbidden: User "viewer" cannot create '
        'resource "tokenreviews" in API group "authentication.k8s.io" at the cluster scope'
    )


async def test_subject_access_review_evaluates_user_and_groups(api: Api, sim: SimServer) -> None:
    sim.bind_group("gpu-sre", [Rule(verbs=("create",), resources=("pods/exec",),
                                    api_groups=("",), namespaces=(NS,))])  # fmt: skip

    def review(user: str, groups: list[str]) -> dict[str, Any]:
        attrs = {"namespace": NS, "verb": "create", "resource": "pods", "subresource": "exec"}
        spec = {"user": user, "groups": groups, "resourceAttributes": attrs}
        return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": spec}  # fmt: skip

    admin = sim.token
    status, body = await send(api, "POST", SARS, admin, body=review("sre", []))
    assert status == 201 and body["status"]["allowed"] is True
    assert body["kind"] == "SubjectAccessReview"
    _, body = await send(api, "POST", SARS, admin, body=review("viewer", []))
    assert body["status"] == {"allowed": False}
    _, body = await send(api, "POST", SARS, admin, body=review("carol", ["gpu-sre"]))
    assert body["status"]["allowed"] is True
    assert body["status"]["reason"] == 'RBAC: allowed by RoleBinding "sim-group-gpu-sre"'
    status, body = await send(api, "POST", SARS, admin, body=review("", []))
    assert status == 422 and "at least one of user or group" in body["message"]
    status, body = await send(api, "POST", SARS, sim.user_token("viewer"),
                              body=review("sre", []))  # fmt: skip
    assert status == 403 and 'cannot create resource "subjectaccessreviews"' in body["message"]


async def test_impersonation_is_authorised_then_the_request_runs_as_the_user(
    api: Api, sim: SimServer
) -> None:
    broker = add_broker(sim)
    sim.bind_group("gpu-sre", [Rule(verbs=("list",), resources=("nodes",), api_groups=("",))])
    as_viewer = [("Impersonate-User", "viewer")]
    status, body = await send(api, "GET", f"/api/v1/namespaces/{NS}/pods", broker, as_viewer)
    assert status == 200 and body["kind"] == "PodList"
    status, body = await send(api, "POST", EXEC, broker, as_viewer,
                              params={"command": "gpu-agent"})  # fmt: skip
    assert status == 403 and body["message"] == (
        'pods "x" is forbidden: User "viewer" cannot create resource "pods/exec" in API '
        f'group "" in the namespace "{NS}"'
    )
    # A user with no rules of their own, allowed through a group the broker passes on:
    # every Impersonate-Group header counts.
    carol = [("Impersonate-User", "carol"), ("Impersonate-Group", "staff"),
             ("Impersonate-Group", "gpu-sre")]  # fmt: skip
    status, _ = await send(api, "GET", "/api/v1/nodes", broker, carol)
    assert status == 200
    status, body = await send(api, "GET", "/api/v1/nodes", broker, carol[:2])
    assert status == 403 and 'User "carol" cannot list resource "nodes"' in body["message"]

    runs = [e for e in sim.audit if e.impersonated_by == BROKER_SA]
    assert [(e.user, e.method, e.status) for e in runs] == [
        ("viewer", "GET", 200), ("viewer", "POST", 403), ("carol", "GET", 200),
        ("carol", "GET", 403),
    ]  # fmt: skip
    assert runs[2].groups == ("staff", "gpu-sre", "system:authenticated")
    assert runs[0].groups == ("system:authenticated",)


async def test_impersonation_refusals_are_the_api_servers(api: Api, sim: SimServer) -> None:
    mere = add_broker(sim, rules=[])
    status, body = await send(api, "GET", "/api/v1/nodes", mere, [("Impersonate-User", "alice")])
    assert status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == (
        f'users "alice" is forbidden: User "{BROKER_SA}" cannot impersonate resource "users" '
        'in API group "" at the cluster scope'
    )
    assert body["details"] == {"name": "alice", "kind": "users"}

    only_alice = [
        Rule(verbs=("impersonate",), resources=("users",), api_groups=("",),
             resource_names=("alice",)),
        Rule(verbs=("impersonate",), resources=("groups",), api_groups=("",),
             resource_names=("system:authenticated",)),
    ]  # fmt: skip
    broker = add_broker(sim, rules=only_alice)
    status, _ = await send(api, "GET", "/version", broker, [("Impersonate-User", "alice"),
                           ("Impersonate-Group", "system:authenticated")])  # fmt: skip
    assert status == 200
    status, body = await send(api, "GET", "/version", broker, [("Impersonate-User", "bob")])
    assert status == 403 and body["details"]["name"] == "bob"
    status, body = await send(api, "GET", "/version", broker, [("Impersonate-User", "alice"),
                              ("Impersonate-Group", "system:masters")])  # fmt: skip
    assert status == 403 and body["message"].startswith('groups "system:masters" is forbidden')
    status, body = await send(api, "GET", "/version", broker, [("Impersonate-User", "alice"),
                              ("Impersonate-Uid", "1234")])  # fmt: skip
    assert status == 403 and body["message"] == (
        f'uids.authentication.k8s.io "1234" is forbidden: User "{BROKER_SA}" cannot '
        'impersonate resource "uids" in API group "authentication.k8s.io" at the cluster scope'
    )
    status, body = await send(api, "GET", "/version", broker,
                              [("Impersonate-Group", "system:authenticated")])  # fmt: skip
    assert status == 500 and "without impersonating a user" in body["message"]
    sa = [("Impersonate-User", "system:serviceaccount:ml:trainer")]
    status, body = await send(api, "GET", "/version", broker, sa)
    assert status == 403 and body["message"] == (
        f'serviceaccounts "trainer" is forbidden: User "{BROKER_SA}" cannot impersonate '
        'resource "serviceaccounts" in API group "" in the namespace "ml"'
    )


@pytest.mark.needs_kubectl
def test_kubectl_as_and_as_group_go_through_impersonation(
    run_kubectl: Kubectl, threaded_sim: SimServer
) -> None:
    threaded_sim.add_user("impersonator", rules=BROKER_RULES)
    threaded_sim.bind_group("gpu-sre", [Rule(verbs=("get", "list"), resources=("nodes",),
                                             api_groups=("",))])  # fmt: skip
    ctx = "sim-impersonator"
    ok = run_kubectl("get", "nodes", "-o", "name", "--as", "dave", "--as-group", "gpu-sre",
                     context=ctx)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "node/" in ok.stdout
    denied = run_kubectl("get", "nodes", "--as", "dave", context=ctx)
    assert denied.returncode == 1
    assert 'User "dave" cannot list resource "nodes"' in denied.stderr
    mere = run_kubectl("get", "nodes", "--as", "dave", context="sim-viewer")
    assert 'users "dave" is forbidden: User "viewer" cannot impersonate resource "users"' in (
        mere.stderr
    )
    can = run_kubectl("auth", "can-i", "list", "nodes", "--as", "dave", "--as-group", "gpu-sre",
                      context=ctx)  # fmt: skip
    assert can.stdout.strip() == "yes", can.stderr
    assert any(e.user == "dave" and e.impersonated_by == "impersonator"
               for e in threaded_sim.audit)  # fmt: skip


async def test_scenario_groups_bind_rules_to_their_members(tmp_path: Path) -> None:
    scenario = {
        "users": [{"name": "erin", "groups": ["gpu-sre"]}],
        "groups": [{"name": "gpu-sre", "rules": [
            {"verbs": ["list"], "resources": ["nodes"], "api_groups": [""]}]}],
    }  # fmt: skip
    async with start_sim(nodes=1, scenario=scenario, workdir=tmp_path / "sim") as sim:
        who = sim.cluster.auth.by_token(sim.user_token("erin"))
        assert who is not None
        assert sim.cluster.auth.decide(who, Attributes("list", "nodes"))[0]
        assert not sim.cluster.auth.decide(who, Attributes("list", "pods"))[0]
    bad = {"groups": [{"name": "x", "rules": [{"verbs": ["get"]}]}]}
    with pytest.raises(SimScenarioError, match=r"groups\[0\]\.rules\[0\]"):
        async with start_sim(nodes=1, scenario=bad, workdir=tmp_path / "sim2"):
            pass
