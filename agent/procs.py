"""Who a host process is: its name, and the Kubernetes pod and container it runs in,
read from the host's ``/proc/<pid>/cgroup`` (mounted into the agent pod with
``--host-proc``).

The kubelet names a pod's cgroup after the pod uid and the runtime names the
container's cgroup after the container id; the layout depends on the cgroup driver:

- systemd driver (cgroup v1 or v2):
  ``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/
  cri-containerd-<id>.scope`` (CRI-O: ``crio-<id>.scope``, cri-dockerd: ``docker-<id>.scope``);
  guaranteed pods have no QoS level: ``kubepods-pod<uid>.slice``.
- cgroupfs driver: ``/kubepods/burstable/pod<uid>/<id>`` (CRI-O: ``.../crio-<id>``).
- containerd nested under its own service (kind, some k3s set-ups):
  ``/system.slice/containerd.service/kubepods-...-pod<uid>.slice:cri-containerd:<id>``.

Paths are searched, not anchored: when the reader sits in its own cgroup namespace the
kernel shows other cgroups relative to it (``/../../kubepods.slice/...``).
"""

from __future__ import annotations

import os
import re

# A pod uid: RFC 4122 form (dashes; underscores under the systemd driver, which
# reserves "-" as its hierarchy separator) or a static pod's 32-hex config hash.
_POD = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})"
    r"(?:\.slice)?(?=[/:]|$)"
)
# The container after the pod: "<prefix>-<id>.scope", "<prefix>:<id>" or a bare id.
_CONTAINER = re.compile(
    r"(?:^|[/:])(?:(cri-containerd|containerd|crio|docker|cri-o)[-:])?([0-9a-f]{64})(?:\.scope)?"
    r"(?=/|$)"
)
_QOS = re.compile(r"kubepods[-/.](besteffort|burstable)")
_RUNTIMES = {
    "cri-containerd": "containerd",
    "containerd": "containerd",
    "crio": "cri-o",
    "cri-o": "cri-o",
    "docker": "docker",
}
# /proc/<pid>/cgroup is a few lines; bound the read anyway (host-controlled input).
_MAX_READ = 64 * 1024


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(_MAX_READ).decode("utf-8", "replace")
    except OSError:  # vanished pid (ENOENT/ESRCH), no permission, not mounted...
        return None


def parse_cgroup(text: str) -> dict[str, str | None] | None:
    """``{"pod_uid", "container_id", "runtime", "qos_class"}`` from the contents of a
    ``/proc/<pid>/cgroup`` file; None when no line names a Kubernetes pod."""
    for line in text.splitlines():
        # "hierarchy-id:controllers:path"; the path itself may contain ":".
        parts = line.split(":", 2)
        if len(parts) != 3 or "kubepods" not in parts[2]:
            continue
        path = parts[2]
        pod = _POD.search(path)
        if pod is None:
            continue
        uid = pod[1].replace("_", "-")
        container_id: str | None = None
        runtime: str | None = None
        container = _CONTAINER.search(path, pod.end())
        if container is not None:
            container_id = container[2]
            runtime = _RUNTIMES.get(container[1] or "")
        qos = _QOS.search(path)
        return {
            "pod_uid": uid,
            "container_id": container_id,
            # None when the path is a bare id (cgroupfs driver): containerd and docker
            # name it the same way, so the runtime cannot be told from the path.
            "runtime": runtime,
            "qos_class": qos[1] if qos else "guaranteed",
        }
    return None


def pod_for_pid(host_proc: str, pid: int) -> dict[str, str | None] | None:
    """The pod a host process belongs to, from ``<host_proc>/<pid>/cgroup``:
    ``{"pod_uid", "container_id", "runtime", "qos_class"}``. None when the process is
    not in a pod, has exited, or its cgroup file cannot be read. Never raises."""
    if pid <= 0:
        return None
    text = _read(os.path.join(host_proc, str(int(pid)), "cgroup"))
    return parse_cgroup(text) if text else None


def process_name(host_proc: str | None, pid: int) -> str | None:
    """The process's name: ``comm``, or the executable's base name from ``cmdline``
    when ``comm`` was cut at the kernel's 15 characters. None if it has exited."""
    if pid <= 0:
        return None
    base = os.path.join(host_proc or "/proc", str(int(pid)))
    comm = (_read(os.path.join(base, "comm")) or "").rstrip("\n")
    if comm and len(comm) < 15:
        return comm
    cmdline = _read(os.path.join(base, "cmdline")) or ""
    argv0 = os.path.basename(cmdline.split("\0", 1)[0].split(" ", 1)[0]) if cmdline else ""
    if argv0 and (not comm or argv0.startswith(comm)):
        return argv0
    return comm or None
