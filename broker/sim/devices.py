"""The device plugin's side of MIG: which MIG device a workload was given.

A workload names the GPU instance it holds (``mig_instance``); the simulated device plugin
gives its container ``NVIDIA_VISIBLE_DEVICES=MIG-<uuid>`` of that instance, the uuid the
node's agent reports for it (the agent's fake backend is the one view of the node's GPUs).
The allocation was made when the pod started, so it is looked up on the node as it was
then: before any fault (a GPU that fell off the bus since lists no MIG devices).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .errors import SimScenarioError
from .scenario import WorkloadSpec

MIG_PREFIX = "nvidia.com/mig-"
_HOLDS = ("Pending", "Running")  # pods whose devices the kubelet still holds


def mig_devices(
    workloads: Sequence[WorkloadSpec], agent_scenario: Callable[[str], dict[str, Any]]
) -> dict[tuple[str, str], str]:
    """(namespace, name) -> the MIG device uuid of each workload that names a
    ``mig_instance``. Raises SimScenarioError naming the key when the instance does not
    exist on the workload's node, carries another profile, or is held by another pod."""
    out: dict[tuple[str, str], str] = {}
    held: dict[tuple[str, int], str] = {}
    uuids: dict[str, dict[int, tuple[str | None, str | None]]] = {}
    for i, w in enumerate(workloads):
        if w.mig_instance is None:
            continue
        where = f"workloads[{i}].mig_instance"
        if w.node is None:
            raise SimScenarioError(f"{where}: needs a node (a Pending pod holds no device)")
        if not w.gpu_resource.startswith(MIG_PREFIX) or w.gpus != 1:
            raise SimScenarioError(
                f"{where}: needs gpus: 1 of a MIG resource (gpu_resource: nvidia.com/mig-...)"
            )
        if w.node not in uuids:
            uuids[w.node] = _instances(w.node, agent_scenario(w.node))
        listed = uuids[w.node]
        if w.mig_instance not in listed:
            have = ", ".join(map(str, sorted(listed))) or "none (give the node a 'mig' entry)"
            raise SimScenarioError(
                f"{where}: {w.node} has no MIG GPU instance {w.mig_instance}; it has {have}"
            )
        uuid, profile = listed[w.mig_instance]
        wanted = w.gpu_resource[len(MIG_PREFIX) :]
        if profile != wanted:
            raise SimScenarioError(
                f"{where}: instance {w.mig_instance} of {w.node} is a {profile} slice, but the "
                f"pod requests {w.gpu_resource}"
            )
        if w.phase in _HOLDS:
            other = held.get((w.node, w.mig_instance))
            if other is not None:
                raise SimScenarioError(
                    f"{where}: instance {w.mig_instance} of {w.node} is already held by {other}"
                )
            held[(w.node, w.mig_instance)] = f"{w.namespace}/{w.name}"
        if uuid:
            out[(w.namespace, w.name)] = uuid
    return out


def _instances(node: str, scenario: dict[str, Any]) -> dict[int, tuple[str | None, str | None]]:
    """GPU instance id -> (MIG device uuid, profile) on *node*, before any fault."""
    from agent.fake import FakeBackend  # the agent's own view of the node, loaded on demand

    before = {k: v for k, v in scenario.items() if k != "faults"}
    return {
        m.gpu_instance_id: (m.uuid, m.profile)
        for g in FakeBackend(before, source=f"node {node}").inventory()
        for m in g.mig_instances
    }
