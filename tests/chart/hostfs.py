"""A GPU node's host files, and the agent container's view of them as the chart mounts them.

``write_host`` lays out what the agent reads on a real node: a persistent journal
(``/var/log/journal/<machine-id>/system.journal``, written in the real format by
tests/agent/journalfile.py) holding an Xid from before the last reboot, and a sysfs tree in
which, as the kernel makes it, ``bus/pci/devices/*`` and ``class/infiniband/*`` are relative
symlinks into ``devices/``. Beside them it puts what the chart must never mount
(``sys/fs/cgroup``, ``sys/kernel/debug``).

``container_view`` plays the kubelet and the runtime for the agent container of a rendered
pod spec: each hostPath mount becomes a copy of the host path at its mountPath under a
container root (a bind mount needs privileges this test does not have; symlinks are copied
as links, so relative ones resolve inside the container's tree exactly as under a bind
mount), an emptyDir mount an empty directory, a ConfigMap mount the file it projects; and
the container's env values that name a mounted path (or a directory holding mounts, as
/host/sys holds bus/, class/ and devices/) are re-rooted there.
"""

from __future__ import annotations

import base64
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.agent.journalfile import write_journal

MACHINE_ID = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a99"
GPU0_SYSFS = "0000:18:00.0"  # the fake backend's GPU 0 (NVML "00000000:18:00.0")
GPU0_PATH = "devices/pci0000:17/0000:17:00.0/0000:18:00.0"
HCA_PATH = "devices/pci0000:a0/0000:a0:00.0/0000:a1:00.0"
XID79 = (
    "NVRM: Xid (PCI:0000:18:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."
)
PRE_REBOOT_S = 30 * 86400  # the fake node booted ~4 days ago: this is from an earlier boot
AER = {
    "aer_dev_correctable": "RxErr 0\nBadTLP 180\nTOTAL_ERR_COR 180\n",
    "aer_dev_nonfatal": "DLP 0\nCmpltTO 2\nTOTAL_ERR_NONFATAL 2\n",
    "aer_dev_fatal": "DLP 0\nTOTAL_ERR_FATAL 0\n",
}
PORTS = {
    "mlx5_0": ("4: ACTIVE", "5: LinkUp", "400 Gb/sec (4X NDR)"),
    "mlx5_1": ("1: DOWN", "2: Polling", "10 Gb/sec (4X SDR)"),
}
NOT_MOUNTED = ("sys/fs/cgroup/kubepods.slice/cpu.max", "sys/kernel/debug/dri/0/clients")


def _kernel(message: str) -> dict[str, str]:
    return {"MESSAGE": message, "_TRANSPORT": "kernel", "PRIORITY": "3"}


def write_host(root: Path) -> Path:
    """A node's /var/log/journal and /sys under ``root``; returns ``root``."""
    then = int((time.time() - PRE_REBOOT_S) * 1_000_000)
    journal = root / "var" / "log" / "journal" / MACHINE_ID
    journal.mkdir(parents=True)
    write_journal(
        journal / "system.journal",
        [(then, _kernel("Linux version 6.8.0")), (then + 60_000_000, _kernel(XID79))],
    )
    sys = root / "sys"
    gpu = sys / GPU0_PATH
    gpu.mkdir(parents=True)
    for name, text in AER.items():
        (gpu / name).write_text(text)
    (sys / "bus" / "pci" / "devices").mkdir(parents=True)
    (sys / "bus" / "pci" / "devices" / GPU0_SYSFS).symlink_to(f"../../../{GPU0_PATH}")
    (sys / "class" / "infiniband").mkdir(parents=True)
    for device, (state, phys, rate) in PORTS.items():
        port = sys / HCA_PATH / "infiniband" / device / "ports" / "1"
        port.mkdir(parents=True)
        for name, value in (("state", state), ("phys_state", phys), ("rate", rate)):
            (port / name).write_text(value + "\n")
        (port / "link_layer").write_text("InfiniBand\n")
        (sys / "class" / "infiniband" / device).symlink_to(f"../../{HCA_PATH}/infiniband/{device}")
    for path in NOT_MOUNTED:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("max\n")
    return root


@dataclass
class ContainerView:
    """The container's filesystem (under ``root``) and its environment, re-rooted."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    host_mounts: dict[str, str] = field(default_factory=dict)  # mountPath -> host path

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")


def container_view(
    docs: list[dict[str, Any]], host: Path, root: Path, node: str = "gpu-node-001"
) -> ContainerView:
    """The agent container of the rendered DaemonSet in ``docs``, over the host at ``host``."""
    daemonset = next(d for d in docs if d["kind"] == "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    view = ContainerView(root)
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        target = view.path(mount["mountPath"])
        target.parent.mkdir(parents=True, exist_ok=True)
        if "hostPath" in volume:
            source = host / volume["hostPath"]["path"].lstrip("/")
            assert volume["hostPath"]["type"] == "Directory" and source.is_dir(), volume
            shutil.copytree(source, target, symlinks=True)
            view.host_mounts[mount["mountPath"]] = volume["hostPath"]["path"]
        elif "emptyDir" in volume:
            target.mkdir()
        elif "configMap" in volume:
            data = configmaps[volume["configMap"]["name"]]["binaryData"]
            target.write_bytes(base64.b64decode(data[mount["subPath"]]))
            target.chmod(volume["configMap"].get("defaultMode", 0o644))
    mounted = [m["mountPath"] for m in container.get("volumeMounts", [])]
    for entry in container.get("env", []):
        name, value = entry["name"], entry.get("value")
        if value is None:
            field_path = entry["valueFrom"].get("fieldRef", {}).get("fieldPath")
            if field_path == "spec.nodeName":
                view.env[name] = node
            continue
        if any(_nested(value, m) or _nested(m, value) for m in mounted):
            value = str(view.path(value))  # a mounted path, or a directory holding mounts
        view.env[name] = value
    return view


def _nested(path: str, under: str) -> bool:
    """``path`` is ``under`` or lies below it."""
    return path == under or path.startswith(under.rstrip("/") + "/")
