"""Who holds which GPU (broker.diagnosis.allocation): requests as the scheduler counts them, node
totals, and every way a pod's devices can (or cannot) be known."""

from __future__ import annotations

from broker.diagnosis.allocation import (
    allocation_state,
    covers_gpu,
    gpu_assignment,
    node_resources,
    pod_requests,
    pod_summary,
    quantity,
)
from broker.diagnosis.mig import pod_slices, relation
from tests.broker import podfactory as pf

UID = "11111111-2222-3333-4444-555555555555"


def test_requests_count_containers_and_the_largest_init_container() -> None:
    init = [
        {"name": "warm", "resources": {"limits": {"nvidia.com/gpu": "3"}}},
        {"name": "fetch", "resources": {"limits": {"cpu": "1"}}},
    ]
    p = pf.pod(gpus=2, init_containers=init)
    p["spec"]["containers"].append(
        {"name": "side", "resources": {"requests": {"nvidia.com/gpu": "1"}}}
    )
    assert pod_requests(p) == {"nvidia.com/gpu": 3}  # max(3, 2 + 1)
    p["spec"]["containers"][1]["resources"]["requests"]["nvidia.com/gpu"] = "2"
    assert pod_requests(p) == {"nvidia.com/gpu": 4}
    summary = pod_summary(p)
    assert [c["name"] for c in summary["containers"]] == ["warm", "main", "side"]
    assert summary["containers"][0]["init"] is True
    assert summary["owner"] == "Job/trainer"
    assert pod_requests(pf.pod(gpus=0)) == {}


def test_quantities_are_integers_or_zero() -> None:
    assert [quantity(v) for v in ("8", 2, " 3 ", "1k", None, "x")] == [8, 2, 3, 0, 0, 0]


def test_states_follow_the_kubelet() -> None:
    running = pf.pod(phase="Running", state={"running": {}})
    assert allocation_state(running) == "holding"
    assert allocation_state(pf.pod(phase="Failed")) == "released"
    assert allocation_state(pf.pod(phase="Succeeded")) == "released"
    assert allocation_state(pf.pod(node=None, phase="Pending")) == "waiting"


def test_node_resources_count_only_pods_that_hold_devices_there() -> None:
    node = pf.node(capacity=8, allocatable=7, extra_capacity={"nvidia.com/mig-1g.10gb": "2"})
    pods = [
        pf.pod(name="a", gpus=4, phase="Running", state={"running": {}}),
        pf.pod(name="b", gpus=8, phase="Failed"),  # finished: released
        pf.pod(name="c", gpus=2, phase="Running", state={"running": {}}, node="gpu-2"),
        pf.pod(name="d", gpus=1, resource="nvidia.com/mig-1g.10gb", phase="Running", state={}),
    ]
    res = node_resources(node, pods)
    assert res["nvidia.com/gpu"] == {
        "capacity": 8,
        "allocatable": 7,
        "allocated": 4,
        "free": 3,
        "withdrawn": 1,
    }
    assert res["nvidia.com/mig-1g.10gb"]["allocated"] == 1
    unknown = node_resources(node, None)
    assert unknown["nvidia.com/gpu"]["allocated"] is None
    assert unknown["nvidia.com/gpu"]["free"] is None


def test_agent_process_mapping_names_the_pods_gpus() -> None:
    p = pf.pod(gpus=2, phase="Running", state={"running": {}}, uid=UID)
    a = gpu_assignment(p, pf.node(), processes=pf.processes({1: UID, 4: UID, 5: "other"}))
    assert a["known"] and [g["index"] for g in a["gpus"]] == [1, 4]
    assert a["gpus"][0]["uuid"] == "GPU-00000001"
    assert covers_gpu(a, 4, None) is True
    assert covers_gpu(a, 5, None) is False
    assert covers_gpu(a, None, "GPU-00000001") is True


def test_visible_devices_in_the_pod_spec_name_gpus_and_mig_instances() -> None:
    env = [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "GPU-00000003,MIG-0-1"}]
    p = pf.pod(gpus=1, env=env, phase="Running", state={})
    a = gpu_assignment(p, pf.node(), inventory=pf.inventory(mig={0: ["3g.40gb", "1g.10gb"]}))
    assert a["source"] == "pod spec: NVIDIA_VISIBLE_DEVICES"
    assert a["gpus"][0] == {"index": 3, "uuid": "GPU-00000003"}
    assert a["gpus"][1] == {
        "index": 0,
        "uuid": "GPU-00000000",
        "mig_uuid": "MIG-0-1",
        "mig_profile": "1g.10gb",  # the slice, from the inventory: its profile and instance
        "gpu_instance_id": 2,
    }
    by_index = gpu_assignment(
        pf.pod(gpus=1, env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "2"}]), pf.node()
    )
    assert by_index["gpus"] == [{"index": 2, "uuid": None}]
    everything = pf.pod(gpus=1, env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}])
    assert gpu_assignment(everything, pf.node())["known"] is False


def test_whole_node_pods_hold_every_full_gpu() -> None:
    p = pf.pod(gpus=8)
    a = gpu_assignment(p, pf.node(capacity=8, allocatable=7))
    assert a["known"] and len(a["gpus"]) == 8 and "all 8 GPUs" in a["source"]
    # MIG on GPU 0: nvidia.com/gpu counts the 7 full GPUs, 1..7.
    mig_node = pf.node(capacity=7, extra_capacity={"nvidia.com/mig-1g.10gb": "2"})
    assert gpu_assignment(pf.pod(gpus=7), mig_node)["known"] is False  # no inventory: unsure
    inv = pf.inventory(mig={0: ["1g.10gb", "1g.10gb"]})
    a = gpu_assignment(pf.pod(gpus=7), mig_node, inventory=inv)
    assert [g["index"] for g in a["gpus"]] == [1, 2, 3, 4, 5, 6, 7]
    # Facts about another node say nothing.
    assert gpu_assignment(p, pf.node(name="gpu-9"))["known"] is False


def test_a_mig_profile_on_one_gpu_only_pins_the_gpu_not_the_instance() -> None:
    p = pf.pod(gpus=1, resource="nvidia.com/mig-1g.10gb", phase="Running", state={})
    inv = pf.inventory(mig={0: ["3g.40gb", "1g.10gb", "1g.10gb"]})
    a = gpu_assignment(p, pf.node(capacity=7), inventory=inv)
    assert a["gpus"] == [{"index": 0, "uuid": "GPU-00000000", "mig_profile": "1g.10gb"}]
    assert "2 1g.10gb instances" in a["note"]
    two = pf.inventory(mig={0: ["1g.10gb"], 1: ["1g.10gb"]})
    assert gpu_assignment(p, pf.node(capacity=6), inventory=two)["known"] is False


def test_unknown_assignments_say_why_and_which_chart_value_would_tell() -> None:
    running = pf.pod(gpus=2, phase="Running", state={"running": {}})
    no_agent = gpu_assignment(running, pf.node())
    assert not no_agent["known"] and no_agent["gpus"] is None
    assert "agent could not be asked" in no_agent["note"]
    assert "hostProc.enabled=true" in no_agent["note"]
    off = gpu_assignment(running, pf.node(), processes=pf.processes({0: None}, enabled=False))
    assert "without host /proc" in off["note"] and "hostProc.enabled=true" in off["note"]
    on = gpu_assignment(running, pf.node(), processes=pf.processes({0: "someone-else"}))
    assert "sees no GPU process of this pod" in on["note"]
    assert "hostProc" not in on["note"]  # mapping is on already
    finished = gpu_assignment(pf.pod(gpus=2), pf.node())
    assert "has finished" in finished["note"] and "held 2 nvidia.com/gpu" in finished["note"]
    assert covers_gpu(finished, 3, None) is None


def test_a_process_in_a_mig_gpu_instance_pins_the_pods_slice() -> None:
    p = pf.pod(gpus=1, resource="nvidia.com/mig-1g.10gb", phase="Running", uid=UID)
    procs = pf.processes({0: UID})
    procs["gpus"][0]["processes"][0].update(gpu_instance_id=2, compute_instance_id=0)
    inv = pf.inventory(mig={0: ["1g.10gb", "1g.10gb", "3g.40gb"]})
    a = gpu_assignment(p, pf.node(capacity=7), processes=procs, inventory=inv)
    assert a["gpus"] == [
        {
            "index": 0,
            "uuid": "GPU-00000000",
            "gpu_instance_id": 2,
            "mig_uuid": "MIG-0-1",
            "mig_profile": "1g.10gb",
        }
    ]
    assert a["source"].endswith("pid 100 (python3) runs in GPU 0's MIG 1g.10gb GPU instance 2")
    (mine,) = pod_slices(a, inv)
    assert (mine["gpu_instance_id"], mine["candidates"], mine["memory_mib"]) == (2, [2], 9984)
    own = {"gpu_index": 0, "gpu_instance_id": 2, "xid": 31, "immediate_action": "RESTART_APP"}
    assert relation(own, [mine], ["1g.10gb"]) == "own"
    assert relation({**own, "gpu_instance_id": 1}, [mine], ["1g.10gb"]) == "other"
    # Without an inventory the instance the agent saw still pins the slice.
    (bare,) = pod_slices(gpu_assignment(p, pf.node(capacity=7), processes=procs), None)
    assert (bare["gpu_instance_id"], bare["candidates"]) == (2, [2])


def test_processes_outside_mig_pin_whole_gpus_only() -> None:
    p = pf.pod(gpus=1, phase="Running", uid=UID)
    procs = pf.processes({3: UID})
    procs["gpus"][3]["processes"][0].update(gpu_instance_id=None, compute_instance_id=None)
    a = gpu_assignment(p, pf.node(), processes=procs, inventory=pf.inventory())
    assert a["gpus"] == [{"index": 3, "uuid": "GPU-00000003"}]
    assert a["source"] == "agent: GPU processes mapped to pods through the host's /proc"
    assert pod_slices(a, pf.inventory()) == []
