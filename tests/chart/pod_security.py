"""The Pod Security Standards checks that apply to the agent pod, from the published rules.

Covers the controls a pod spec like ours can trip (host namespaces, privileged,
capabilities, hostPath and volume types, privilege escalation, non-root, seccomp,
host ports); AppArmor, SELinux, /proc mount type and sysctls are never set by the chart.
https://kubernetes.io/docs/concepts/security/pod-security-standards/
"""

from __future__ import annotations

from typing import Any

# What baseline lets a container add: Pod Security admission's capabilities_baseline check
# (k8s.io/pod-security-admission/policy/check_capabilities_baseline.go, unchanged since 1.0).
# SYSLOG is not in it; restricted allows only NET_BIND_SERVICE.
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def baseline_violations(pod: dict[str, Any]) -> list[str]:
    found = [f"{key}=true" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    found += [f"hostPath volume {v['name']}" for v in pod.get("volumes", []) if "hostPath" in v]
    pod_seccomp = pod.get("securityContext", {}).get("seccompProfile", {}).get("type")
    if pod_seccomp == "Unconfined":
        found.append("pod seccomp Unconfined")
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            found.append(f"{c['name']}: privileged")
        extra = set(sc.get("capabilities", {}).get("add", [])) - BASELINE_CAPABILITIES
        if extra:
            found.append(f"{c['name']}: adds {sorted(extra)}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            found.append(f"{c['name']}: hostPort")
        if sc.get("seccompProfile", {}).get("type") == "Unconfined":
            found.append(f"{c['name']}: seccomp Unconfined")
    return found


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    found = baseline_violations(pod)
    for v in pod.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            found.append(f"volume {v['name']} of type {sorted(kinds)}")
    pod_sc = pod.get("securityContext", {})
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{c['name']}: allowPrivilegeEscalation not false")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            found.append(f"{c['name']}: runAsNonRoot not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            found.append(f"{c['name']}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{c['name']}: seccomp {seccomp}")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            found.append(f"{c['name']}: does not drop ALL capabilities")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{c['name']}: adds capabilities")
    return found


def strictest_level(pod: dict[str, Any]) -> str:
    """The strictest Pod Security level that admits this pod spec."""
    if not restricted_violations(pod):
        return "restricted"
    if not baseline_violations(pod):
        return "baseline"
    return "privileged"
