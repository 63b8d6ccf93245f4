"""``broker doctor`` and the MCP tool ``check_setup``: is this cluster ready to be
diagnosed, and if not, what to do first.

The checks run in order, each as far as the ones before it allow: the cluster and the
credentials; the caller's RBAC; GPU nodes; the chart (DaemonSet, desired vs ready, in which
namespace); the RuntimeClass; one agent over exec and the GPUs it sees; Pod Security on
the namespace. Every check that is not ``ok`` says what to do; the report names the first
failure (``first_problem``) so a user or an LLM knows where to start.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from broker.diagnosis.node_sources import describe, node_sources
from broker.errors import ApiUnavailable, BrokerError, ConfigError, RbacDenied, Unauthenticated
from broker.fleet.context import BrokerContext
from broker.kube import preflight as kube
from broker.kube.config import ClusterConfig, KubeApi
from broker.kube.discovery import is_gpu_node, pod_problem
from broker.kube.names import AGENT_SELECTOR, COUNT_LABEL, PRODUCT_LABEL
from broker.kube.reader import ClusterReader, Obj

__all__ = [
    "CHECKS",
    "EXIT_FAILED",
    "EXIT_OK",
    "Check",
    "preflight",
    "preflight_for",
    "preflight_output_schema",
]

Json = dict[str, Any]
Status = Literal["ok", "warn", "fail", "skip"]
Surface = Literal["cli", "mcp"]

EXIT_OK = 0
EXIT_FAILED = 1

CHECKS = (
    ("cluster", "Cluster and credentials"),
    ("rbac", "Your RBAC permissions"),
    ("gpu_nodes", "GPU nodes"),
    ("chart", "Agent DaemonSet (the Helm chart)"),
    ("runtime_class", "RuntimeClass"),
    ("agent", "An agent over exec"),
    ("pod_security", "Pod Security"),
)
_TITLES = dict(CHECKS)
_PSS_RANK = {"restricted": 0, "baseline": 1, "privileged": 2}
PSS_LEVEL_ANNOTATION = "k8s-gpu-mcp.io/pod-security-level"
GPU_MODE_ANNOTATION = "k8s-gpu-mcp.io/gpu-mode"
CHART = "charts/k8s-gpu-mcp"


@dataclass(frozen=True)
class Check:
    """One check's verdict: what was found and, unless ok, what to do."""

    name: str
    status: Status
    summary: str
    fix: str | None = None
    details: Json = field(default_factory=dict)

    def as_dict(self) -> Json:
        return {
            "check": self.name,
            "title": _TITLES.get(self.name, self.name),
            "status": self.status,
            "summary": self.summary,
            "fix": self.fix,
            "details": self.details,
        }


@dataclass
class _Run:
    """What the checks learn and hand on to the next ones."""

    config: ClusterConfig
    surface: Surface
    api: KubeApi | None = None
    access: dict[str, kube.AccessAnswer] = field(default_factory=dict)
    nodes: list[Obj] | None = None
    gpu_nodes: list[Obj] = field(default_factory=list)
    agent_pods: list[Obj] | None = None

    @property
    def namespace(self) -> str:
        return self.config.namespace

    def kubectl(self, args: str) -> str:
        """A kubectl command line with the same --kubeconfig/--context the user gave."""
        flags = ""
        if self.config.kubeconfig:
            flags += f" --kubeconfig {self.config.kubeconfig}"
        if self.config.context:
            flags += f" --context {self.config.context}"
        return f"kubectl{flags} {args}"


# -- the entry points -------------------------------------------------------------------
async def preflight_for(
    config: ClusterConfig, *, call_timeout: float = 30.0, surface: Surface = "cli"
) -> Json:
    """Open the cluster from ``config`` and run every check (a configuration that cannot be
    loaded is the first check's failure, not an exception)."""
    try:
        async with BrokerContext.open(config, call_timeout=call_timeout) as ctx:
            return await preflight(ctx, surface=surface)
    except ConfigError as exc:
        run = _Run(config, surface)
        first = Check("cluster", "fail", f"cannot load the cluster configuration: {exc}", str(exc))
        return _report(run, [first, *_skipped_after("cluster")])


async def preflight(ctx: BrokerContext, *, surface: Surface = "mcp") -> Json:
    """Every check against the cluster ``ctx`` is open on, as one JSON report."""
    run = _Run(ctx.config, surface)
    results: list[Check] = []
    try:
        run.api = await ctx.api()
    except ConfigError as exc:
        problem = f"cannot load the cluster configuration: {exc}"
        results.append(Check("cluster", "fail", problem, str(exc)))
        return _report(run, [*results, *_skipped_after("cluster")])
    cluster = await _cluster(run)
    results.append(cluster)
    if cluster.status == "fail":
        return _report(run, [*results, *_skipped_after("cluster")])
    results.append(await _rbac(run))
    results.append(await _gpu_nodes(run))
    results.append(await _chart(run))
    results.append(await _runtime_class(run))
    results.append(await _agent(run, ctx))
    results.append(await _pod_security(run))
    return _report(run, results)


def _skipped_after(name: str) -> list[Check]:
    names = [n for n, _ in CHECKS]
    later = names[names.index(name) + 1 :]
    return [Check(n, "skip", f"not checked: the {name} check failed") for n in later]


def _report(run: _Run, checks: Sequence[Check]) -> Json:
    counts = Counter(c.status for c in checks)
    failed = next((c for c in checks if c.status == "fail"), None)
    warned = next((c for c in checks if c.status == "warn"), None)
    first = failed or warned
    return {
        "ok": failed is None,
        "context": run.api.context if run.api else run.config.context,
        "server": run.api.server if run.api else None,
        "namespace": run.namespace,
        "summary": {s: counts.get(s, 0) for s in ("ok", "warn", "fail", "skip")},
        "first_problem": None if first is None else _first(first),
        "checks": [c.as_dict() for c in checks],
    }


def _first(check: Check) -> Json:
    return {"check": check.name, "status": check.status, "summary": check.summary, "fix": check.fix}


# -- the checks -------------------------------------------------------------------------
async def _cluster(run: _Run) -> Check:
    api = run.api
    assert api is not None
    where = f"context {api.context}, " if api.context else ""
    try:
        version = await kube.server_version(api)
        # Asking RBAC a question proves the credentials (/version needs none); any other
        # trouble asking is the RBAC check's to report.
        with contextlib.suppress(RbacDenied, ApiUnavailable):
            run.access["pods"] = await kube.can_i(api, "list", "pods", run.namespace)
    except Unauthenticated as exc:
        return Check("cluster", "fail", f"{where}the API server rejected the credentials", str(exc))
    except BrokerError as exc:
        fix = str(exc)
        return Check("cluster", "fail", f"{where}cannot talk to the API server: {exc}", fix)
    shown = f"Kubernetes {version}" if version else "version unknown"
    return Check(
        "cluster",
        "ok",
        f"{where}API server {api.server} ({shown}) accepts your credentials",
        details={"server": api.server, "context": api.context, "version": version},
    )


_NEEDED = (
    ("pods", "list", "pods", True),
    ("nodes", "list", "nodes", False),
    ("exec", "create", "pods/exec", True),
)


async def _rbac(run: _Run) -> Check:
    api = run.api
    assert api is not None
    try:
        for key, verb, resource, namespaced in _NEEDED:
            if key not in run.access:
                ns = run.namespace if namespaced else None
                run.access[key] = await kube.can_i(api, verb, resource, ns)
    except BrokerError as exc:
        return Check(
            "rbac",
            "warn",
            f"could not ask the API server what you may do ({exc})",
            "the checks below show what fails; check by hand with "
            f"`{run.kubectl('auth can-i --list -n ' + run.namespace)}`",
        )
    details = {k: a.allowed for k, a in run.access.items()}
    denied = [a for a in run.access.values() if not a.allowed]
    if not denied:
        return Check(
            "rbac",
            "ok",
            f"you may list nodes, list pods and create pods/exec in namespace {run.namespace}",
            details=details,
        )
    checks = "; ".join(f"`{run.kubectl(_can_i_args(a))}`" for a in denied)
    missing = ", ".join(a.request for a in denied)
    grant = (
        f"have a cluster admin add your user or group to the chart value rbac.subjects "
        f"(`helm upgrade <release> {CHART} -n {run.namespace} --reuse-values "
        "--set rbac.subjects[0].kind=User,rbac.subjects[0].name=<you>`) or bind the chart's "
        f"roles to you; check with {checks}"
    )
    only_nodes = all(a.resource == "nodes" for a in denied)
    if only_nodes:
        return Check(
            "rbac",
            "warn",
            f"you may not {missing}: GPU nodes without an agent pod and node labels "
            "(node_selector) stay unknown",
            grant,
            details,
        )
    return Check("rbac", "fail", f"you may not {missing}", grant, details)


def _can_i_args(a: kube.AccessAnswer) -> str:
    base, _, sub = a.resource.partition("/")
    target = f"{base} --subresource={sub}" if sub else base
    scope = f" -n {a.namespace}" if a.namespace else ""
    return f"auth can-i {a.verb} {target}{scope}"


async def _gpu_nodes(run: _Run) -> Check:
    api = run.api
    assert api is not None
    try:
        run.nodes = await ClusterReader(api).nodes()
    except RbacDenied:
        return Check("gpu_nodes", "skip", "not checked: you may not list nodes (see RBAC)")
    except BrokerError as exc:
        return Check("gpu_nodes", "fail", f"cannot list nodes: {exc}", str(exc))
    run.gpu_nodes = [n for n in run.nodes if is_gpu_node(n)]
    if not run.gpu_nodes:
        return Check(
            "gpu_nodes",
            "fail",
            f"none of the {len(run.nodes)} node(s) is a GPU node (no nvidia.com/gpu capacity, "
            "no nvidia.com/gpu.present label)",
            "install the NVIDIA GPU Operator (or the NVIDIA device plugin and GPU feature "
            "discovery) so GPU nodes advertise nvidia.com/gpu; check with "
            f"`{run.kubectl('get nodes -L nvidia.com/gpu.present,nvidia.com/gpu.product')}`",
        )
    products = Counter(_labels(n).get(PRODUCT_LABEL) or "" for n in run.gpu_nodes)
    unlabelled = sorted(_name(n) for n in run.gpu_nodes if not _labels(n).get(PRODUCT_LABEL))
    models = ", ".join(f"{c}× {p}" for p, c in sorted(products.items()) if p)
    summary = f"{len(run.gpu_nodes)} GPU node(s)" + (f": {models}" if models else "")
    details = {"gpu_nodes": len(run.gpu_nodes), "products": {p: c for p, c in products.items()}}
    if unlabelled:
        return Check(
            "gpu_nodes",
            "warn",
            f"{summary}; {len(unlabelled)} without GPU feature-discovery labels "
            f"({_some(unlabelled)})",
            "install GPU feature discovery (part of the GPU Operator) so node_selector on "
            "nvidia.com/gpu.product works for every GPU node",
            details,
        )
    return Check("gpu_nodes", "ok", summary, details=details)


async def _chart(run: _Run) -> Check:
    api = run.api
    assert api is not None
    ns = run.namespace
    reader = ClusterReader(api)
    try:
        sets = await kube.daemonsets(api, ns, AGENT_SELECTOR)
        run.agent_pods = await reader.pods(ns, label_selector=AGENT_SELECTOR)
    except RbacDenied as exc:
        return Check("chart", "skip", f"not checked: {exc}")
    except BrokerError as exc:
        return Check("chart", "fail", f"cannot read the agent DaemonSet: {exc}", str(exc))
    pods = run.agent_pods
    if not sets and not pods:
        return await _chart_elsewhere(run, reader, sets is None)
    served = sets is not None
    desired, ready, name = _rollout(sets or [], pods)
    what = f"DaemonSet {ns}/{name}" if name else f"agent pods in namespace {ns}"
    note = "" if served else " (DaemonSets not served by this API server: counted the pods)"
    summary = f"{what}: {desired} desired, {ready} ready{note}"
    details: Json = {"namespace": ns, "desired": desired, "ready": ready, "daemonset": name}
    # What the chart turned on for the agents (they say the same per answer, "sources").
    details["node_sources"] = sources = node_sources(pods)
    covered = {str((pod.get("spec") or {}).get("nodeName") or "") for pod in pods}
    uncovered = sorted(_name(n) for n in run.gpu_nodes if _name(n) not in covered)
    if uncovered:
        details["gpu_nodes_without_agent_pod"] = uncovered
    placement = (
        "the DaemonSet's nodeSelector/tolerations leave some GPU nodes out: compare "
        f"`{run.kubectl(f'-n {ns} get daemonset -o wide')}` with the GPU nodes' labels and "
        "taints (chart values nodeSelector, tolerations)"
    )
    without = (
        f"; {len(uncovered)} GPU node(s) without an agent pod ({_some(uncovered)})"
        if uncovered
        else ""
    )
    if ready < len(pods) or ready < desired:
        problems = _pod_problems(pods)
        details["not_ready"] = problems
        worst = next(iter(problems), None)
        first_pod = problems[worst][0].split(" ")[0] if worst else None
        fix = (
            f"see why with `{run.kubectl(f'-n {ns} describe pod {first_pod}')}` (events at the "
            "end: image pull, RuntimeClass, Pod Security, scheduling)"
            if first_pod
            else f"see `{run.kubectl(f'-n {ns} describe daemonset {name}')}`"
        )
        status: Status = "fail" if ready == 0 else "warn"
        shown = "; ".join(f"{len(p)} {r} ({_some(p)})" for r, p in problems.items())
        return Check("chart", status, f"{summary}; not ready: {shown}{without}", fix, details)
    if uncovered:
        # No agent pod on any GPU node: nothing can be diagnosed, that is a failure.
        status = "fail" if ready == 0 else "warn"
        return Check("chart", status, f"{summary}{without}", placement, details)
    if sources:
        summary = f"{summary}; {describe(sources)}"
    return Check("chart", "ok", summary, details=details)


async def _chart_elsewhere(run: _Run, reader: ClusterReader, pods_only: bool) -> Check:
    """No agent DaemonSet where expected: look in every namespace and say where it is."""
    api = run.api
    assert api is not None
    ns = run.namespace
    try:
        found = await kube.daemonsets(api, None, AGENT_SELECTOR)
        if found is None:  # DaemonSets not served: the pods say where the chart runs
            found = await reader.pods(None, label_selector=AGENT_SELECTOR)
    except BrokerError:
        found = None
    install = f"helm install gpu-mcp {CHART} -n {ns} --create-namespace"
    if found is None:
        return Check(
            "chart",
            "fail",
            f"no agent DaemonSet or agent pods in namespace {ns} (and you may not look in "
            "other namespaces)",
            f"is -n right? List releases with `helm list -A`; install with `{install}`",
        )
    where = sorted({str((o.get("metadata") or {}).get("namespace")) for o in found})
    if where:
        other = where[0]
        if run.surface == "mcp":
            fix = (
                f"this broker looks in namespace {ns}: restart it with `-n {other}` "
                f"(`broker serve -n {other}` in the IDE's MCP server configuration)"
            )
        else:
            fix = f"add `-n {other}` to broker commands (the chart is installed there)"
        return Check(
            "chart",
            "fail",
            f"the chart is not installed in namespace {ns}, but in {', '.join(where)}",
            fix,
            {"namespace": ns, "found_in": where},
        )
    return Check(
        "chart",
        "fail",
        "no agent pods at all: the chart is not installed in any namespace "
        f"(nothing labelled {AGENT_SELECTOR})",
        f"install it: `{install}`",
        {"namespace": ns, "found_in": []},
    )


def _rollout(sets: Sequence[Obj], pods: Sequence[Obj]) -> tuple[int, int, str | None]:
    """(desired, ready, DaemonSet name) from the DaemonSet's status, else from the pods."""
    if sets:
        ds = sets[0]
        st = ds.get("status") or {}
        return (
            int(st.get("desiredNumberScheduled") or 0),
            int(st.get("numberReady") or 0),
            str((ds.get("metadata") or {}).get("name")),
        )
    owners = {
        str(o.get("name"))
        for p in pods
        for o in (p.get("metadata") or {}).get("ownerReferences") or []
        if o.get("kind") == "DaemonSet"
    }
    ready = sum(1 for p in pods if pod_problem(p) is None)
    return len(pods), ready, (sorted(owners)[0] if owners else None)


def _pod_problems(pods: Sequence[Obj]) -> dict[str, list[str]]:
    """Not-ready agent pods grouped by state (``Pending: ContainerCreating``), biggest first."""
    groups: dict[str, list[str]] = {}
    for pod in pods:
        if pod_problem(pod) is None:
            continue
        status = pod.get("status") or {}
        state = str(status.get("phase") or "Unknown")
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting")
            if waiting:
                state = f"{state}: {waiting.get('reason') or 'waiting'}"
                break
        else:
            if state == "Running":
                state = "Running, not Ready"
        node = (pod.get("spec") or {}).get("nodeName")
        groups.setdefault(state, []).append(f"{_name(pod)} on {node}" if node else _name(pod))
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


async def _runtime_class(run: _Run) -> Check:
    api = run.api
    assert api is not None
    pods = run.agent_pods or []
    wanted = {str((p.get("spec") or {}).get("runtimeClassName") or "") for p in pods}
    wanted.discard("")
    modes = {str(_annotations(p).get(GPU_MODE_ANNOTATION) or "") for p in pods} - {""}
    if pods and not wanted:
        mode = ", ".join(sorted(modes)) or "not runtimeClass"
        return Check("runtime_class", "ok", f"not needed: the agent pods use gpu.mode {mode}")
    names = sorted(wanted) or ["nvidia"]  # the chart's default mode and class
    try:
        classes = await kube.runtime_classes(api)
    except RbacDenied:
        return Check(
            "runtime_class",
            "skip",
            f"not checked: you may not list runtimeclasses (the agent pods need {names[0]!r})",
        )
    except BrokerError as exc:
        return Check("runtime_class", "warn", f"cannot list RuntimeClasses: {exc}", str(exc))
    if classes is None:
        return Check(
            "runtime_class",
            "skip",
            "not checked: this API server does not serve node.k8s.io/v1 RuntimeClass",
        )
    have = {str((c.get("metadata") or {}).get("name")) for c in classes}
    absent = [n for n in names if n not in have]
    if not absent:
        return Check("runtime_class", "ok", f"RuntimeClass {', '.join(names)} exists")
    return Check(
        "runtime_class",
        "fail" if pods else "warn",
        f"RuntimeClass {absent[0]} does not exist: agent pods in gpu.mode=runtimeClass cannot "
        "start (they stay ContainerCreating)",
        "install the NVIDIA GPU Operator (it creates RuntimeClass nvidia) or the "
        "nvidia-container-toolkit (`nvidia-ctk runtime configure` plus a RuntimeClass with "
        "handler nvidia); or install the chart with another mode, e.g. "
        "`--set gpu.mode=dra` (sees every GPU, takes none)",
        {"missing": absent, "existing": sorted(have)},
    )


async def _agent(run: _Run, ctx: BrokerContext) -> Check:
    try:
        targets = await ctx.targets(refresh=True)
    except BrokerError as exc:
        return Check("agent", "skip", f"not checked: cannot find the agent pods ({exc})")
    ready = [t for t in targets if t.ready]
    if not ready:
        return Check("agent", "skip", "not checked: no agent pod is ready (see the chart check)")
    target = ready[0]
    result = await ctx.pool.call(target.node, "get_gpu_inventory", {})
    where = f"agent {target.namespace}/{target.pod} on node {target.node}"
    if not result.ok or result.result is None:
        return Check(
            "agent",
            "fail",
            f"{where} did not answer over exec ({result.error_kind}): {result.error}",
            _agent_fix(run, result.error_kind, result.error or ""),
            {"node": target.node, "kind": result.error_kind},
        )
    inventory = result.result
    gpus = inventory.get("gpus") or []
    driver = (inventory.get("driver") or {}).get("driver_version")
    expected = target.labels.get(COUNT_LABEL)
    details: Json = {"node": target.node, "gpus": len(gpus), "driver_version": driver}
    if not gpus:
        return Check(
            "agent",
            "fail",
            f"{where} answers but sees 0 GPUs: the container runtime did not inject them",
            "In gpu.mode=runtimeClass the NVIDIA runtime injects the GPUs that "
            "NVIDIA_VISIBLE_DEVICES=all (set by the chart) names, but a toolkit set up for CDI "
            "only, or with accept-nvidia-visible-devices-envvar-when-unprivileged = false, "
            "ignores that variable from unprivileged pods. Allow it in "
            "/etc/nvidia-container-runtime/config.toml on the GPU nodes (the GPU Operator: "
            "toolkit env ACCEPT_NVIDIA_VISIBLE_DEVICES_ENVVAR_WHEN_UNPRIVILEGED=true), or "
            "install the chart with `--set gpu.mode=dra` (DRA admin access sees every GPU) or "
            "`--set gpu.mode=devicePlugin` (costs one GPU per node)",
            details,
        )
    summary = f"{where} answered over exec: sees {len(gpus)} GPU(s), driver {driver}"
    if expected and expected.isdigit() and int(expected) > len(gpus):
        return Check(
            "agent",
            "warn",
            f"{summary}, but the node has {expected} (label {COUNT_LABEL})",
            "the runtime injected only some GPUs (gpu.mode=devicePlugin injects only the one "
            "it allocates); gpu.mode=runtimeClass or dra sees every GPU",
            details,
        )
    return Check("agent", "ok", summary, details=details)


def _agent_fix(run: _Run, kind: str | None, error: str) -> str:
    if kind == "rbac":
        return (
            "have a cluster admin add you to the chart value rbac.subjects (it grants "
            f"create pods/exec in namespace {run.namespace}); check with "
            f"`{run.kubectl(f'auth can-i create pods --subresource=exec -n {run.namespace}')}`"
        )
    if kind == "agent_error":
        return (
            "the agent process failed in the pod: run it by hand to see why, "
            f"`{run.kubectl(f'-n {run.namespace} exec -i <agent pod> -- gpu-agent --version')}`; "
            "an image without gpu-agent needs the chart's image (values image.repository)"
        )
    return f"{error}" if error else "retry; if it persists, look at the agent pod's events"


async def _pod_security(run: _Run) -> Check:
    api = run.api
    assert api is not None
    ns = run.namespace
    try:
        doc = await kube.namespace(api, ns)
    except RbacDenied:
        return Check(
            "pod_security", "skip", f"not checked: you may not get namespace {ns} (its labels)"
        )
    except BrokerError as exc:
        return Check("pod_security", "warn", f"cannot read namespace {ns}: {exc}", str(exc))
    if doc is None:
        return Check(
            "pod_security",
            "skip",
            f"namespace {ns} does not exist",
            f"create it with the chart: `helm install gpu-mcp {CHART} -n {ns} --create-namespace`",
        )
    labels = _labels(doc)
    enforce = labels.get("pod-security.kubernetes.io/enforce")
    levels = {str(_annotations(p).get(PSS_LEVEL_ANNOTATION) or "") for p in run.agent_pods or []}
    levels.discard("")
    needed = max(levels, key=lambda lv: _PSS_RANK.get(lv, 2)) if levels else "privileged"
    details = {"enforce": enforce, "agent_needs": needed}
    if enforce is None:
        return Check(
            "pod_security",
            "ok",
            f"namespace {ns} has no pod-security.kubernetes.io/enforce label (the cluster "
            f"default applies; the agent pod needs {needed!r})",
            details=details,
        )
    if _PSS_RANK.get(enforce, 0) >= _PSS_RANK.get(needed, 2):
        return Check(
            "pod_security",
            "ok",
            f"namespace {ns} enforces {enforce!r}; the agent pod needs {needed!r}",
            details=details,
        )
    label = f"label namespace {ns} pod-security.kubernetes.io/enforce={needed} --overwrite"
    return Check(
        "pod_security",
        "fail",
        f"namespace {ns} enforces Pod Security {enforce!r} but the agent pod needs {needed!r} "
        "(CAP_SYSLOG for XIDs): the DaemonSet's pods are rejected",
        f"`{run.kubectl(label)}`, or install the chart with `--set xid.enabled=false` "
        "(baseline, no XID analysis)",
        details,
    )


# -- small helpers ----------------------------------------------------------------------
def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "?")


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _some(names: Sequence[str], shown: int = 3) -> str:
    more = f", … +{len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def preflight_output_schema() -> Json:
    """The JSON Schema of the report (the MCP tool's outputSchema)."""
    nullable = {"type": ["string", "null"]}
    return {
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "context": nullable,
            "server": nullable,
            "namespace": {"type": "string"},
            "summary": {"type": "object", "additionalProperties": {"type": "integer"}},
            "first_problem": {
                "type": ["object", "null"],
                "properties": {
                    "check": {"type": "string"},
                    "status": {"type": "string"},
                    "summary": {"type": "string"},
                    "fix": nullable,
                },
            },
            "checks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "check": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "string", "enum": ["ok", "warn", "fail", "skip"]},
                        "summary": {"type": "string"},
                        "fix": nullable,
                        "details": {"type": "object"},
                    },
                    "required": ["check", "status", "summary"],
                },
            },
        },
        "required": ["ok", "namespace", "summary", "first_problem", "checks"],
    }
