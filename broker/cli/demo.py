"""``make demo`` / ``python -m broker.cli.demo``: the product on a simulated cluster.

Starts the simulated cluster (every exec runs the real ``gpu-agent`` as a process, with
the fake NVML backend), sweeps GPU health across it, diagnoses the worst node, explains
the failed pod on that node, and stops
the sim. Needs no kubectl, no cluster and no GPU; takes a few seconds.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import anyio
from rich.console import Console
from rich.rule import Rule
from rich.text import Text

from broker.cli.render import diagnose_report, sweep_table
from broker.cli.render_explain import render_explanation
from broker.diagnosis.gather import explain_pod
from broker.errors import BrokerError
from broker.fleet.context import BrokerContext
from broker.fleet.operations import diagnose, run_tool
from broker.kube.config import ClusterConfig
from broker.kube.reader import ClusterReader
from broker.sim import SimServer, sim_in_thread

__all__ = ["main", "run_demo"]

NODES = 10


def _step(console: Console, command: str, why: str) -> None:
    console.print()
    console.print(Rule(Text(f"$ {command}", style="bold cyan"), align="left"))
    console.print(Text(why, style="dim"))


async def _failed_pod_on(ctx: BrokerContext, node: str) -> tuple[str, str] | None:
    """A failed pod on ``node`` (namespace, name), through the cluster reader."""
    reader = ClusterReader(await ctx.api())
    pods = await reader.pods(field_selector=f"spec.nodeName={node},status.phase=Failed")
    if not pods:
        return None
    meta = pods[0].get("metadata") or {}
    return str(meta.get("namespace")), str(meta.get("name"))


async def run_demo(sim: SimServer, console: Console) -> int:
    """Sweep, diagnose the worst node, explain its failed pod. Returns an exit code."""
    config = ClusterConfig(kubeconfig=str(sim.kubeconfig))
    async with BrokerContext.open(config, call_timeout=20.0) as ctx:
        _step(
            console,
            "broker sweep",
            "GPU health on every GPU node at once, over one pods/exec session per node.",
        )
        started = time.monotonic()
        answer = await run_tool(ctx, "get_gpu_health", {})
        console.print(sweep_table(answer))
        console.print(
            Text(
                f"Swept {answer['summary']['nodes']['total']} nodes in "
                f"{time.monotonic() - started:.2f} s. The MCP tool get_gpu_health returns the "
                "same answer as JSON to an IDE or LLM agent (`broker serve`).",
                style="dim",
            )
        )
        if not answer["nodes"]:
            console.print("No unhealthy node to diagnose.")
            return 0
        worst = str(answer["nodes"][0]["node"])
        _step(
            console,
            f"broker diagnose {worst}",
            "The worst node in detail: health, XIDs, processes, NVLink and hardware.",
        )
        console.print(diagnose_report(await diagnose(ctx, worst)))
        await _explain_step(ctx, console, worst)
    return 0


async def _explain_step(ctx: BrokerContext, console: Console, node: str) -> None:
    found = await _failed_pod_on(ctx, node)
    if found is None:
        return
    namespace, pod = found
    _step(
        console,
        f"broker explain {pod} -n {namespace}",
        f"Why did the pod on {node} die: hardware, driver or the application?",
    )
    result = await explain_pod(ctx, pod, namespace)
    console.print(render_explanation(result))


def main() -> int:
    """Run the demo; exit code 0 when it completed."""
    out = Console(emoji=False, highlight=False)
    console = out if out.is_terminal else Console(emoji=False, highlight=False, width=120)
    console.print(Rule(Text("k8s-gpu-mcp demo", style="bold")))
    console.print(
        f"Starting a simulated cluster: {NODES} GPU nodes; each exec into an agent pod runs "
        "the real gpu-agent (fake NVML backend) ..."
    )
    started = time.monotonic()
    try:
        with sim_in_thread(nodes=NODES, scenario=None, in_process=False) as sim:
            console.print(
                f"Simulated API server at {sim.url} ready in {time.monotonic() - started:.1f} s "
                f"(kubeconfig {sim.kubeconfig})."
            )
            code = anyio.run(run_demo, sim, console)
            console.print()
            console.print(Rule(Text("stopping the simulated cluster", style="dim")))
    except BrokerError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    broker = _broker_command()
    kubeconfig = "/tmp/k8s-gpu-mcp-sim.kubeconfig"
    console.print("Try it yourself, in two terminals (or an IDE on `broker serve`, README):")
    console.print(f"  {broker} sim --kubeconfig {kubeconfig}", markup=False)
    console.print(f"  {broker} sweep --kubeconfig {kubeconfig}", markup=False)
    activate = Path(broker).with_name("activate")
    if broker != "broker" and activate.exists():
        console.print(f"(`source {activate}` puts `broker` on your PATH.)", markup=False)
    return code


def _broker_command() -> str:
    """`broker` as the user can type it after the demo: ``make demo`` runs with the venv on
    its own PATH only, so name the venv's script unless PATH already resolves to it."""
    beside = Path(sys.executable).with_name("broker")
    if not beside.exists():
        return "broker"
    try:
        return str(beside.relative_to(Path.cwd()))  # .venv/bin/broker from the checkout
    except ValueError:
        on_path = shutil.which("broker")
        same = on_path is not None and Path(on_path).resolve() == beside.resolve()
        return "broker" if same else str(beside)


if __name__ == "__main__":
    sys.exit(main())
