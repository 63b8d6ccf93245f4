"""The objects every cluster has beside nodes and pods, as the sim's pods need them:
Services, ServiceAccounts, the ``kube-root-ca.crt`` ConfigMaps, the ``nvidia``
RuntimeClass, node Leases, ``events.k8s.io/v1`` Events, and the Helm release record of
the chart (a ``helm.sh/release.v1`` Secret, so ``helm list`` finds the release)."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime
from typing import Any

from .objects import CHART_LABELS, CHART_VERSION, RELEASE, iso, uid

Obj = dict[str, Any]


def _meta(kind: str, namespace: str | None, name: str, created: float, rv: str) -> Obj:
    meta: Obj = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update(
        uid=uid(kind, namespace or "", name), resourceVersion=rv, creationTimestamp=iso(created)
    )
    return meta


def _port(name: str, port: int, protocol: str = "TCP", target: int | str | None = None) -> Obj:
    return {"name": name, "protocol": protocol, "port": port, "targetPort": target or port}


def _service(
    namespace: str,
    name: str,
    ip: str,
    ports: list[Obj],
    selector: Obj | None,
    labels: Obj,
    created: float,
    rv: str,
) -> Obj:
    spec: Obj = {
        "ports": ports,
        "clusterIP": ip,
        "clusterIPs": [ip],
        "type": "ClusterIP",
        "sessionAffinity": "None",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "internalTrafficPolicy": "Cluster",
    }
    if selector:
        spec["selector"] = selector
    meta = _meta("service", namespace, name, created, rv)
    meta["labels"] = labels
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": meta,
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


def services(apps: dict[tuple[str, str], list[int]], created: float, rv: str) -> list[Obj]:
    """``kubernetes`` and one Service per workload app with service ports. (No kube-dns:
    the sim runs no CoreDNS pods, and a DNS Service without endpoints reads as a fault.)"""
    out = [
        _service(
            "default",
            "kubernetes",
            "10.96.0.1",
            [_port("https", 443, target=6443)],
            None,
            {"component": "apiserver", "provider": "kubernetes"},
            created,
            rv,
        )
    ]
    for i, ((ns, app), numbers) in enumerate(sorted(apps.items())):
        ports = [_port(f"port-{n}", n) for n in numbers]
        ip = f"10.96.{100 + i // 250}.{i % 250 + 10}"
        out.append(_service(ns, app, ip, ports, {"app": app}, {"app": app}, created, rv))
    return out


_APISERVER = {"ip": "10.0.255.1", "nodeName": None, "ready": True, "ref": None}


def _backends(service: Obj, pods: list[Obj]) -> list[Obj]:
    """The service's endpoints: its selector's pods that have an IP (the API server
    itself for ``default/kubernetes``)."""
    selector = service["spec"].get("selector")
    if not selector:
        return [_APISERVER] if service["metadata"]["name"] == "kubernetes" else []
    out = []
    for pod in pods:
        labels = pod["metadata"].get("labels", {})
        ip = pod["status"].get("podIP")
        if ip and all(labels.get(k) == v for k, v in selector.items()):
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in pod["status"].get("conditions", [])
            )
            meta = pod["metadata"]
            ref = {
                "kind": "Pod",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            }
            out.append(
                {"ip": ip, "nodeName": pod["spec"].get("nodeName"), "ready": ready, "ref": ref}
            )
    return out


def _endpoint_ports(service: Obj) -> list[Obj]:
    return [
        {"name": p["name"], "port": p["targetPort"], "protocol": p.get("protocol", "TCP")}
        for p in service["spec"]["ports"]
    ]


def endpoints(service: Obj, pods: list[Obj]) -> tuple[Obj, Obj]:
    """(core/v1 Endpoints, discovery.k8s.io/v1 EndpointSlice) the controllers keep for
    *service*, from the *pods* of its namespace."""
    meta = service["metadata"]
    ns, name = meta["namespace"], meta["name"]
    backends = _backends(service, pods)
    ports = _endpoint_ports(service)

    def address(b: Obj) -> Obj:
        out: Obj = {"ip": b["ip"]}
        if b["nodeName"]:
            out["nodeName"] = b["nodeName"]
        if b["ref"]:
            out["targetRef"] = b["ref"]
        return out

    subset: Obj = {}
    ready = [address(b) for b in backends if b["ready"]]
    waiting = [address(b) for b in backends if not b["ready"]]
    if ready:
        subset["addresses"] = ready
    if waiting:
        subset["notReadyAddresses"] = waiting
    ep_meta = {k: meta[k] for k in ("name", "namespace", "resourceVersion", "creationTimestamp")}
    ep_meta["uid"] = uid("endpoints", ns, name)
    ep_meta["labels"] = dict(meta.get("labels", {}))
    ep: Obj = {"kind": "Endpoints", "apiVersion": "v1", "metadata": ep_meta}
    if subset:
        subset["ports"] = ports
        ep["subsets"] = [subset]
    slice_name = f"{name}-{uid('slice', ns, name)[:5]}"
    slice_meta: Obj = {
        "name": slice_name,
        "generateName": f"{name}-",
        "namespace": ns,
        "uid": uid("endpointslice", ns, slice_name),
        "resourceVersion": meta["resourceVersion"],
        "creationTimestamp": meta["creationTimestamp"],
        "labels": {
            **meta.get("labels", {}),
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            "kubernetes.io/service-name": name,
        },
        "ownerReferences": [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "name": name,
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    eps = []
    for b in backends:
        e: Obj = {
            "addresses": [b["ip"]],
            "conditions": {"ready": b["ready"], "serving": b["ready"], "terminating": False},
        }
        if b["ref"]:
            e["targetRef"] = b["ref"]
        if b["nodeName"]:
            e["nodeName"] = b["nodeName"]
        eps.append(e)
    eps_slice: Obj = {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": slice_meta,
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": ports,
    }
    return ep, eps_slice


def service_accounts(
    namespaces: list[str], agent_ns: str | None, created: float, rv: str
) -> list[Obj]:
    out = [
        {
            "kind": "ServiceAccount",
            "apiVersion": "v1",
            "metadata": _meta("serviceaccount", ns, "default", created, rv),
        }
        for ns in namespaces
    ]
    extra: list[tuple[str, str, Obj]] = [("gpu-operator", "nvidia-device-plugin", {})]
    if agent_ns is not None:
        extra.append((agent_ns, RELEASE, dict(CHART_LABELS)))
    for ns, name, labels in extra:
        meta = _meta("serviceaccount", ns, name, created, rv)
        if labels:
            meta["labels"] = labels
        sa: Obj = {"kind": "ServiceAccount", "apiVersion": "v1", "metadata": meta}
        if name == RELEASE:
            sa["automountServiceAccountToken"] = False
        out.append(sa)
    return out


def root_ca_configmaps(namespaces: list[str], ca_pem: str, created: float, rv: str) -> list[Obj]:
    """What kube-controller-manager publishes in every namespace."""
    out = []
    for ns in namespaces:
        meta = _meta("configmap", ns, "kube-root-ca.crt", created, rv)
        meta["annotations"] = {
            "kubernetes.io/description": "Contains a CA bundle that can be used to verify the "
            "kube-apiserver when using internal endpoints such as the internal service IP or "
            "kubernetes.default.svc. No other usage is guaranteed across distributions of "
            "Kubernetes clusters."
        }
        out.append(
            {"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta, "data": {"ca.crt": ca_pem}}
        )
    return out


def runtime_class(name: str, created: float, rv: str) -> Obj:
    """A RuntimeClass; ``nvidia`` is the one the GPU Operator creates for its toolkit."""
    return {
        "kind": "RuntimeClass",
        "apiVersion": "node.k8s.io/v1",
        "metadata": _meta("runtimeclass", None, name, created, rv),
        "handler": name,
    }


def _rfc3339_nano(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def helm_release_secret(namespace: str, installed: float, rv: str) -> Obj:
    """Helm's storage record for the chart's release: ``data.release`` is
    base64(gzip(JSON)), base64-encoded once more as every Secret value is."""
    release = {
        "name": RELEASE,
        "info": {
            "first_deployed": _rfc3339_nano(installed),
            "last_deployed": _rfc3339_nano(installed),
            "deleted": "",
            "description": "Install complete",
            "status": "deployed",
        },
        "chart": {
            "metadata": {
                "name": "k8s-gpu-mcp",
                "version": CHART_VERSION,
                "description": "NVIDIA GPU diagnostics agent (MCP over pods/exec) on every "
                "GPU node",
                "apiVersion": "v2",
                "appVersion": CHART_VERSION,
                "type": "application",
            },
            "lock": None,
            "templates": [],
            "values": {},
            "schema": None,
            "files": [],
        },
        "config": {},
        "manifest": f"---\n# Source: k8s-gpu-mcp/templates/daemonset.yaml\napiVersion: apps/v1\n"
        f"kind: DaemonSet\nmetadata:\n  name: {RELEASE}\n  namespace: {namespace}\n",
        "version": 1,
        "namespace": namespace,
    }
    blob = base64.b64encode(gzip.compress(json.dumps(release).encode(), mtime=0))
    name = f"sh.helm.release.v1.{RELEASE}.v1"
    meta = _meta("secret", namespace, name, installed, rv)
    meta["labels"] = {
        "modifiedAt": str(int(installed)),
        "name": RELEASE,
        "owner": "helm",
        "status": "deployed",
        "version": "1",
    }
    return {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": meta,
        "type": "helm.sh/release.v1",
        "data": {"release": base64.b64encode(blob).decode()},
    }


def new_event(event: Obj) -> Obj:
    """A core/v1 Event as ``events.k8s.io/v1`` serves it (the API server converts)."""
    inv = event.get("involvedObject", {})
    src = event.get("source", {})
    out: Obj = {
        "kind": "Event",
        "apiVersion": "events.k8s.io/v1",
        "metadata": event["metadata"],
        "eventTime": event.get("eventTime"),
        "reportingController": event.get("reportingComponent") or src.get("component", ""),
        "reportingInstance": event.get("reportingInstance", ""),
        "action": event.get("action", ""),
        "reason": event.get("reason", ""),
        "regarding": inv,
        "note": event.get("message", ""),
        "type": event.get("type", ""),
        "deprecatedSource": src,
        "deprecatedFirstTimestamp": event.get("firstTimestamp"),
        "deprecatedLastTimestamp": event.get("lastTimestamp"),
        "deprecatedCount": event.get("count", 1),
    }
    if not out["action"]:
        del out["action"]
    return out
