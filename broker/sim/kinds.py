"""Every resource the simulated API server serves: one table that discovery, routing,
RBAC attributes and list kinds are all read from, so what is advertised is what answers."""

from __future__ import annotations

from dataclasses import dataclass

READ = ("get", "list", "watch")


@dataclass(frozen=True)
class Kind:
    plural: str
    kind: str
    group: str = ""  # "" is the core group
    version: str = "v1"
    namespaced: bool = True
    short: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = READ
    deprecated: str = ""  # the API server's Warning header text for this kind

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


@dataclass(frozen=True)
class Subresource:
    parent: str  # plural of the parent kind
    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str = ""
    namespaced: bool = True


KINDS: tuple[Kind, ...] = (
    Kind("configmaps", "ConfigMap", short=("cm",)),
    Kind("endpoints", "Endpoints", short=("ep",),
         deprecated="v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"),
    Kind("events", "Event", short=("ev",)),
    Kind("namespaces", "Namespace", namespaced=False, short=("ns",)),
    Kind("nodes", "Node", namespaced=False, short=("no",)),
    Kind("pods", "Pod", short=("po",), categories=("all",)),
    Kind("secrets", "Secret"),
    Kind("serviceaccounts", "ServiceAccount", short=("sa",)),
    Kind("services", "Service", short=("svc",), categories=("all",)),
    Kind("daemonsets", "DaemonSet", "apps", short=("ds",), categories=("all",)),
    Kind("deployments", "Deployment", "apps", short=("deploy",), categories=("all",)),
    Kind("replicasets", "ReplicaSet", "apps", short=("rs",), categories=("all",)),
    Kind("statefulsets", "StatefulSet", "apps", short=("sts",), categories=("all",)),
    Kind("cronjobs", "CronJob", "batch", short=("cj",), categories=("all",)),
    Kind("jobs", "Job", "batch", categories=("all",)),
    Kind("leases", "Lease", "coordination.k8s.io"),
    Kind("events", "Event", "events.k8s.io", short=("ev",)),
    Kind("runtimeclasses", "RuntimeClass", "node.k8s.io", namespaced=False),
    Kind("endpointslices", "EndpointSlice", "discovery.k8s.io"),
    # Custom resources of the distributed-training operators (their CRDs installed).
    Kind("jobsets", "JobSet", "jobset.x-k8s.io", "v1alpha2", categories=("all",)),
    Kind("pytorchjobs", "PyTorchJob", "kubeflow.org", categories=("all", "kubeflow")),
    Kind("tokenreviews", "TokenReview", "authentication.k8s.io", namespaced=False,
         verbs=("create",)),
    Kind("subjectaccessreviews", "SubjectAccessReview", "authorization.k8s.io",
         namespaced=False, verbs=("create",)),
    Kind("selfsubjectaccessreviews", "SelfSubjectAccessReview", "authorization.k8s.io",
         namespaced=False, verbs=("create",)),
    Kind("selfsubjectrulesreviews", "SelfSubjectRulesReview", "authorization.k8s.io",
         namespaced=False, verbs=("create",)),
)  # fmt: skip

SUBRESOURCES: tuple[Subresource, ...] = (
    Subresource("nodes", "proxy", "NodeProxyOptions", ("get",), namespaced=False),
    Subresource("pods", "exec", "PodExecOptions", ("create", "get")),
    Subresource("pods", "log", "Pod", ("get",)),
)

# In the order a real API server lists them in /apis (its group priority order).
GROUPS: tuple[str, ...] = ("apps", "events.k8s.io", "authentication.k8s.io",
                           "authorization.k8s.io", "batch", "coordination.k8s.io", "node.k8s.io",
                           "discovery.k8s.io", "jobset.x-k8s.io", "kubeflow.org")  # fmt: skip
assert set(GROUPS) == {k.group for k in KINDS if k.group}
_BY_PATH = {(k.group, k.version, k.plural): k for k in KINDS}
# One served version per group (the custom resources' are not v1).
GROUP_VERSIONS: dict[str, str] = {k.group: k.version for k in KINDS}
assert all(k.version == GROUP_VERSIONS[k.group] for k in KINDS)


def lookup(group: str, version: str, plural: str) -> Kind | None:
    """The kind served at /apis/GROUP/VERSION/PLURAL (group "" for /api/v1)."""
    return _BY_PATH.get((group, version, plural))


def in_group(group: str) -> list[Kind]:
    return [k for k in KINDS if k.group == group]
