"""API discovery documents: /version, /api, /api/v1, /apis and the authorization group.

Only what the sim serves is advertised (read verbs plus exec/log subresources), so
kubectl's RESTMapper resolves ``pods``, ``nodes``, ``events``, ``namespaces`` and
``pods/exec`` exactly as on a real cluster. Aggregated discovery is not offered: the
client falls back to these legacy documents, as with any pre-1.26 server.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
_READ = ["get", "list", "watch"]


def version_info(git_version: str) -> Obj:
    core = git_version.lstrip("v").split("-")[0].split(".")
    return {
        "major": core[0],
        "minor": core[1] if len(core) > 1 else "0",
        "emulationMajor": core[0],
        "emulationMinor": core[1] if len(core) > 1 else "0",
        "minCompatibilityMajor": core[0],
        "minCompatibilityMinor": str(max(0, int(core[1]) - 1)) if len(core) > 1 else "0",
        "gitVersion": git_version,
        "gitCommit": "0" * 40,
        "gitTreeState": "clean",
        "buildDate": "2025-06-17T18:36:12Z",
        "goVersion": "go1.24.4",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _res(
    name: str,
    kind: str,
    namespaced: bool,
    verbs: list[str],
    singular: str = "",
    short: list[str] | None = None,
    categories: list[str] | None = None,
    group: str | None = None,
    version: str | None = None,
) -> Obj:
    out: Obj = {"name": name, "singularName": singular, "namespaced": namespaced}
    if group is not None:
        out["group"] = group
        out["version"] = version
    out["kind"] = kind
    out["verbs"] = verbs
    if short:
        out["shortNames"] = short
    if categories:
        out["categories"] = categories
    return out


def core_v1() -> Obj:
    return {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            _res("events", "Event", True, _READ, "event", ["ev"]),
            _res("namespaces", "Namespace", False, _READ, "namespace", ["ns"]),
            _res("nodes", "Node", False, _READ, "node", ["no"]),
            _res("pods", "Pod", True, _READ, "pod", ["po"], ["all"]),
            _res("pods/exec", "PodExecOptions", True, ["create", "get"]),
            _res("pods/log", "Pod", True, ["get"]),
        ],
    }


AUTHZ = "authorization.k8s.io"
COORDINATION = "coordination.k8s.io"
GROUPS = (AUTHZ, COORDINATION)


def api_group(name: str) -> Obj:
    gv = {"groupVersion": f"{name}/v1", "version": "v1"}
    return {"name": name, "versions": [gv], "preferredVersion": gv}


def api_groups() -> Obj:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group(g) for g in GROUPS]}


def group_document(name: str) -> Obj:
    return {"kind": "APIGroup", "apiVersion": "v1", **api_group(name)}


def coordination_v1() -> Obj:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{COORDINATION}/v1",
        "resources": [_res("leases", "Lease", True, _READ, "lease")],
    }


def authorization_v1() -> Obj:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{AUTHZ}/v1",
        "resources": [
            _res("selfsubjectaccessreviews", "SelfSubjectAccessReview", False, ["create"]),
            _res("selfsubjectrulesreviews", "SelfSubjectRulesReview", False, ["create"]),
        ],
    }
