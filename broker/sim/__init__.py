"""A simulated Kubernetes cluster of GPU nodes that real kubectl, helm,
kubernetes-asyncio and kubernetes-mcp-server talk to: discovery, nodes, pods, events,
the pods' owners (DaemonSets, Jobs, ...), leases, nodes/proxy, RBAC, and pods/exec into
the real agent.

    async with start_sim(nodes=20) as sim:     # or: with sim_in_thread(nodes=20) as sim:
        sim.kubeconfig, sim.url, sim.token, sim.nodes
        sim.faults("gpu-node-003").api_429 = 2
"""

from __future__ import annotations

from .auth import Rule
from .cluster import SimCluster
from .errors import SimError, SimScenarioError, SimStartError
from .scenario import NodeFaults, Scenario, load_scenario
from .server import SimServer, sim_in_thread, start_sim

__all__ = [
    "NodeFaults",
    "Rule",
    "Scenario",
    "SimCluster",
    "SimError",
    "SimScenarioError",
    "SimServer",
    "SimStartError",
    "load_scenario",
    "sim_in_thread",
    "start_sim",
]
