"""API discovery documents: /version, /api, /api/v1, /apis and one per group, all
generated from ``kinds.KINDS`` so kubectl's RESTMapper resolves exactly what is served.
Aggregated discovery is not offered: clients fall back to these legacy documents, as
with any pre-1.26 server. ``metrics.k8s.io`` is absent, as on a cluster without
metrics-server."""

from __future__ import annotations

from typing import Any

from .kinds import GROUP_VERSIONS, GROUPS, SUBRESOURCES, Kind, in_group

Obj = dict[str, Any]


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


def _resource(kind: Kind) -> Obj:
    out: Obj = {
        "name": kind.plural,
        "singularName": kind.singular,
        "namespaced": kind.namespaced,
        "kind": kind.kind,
        "verbs": list(kind.verbs),
    }
    if kind.short:
        out["shortNames"] = list(kind.short)
    if kind.categories:
        out["categories"] = list(kind.categories)
    return out


def resource_list(group: str) -> Obj:
    """The APIResourceList of *group* ("" for core v1), subresources included."""
    resources = [_resource(k) for k in in_group(group)]
    for sub in SUBRESOURCES:
        if sub.group == group:
            resources.append(
                {
                    "name": f"{sub.parent}/{sub.name}",
                    "singularName": "",
                    "namespaced": sub.namespaced,
                    "kind": sub.kind,
                    "verbs": list(sub.verbs),
                }
            )
    resources.sort(key=lambda r: r["name"])
    doc: Obj = {"kind": "APIResourceList"}
    if group:
        doc["apiVersion"] = "v1"
    doc["groupVersion"] = f"{group}/{GROUP_VERSIONS[group]}" if group else "v1"
    doc["resources"] = resources
    return doc


def api_group(name: str) -> Obj:
    version = GROUP_VERSIONS[name]
    gv = {"groupVersion": f"{name}/{version}", "version": version}
    return {"name": name, "versions": [gv], "preferredVersion": gv}


def api_groups() -> Obj:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group(g) for g in GROUPS]}


def group_document(name: str) -> Obj:
    return {"kind": "APIGroup", "apiVersion": "v1", **api_group(name)}
