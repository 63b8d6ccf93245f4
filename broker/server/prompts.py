"""MCP prompts for the workflows people run: a node health check, XID triage, failed-pod
triage, finding the slow node, and why a multi-node job died. Each names the tools to call,
in order, and what to look for, so an LLM client follows the same path an experienced SRE
would."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver.prompts.base import Prompt

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

__all__ = [
    "PROMPT_NAMES",
    "failed_pod_triage",
    "find_slow_node",
    "job_failure_triage",
    "node_health_check",
    "register_prompts",
    "xid_triage",
]

PROMPT_NAMES = (
    "node_health_check",
    "xid_triage",
    "failed_pod_triage",
    "find_slow_node",
    "job_failure_triage",
)

_RULES = (
    "Ground rules: every tool is read-only. Quote the evidence lines you rely on. Never "
    "blame the hardware without hardware evidence (an XID or a GPU health issue); an "
    "OOMKilled container ran out of host memory, not GPU memory. If an answer is partial "
    "(its `missing` list is not empty), say what was missing and the permission that "
    "would give it."
)


def node_health_check(node: str) -> str:
    """Check one GPU node end to end: Kubernetes' view, the GPUs, XIDs, who uses them."""
    return f"""Check the health of Kubernetes GPU node {node}. Call the tools in this order:

1. describe_gpu_node(node="{node}") — the one-line verdict, GPU labels, capacity vs
   allocatable nvidia.com/gpu (allocatable below capacity = GPUs withdrawn by the device
   plugin), conditions, GPU-health taints, cordon, the agent pod's state, GPU health.
   If the agent is not ready, report its reason and stop at what Kubernetes shows.
2. get_gpu_health(node="{node}") — per-GPU status and each issue's recommended action.
3. analyze_xid_errors(node="{node}", since_minutes=1440) — driver-reported faults of the
   last day, with NVIDIA's recommended action per XID.
4. get_pod_gpu_allocation(node="{node}") — which pods hold the GPUs, so you can say
   whose work a faulty GPU affects.
5. Only if NVLink or multi-GPU problems showed up: get_nvlink_topology(node="{node}").

Finish with: the node's status in one line, each unhealthy GPU with its issue and the
recommended action, the pods affected, and the commands to run (cordon/drain only when a
GPU needs a reset or the node a reboot).

{_RULES}"""


def xid_triage(node: str = "", since_minutes: str = "60") -> str:
    """Triage XID errors: which nodes and GPUs, how bad, which pods were hit, what to do."""
    target = f'node="{node}", ' if node else ""
    scope = f"node {node}" if node else "every GPU node"
    return f"""Triage NVIDIA XID errors on {scope} over the last {since_minutes} minutes.

1. analyze_xid_errors({target}since_minutes={since_minutes}) — XIDs grouped per GPU with
   severity and NVIDIA's recommended action. Critical first.
2. For each node with a critical XID: describe_gpu_node(node=<node>) — is the GPU withdrawn
   (allocatable < capacity), is the node tainted or cordoned, is the GPU lost now?
3. get_pod_gpu_allocation(node=<node>) — the pods holding GPUs there.
4. For pods on that node that failed around the XID's time:
   explain_failure(pod=<pod>, namespace=<namespace>) — confirms or rules out the XID as
   the cause, with a timeline.

Classify each XID by NVIDIA's catalog: application faults (13, 31, 43: restart the app,
the GPU is fine), memory errors (48, 63, 64, 94, 95: check row remapping, reset the GPU),
fallen off the bus (79: drain and power-cycle), NVLink (74), recovery requests (154:
do what it names). Xid 45 is usually a side effect of another XID or a killed process.

Report per node: the XIDs, the GPUs, the pods hit, and the recommended action as
commands.

{_RULES}"""


def failed_pod_triage(pod: str, namespace: str = "") -> str:
    """Why did a pod fail, and what to do now."""
    ns_arg = f', namespace="{namespace}"' if namespace else ""
    ns_flag = f" -n {namespace}" if namespace else ""
    return f"""Find out why pod {pod}{" in namespace " + namespace if namespace else ""} \
failed: hardware, driver, application or infrastructure.

1. explain_failure(pod="{pod}"{ns_arg}) — the verdict with its confidence, evidence,
   timeline (container exits, events, XIDs) and next steps.
2. If the verdict is hardware or driver, or the confidence is not high:
   describe_gpu_node(node=<the pod's node>) and
   analyze_xid_errors(node=<the pod's node>, since_minutes=<minutes since the failure + 15>).
3. get_pod_gpu_allocation(pod="{pod}"{ns_arg}) — which GPUs it held, if that can be known.
4. If the verdict is application: the container's own logs
   (`kubectl logs {pod}{ns_flag} --previous` for a restarted container) explain the rest.

Answer with the verdict and confidence, the two or three evidence lines that decide it,
and the next steps as commands (from explain_failure's next_steps and NVIDIA's action).

{_RULES}"""


def find_slow_node(job: str = "", namespace: str = "") -> str:
    """My job got slower: which node (and which GPU) is holding it back, and why."""
    scope = f'job="{job}", namespace="{namespace}"' if job else ""
    what = f"job {namespace}/{job}" if job else "the cluster's GPU nodes"
    return f"""Find the node that slows down {what}.

1. find_stragglers({scope}) — nodes whose live readings lag their peers of the same GPU
   product (SM clock under load, power/thermal throttling, temperature, power draw,
   utilisation, PCIe replays, NVLink errors), ranked, each with the reading and the GPU.
2. find_config_drift({"nodes=[...the job's nodes]" if job else ""}) — settings that
   differ from the majority (driver, VBIOS, power limit, clocks, PCIe link width/generation,
   NVLink links up, InfiniBand ports): the usual cause of a node that is slow all the time.
3. For the top straggler: get_gpu_health(node=<node>) for the GPU's issues and actions,
   and get_nvlink_topology(node=<node>) when NVLink errors showed up.

Answer with the slowest node and GPU, the reading that shows it (value vs the peers'
median), the likely cause (thermal, power cap, PCIe link, NVLink, configuration drift) and
what to do (cordon it and re-run the job elsewhere; fix cooling, power cap or the link).
A fleet-wide condition (every node power-capped) is not a straggler.

{_RULES}"""


def job_failure_triage(job: str, namespace: str) -> str:
    """Why did my multi-node job die: which rank failed first, and was it the hardware?"""
    return f"""Find out why distributed job {namespace}/{job} died.

1. explain_job(job="{job}", namespace="{namespace}") — the job's pods and ranks in the
   order they failed, the first failure's verdict (hardware / driver / application /
   infrastructure) with evidence, and which ranks died afterwards on NCCL/collective
   timeouts (a consequence, not a cause).
2. If the first failure is hardware or driver: describe_gpu_node(node=<its node>) and
   analyze_xid_errors(node=<its node>, since_minutes=<minutes since the failure + 15>).
3. If the confidence is not high (two ranks failed within seconds, or the first failure
   has no evidence): explain_failure(pod=<the second pod>, namespace="{namespace}").

Answer with one chain: "rank R on node N died first at T, <cause with evidence>; the
other ranks exited afterwards with collective timeouts", then the next steps as commands
(cordon the node before re-submitting when the cause is hardware).

{_RULES}"""


def register_prompts(app: MCPServer[Any]) -> None:
    """Add the workflow prompts to ``app``."""
    for fn, title in (
        (node_health_check, "GPU node health check"),
        (xid_triage, "XID triage"),
        (failed_pod_triage, "Failed-pod triage"),
        (find_slow_node, "Find the slow node"),
        (job_failure_triage, "Why did my job die"),
    ):
        app.add_prompt(Prompt.from_function(fn, title=title))
