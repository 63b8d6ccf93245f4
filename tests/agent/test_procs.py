"""pid -> pod / process name from a host /proc (agent.procs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import procs

UID = "3f1c2a9e-5b7d-4e21-9c0a-8d4b6e2f1a07"
UID_ = UID.replace("-", "_")
STATIC_UID = "6f9e2b7c1d0a4e5f8a3b2c1d0e9f8a7b"  # static (mirror) pods: 32-hex config hash
CID = "9a1b" * 16  # 64 hex
V1_CONTROLLERS = [
    "12:pids",
    "11:memory",
    "10:devices",
    "9:cpu,cpuacct",
    "8:blkio",
    "1:name=systemd",
]

# (case, cgroup path of the container, expected runtime, expected qos, expected uid)
CASES = [
    (
        "v2-systemd-containerd-besteffort",
        f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope",
        "containerd",
        "besteffort",
        UID,
    ),
    (
        "v2-systemd-containerd-guaranteed",
        f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope",
        "containerd",
        "guaranteed",
        UID,
    ),
    (
        "v2-systemd-crio-burstable",
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"crio-{CID}.scope",
        "cri-o",
        "burstable",
        UID,
    ),
    (
        "v2-systemd-docker",
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"docker-{CID}.scope",
        "docker",
        "burstable",
        UID,
    ),
    (
        "v2-cgroupfs-bare-id",
        f"/kubepods/burstable/pod{UID}/{CID}",
        None,  # containerd and docker both use the bare id under cgroupfs
        "burstable",
        UID,
    ),
    (
        "v2-cgroupfs-crio",
        f"/kubepods/besteffort/pod{UID}/crio-{CID}",
        "cri-o",
        "besteffort",
        UID,
    ),
    (
        "v2-containerd-service-nested",  # kind / containerd inside a systemd service
        f"/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{CID}",
        "containerd",
        "burstable",
        UID,
    ),
    (
        "v2-relative-to-own-cgroupns",
        f"/../../kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope",
        "containerd",
        "besteffort",
        UID,
    ),
    (
        "v2-static-pod",
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/"
        f"cri-containerd-{CID}.scope",
        "containerd",
        "burstable",
        STATIC_UID,
    ),
]


def write_proc(
    root: Path,
    pid: int,
    cgroup: str | None = None,
    comm: str | None = None,
    cmdline: bytes | None = None,
) -> None:
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    if cgroup is not None:
        (d / "cgroup").write_text(cgroup)
    if comm is not None:
        (d / "comm").write_text(comm + "\n")
    if cmdline is not None:
        (d / "cmdline").write_bytes(cmdline)


def v2(path: str) -> str:
    return f"0::{path}\n"


def v1(path: str) -> str:
    return "".join(f"{c}:{path}\n" for c in V1_CONTROLLERS) + "0::/\n"


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(
    ("case", "path", "runtime", "qos", "uid"), CASES, ids=[c[0] for c in CASES]
)
def test_pod_for_pid_every_runtime_and_driver(
    tmp_path: Path, version: str, case: str, path: str, runtime: str | None, qos: str, uid: str
) -> None:
    text = v1(path) if version == "v1" else v2(path)
    write_proc(tmp_path, 4242, cgroup=text)
    assert procs.pod_for_pid(str(tmp_path), 4242) == {
        "pod_uid": uid,
        "container_id": CID,
        "runtime": runtime,
        "qos_class": qos,
    }


def test_pod_cgroup_without_container_scope(tmp_path: Path) -> None:
    # the pause/sandbox-less pod-level cgroup: the pod is known, the container is not
    write_proc(tmp_path, 7, cgroup=v2(f"/kubepods/burstable/pod{UID}"))
    assert procs.pod_for_pid(str(tmp_path), 7) == {
        "pod_uid": UID,
        "container_id": None,
        "runtime": None,
        "qos_class": "burstable",
    }


def test_crio_conmon_is_not_a_container(tmp_path: Path) -> None:
    write_proc(
        tmp_path,
        8,
        cgroup=v2(
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
            f"crio-conmon-{CID}.scope"
        ),
    )
    found = procs.pod_for_pid(str(tmp_path), 8)
    assert found is not None
    assert found["pod_uid"] == UID
    assert found["container_id"] is None


@pytest.mark.parametrize(
    "text",
    [
        "0::/\n",
        "0::/system.slice/sshd.service\n",
        "0::/user.slice/user-1000.slice/session-3.scope\n",
        "12:pids:/system.slice/containerd.service\n1:name=systemd:/init.scope\n",
        f"0::/k8s.io/{CID}\n",  # nerdctl container, not a pod
        "0::/kubepods.slice\n",  # kubepods without a pod
        "",
        "garbage without colons\n",
    ],
)
def test_non_pod_processes_map_to_none(tmp_path: Path, text: str) -> None:
    write_proc(tmp_path, 10, cgroup=text)
    assert procs.pod_for_pid(str(tmp_path), 10) is None


def test_vanished_and_invalid_pids(tmp_path: Path) -> None:
    assert procs.pod_for_pid(str(tmp_path), 999_999) is None
    assert procs.pod_for_pid(str(tmp_path), 0) is None
    assert procs.pod_for_pid(str(tmp_path), -1) is None
    assert procs.pod_for_pid(str(tmp_path / "not-mounted"), 1) is None
    write_proc(tmp_path, 11)  # directory exists, cgroup file gone (exited mid-read)
    assert procs.pod_for_pid(str(tmp_path), 11) is None
    assert procs.process_name(str(tmp_path), 11) is None
    assert procs.process_name(str(tmp_path), 999_999) is None
    assert procs.process_name(str(tmp_path), 0) is None


def test_real_proc_of_this_process_is_readable() -> None:
    # The test runner is not in a pod here; the real file must parse without error.
    text = Path(f"/proc/{os.getpid()}/cgroup").read_text()
    assert procs.pod_for_pid("/proc", os.getpid()) == procs.parse_cgroup(text)
    comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    name = procs.process_name("/proc", os.getpid())
    assert name is not None and name.startswith(comm)
    assert procs.process_name(None, os.getpid()) == name


def test_process_name_prefers_comm(tmp_path: Path) -> None:
    write_proc(tmp_path, 20, comm="python3", cmdline=b"/usr/bin/python3\0train.py\0")
    assert procs.process_name(str(tmp_path), 20) == "python3"


def test_process_name_restores_a_truncated_comm(tmp_path: Path) -> None:
    write_proc(
        tmp_path,
        21,
        comm="pt_main_thread_",  # 15 characters: the kernel cut it
        cmdline=b"/opt/bin/pt_main_thread_worker\0--rank\x000\0",
    )
    assert procs.process_name(str(tmp_path), 21) == "pt_main_thread_worker"


def test_process_name_keeps_comm_when_cmdline_disagrees(tmp_path: Path) -> None:
    # a process that rewrote its argv (e.g. "nginx: worker process")
    write_proc(tmp_path, 22, comm="abcdefghijklmno", cmdline=b"something else entirely")
    assert procs.process_name(str(tmp_path), 22) == "abcdefghijklmno"


def test_process_name_kernel_thread_and_missing_comm(tmp_path: Path) -> None:
    write_proc(tmp_path, 23, comm="kworker/u16:2-events_unbound"[:15], cmdline=b"")
    assert procs.process_name(str(tmp_path), 23) == "kworker/u16:2-e"
    write_proc(tmp_path, 24, cmdline=b"/usr/local/bin/gpu-burn\0-d\0")
    assert procs.process_name(str(tmp_path), 24) == "gpu-burn"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=120),
            st.lists(
                st.sampled_from(
                    [
                        "0::",
                        "1:name=systemd:",
                        "/kubepods",
                        ".slice",
                        "/kubepods-burstable-pod",
                        UID_,
                        UID,
                        "/cri-containerd-",
                        ":crio:",
                        CID,
                        ".scope",
                        "/",
                        ":",
                        "pod",
                    ]
                ),
                max_size=10,
            ).map("".join),
        ),
        max_size=6,
    )
)
def test_parse_cgroup_never_raises(lines: list[str]) -> None:
    found = procs.parse_cgroup("\n".join(lines))
    if found is not None:
        assert found["pod_uid"] and "_" not in found["pod_uid"]
        assert found["container_id"] is None or len(found["container_id"]) == 64
