"""``broker``: the command line (typer only; what each command does is in broker.cli.commands)."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from broker.kube.names import DEFAULT_NAMESPACE

if TYPE_CHECKING:  # the commands (and the MCP SDK) load only when a command runs
    from broker.cli.commands import CommonOptions

__all__ = ["app", "main", "make_app"]

TOKEN_ENV = "K8S_GPU_MCP_TOKEN"


class Output(StrEnum):
    table = "table"
    json = "json"


class Transport(StrEnum):
    stdio = "stdio"
    http = "http"


Kubeconfig = Annotated[
    str | None,
    typer.Option(
        "--kubeconfig",
        help="Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).",
        rich_help_panel="Cluster",
    ),
]
Context = Annotated[
    str | None,
    typer.Option(
        "--context", help="Kubeconfig context to use (default: current).", rich_help_panel="Cluster"
    ),
]
Namespace = Annotated[
    str,
    typer.Option(
        "--namespace",
        "-n",
        help="Namespace of the agent pods (the Helm release's namespace).",
        rich_help_panel="Cluster",
    ),
]
Timeout = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=0.1,
        help="Deadline in seconds for each node (its own session open and call; a "
        "sweep as a whole gets max(this, 120 s)).",
        rich_help_panel="Cluster",
    ),
]
Concurrency = Annotated[
    int,
    typer.Option(
        "--concurrency",
        min=1,
        max=1024,
        help="The most node sessions opening at once (the limit adapts below it).",
        rich_help_panel="Cluster",
    ),
]
OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="table for people, json for scripts.")
]
Selector = Annotated[
    str | None,
    typer.Option(
        "--selector",
        "-l",
        help="Label selector on node labels, e.g. -l nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3.",
    ),
]
Since = Annotated[
    float | None,
    typer.Option(
        "--since", min=0.1, help="Look back this many minutes for XIDs (agent default 60)."
    ),
]


def _opts(
    kubeconfig: str | None, context: str | None, namespace: str, timeout: float, concurrency: int
) -> CommonOptions:
    from broker.cli.commands import CommonOptions

    return CommonOptions(kubeconfig, context, namespace, timeout, concurrency)


def nodes(
    selector: Selector = None,
    output: OutputOpt = Output.table,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = DEFAULT_NAMESPACE,
    timeout: Timeout = 30.0,
    concurrency: Concurrency = 64,
) -> None:
    """List the GPU nodes, their agent pods, and why any of them cannot be diagnosed.

    Contacts no node (API server only). Exit code 3 when some GPU node has no usable agent pod.
    """
    opts = _opts(kubeconfig, context, namespace, timeout, concurrency)
    from broker.cli.commands import run_nodes

    raise typer.Exit(run_nodes(opts, selector, output.value))


def sweep(
    selector: Selector = None,
    node: Annotated[
        list[str] | None,
        typer.Option("--node", help="Check only this node (repeat for several)."),
    ] = None,
    since: Since = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="At most this many detailed node entries.")
    ] = 50,
    output: OutputOpt = Output.table,
    kubeconfig: Kubeconfig = None,
    context: Annotated[
        list[str] | None,
        typer.Option(
            "--context",
            help="Kubeconfig context to use (default: current); repeat to sweep several "
            "clusters at once (nodes then show as CONTEXT/NODE).",
            rich_help_panel="Cluster",
        ),
    ] = None,
    all_contexts: Annotated[
        bool,
        typer.Option(
            "--all-contexts",
            help="Sweep every context in the kubeconfig (one summary per cluster).",
            rich_help_panel="Cluster",
        ),
    ] = False,
    namespace: Namespace = DEFAULT_NAMESPACE,
    timeout: Timeout = 30.0,
    concurrency: Concurrency = 64,
) -> None:
    """Check GPU health on every GPU node at once; worst nodes first.

    Each node's agent judges its GPUs (temperatures, ECC, row remapping, XIDs, fallen off
    the bus, NVLink/PCIe errors, throttling). Nodes that cannot be checked are listed with
    the reason. --output json prints the same answer the MCP tool get_gpu_health gives.

    Exit codes: 0 fine; 1 the command failed (message on stderr); 2 a GPU node is
    critical; 3 a node could not be checked (none critical).
    """
    contexts = list(dict.fromkeys(context or ()))
    several = ["*"] if all_contexts else contexts if len(contexts) > 1 else []
    one = contexts[0] if contexts and not several else None
    opts = _opts(kubeconfig, one, namespace, timeout, concurrency)
    from broker.cli.commands import run_sweep

    code = run_sweep(
        opts,
        selector=selector,
        nodes=node,
        since_minutes=since,
        limit=limit,
        output=output.value,
        contexts=several,
    )
    raise typer.Exit(code)


def diagnose(
    node: Annotated[str, typer.Argument(help="The GPU node's name (see `broker nodes`).")],
    since: Since = None,
    output: OutputOpt = Output.table,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = DEFAULT_NAMESPACE,
    timeout: Timeout = 30.0,
    concurrency: Concurrency = 64,
) -> None:
    """Diagnose one GPU node: health with recommended actions, XID errors, processes,
    NVLink errors and hardware, in one report.

    Exit codes: 0 fine; 1 the command failed; 2 the node is critical; 3 its health could
    not be read (the report says why).
    """
    opts = _opts(kubeconfig, context, namespace, timeout, concurrency)
    from broker.cli.commands import run_diagnose

    raise typer.Exit(run_diagnose(opts, node, since_minutes=since, output=output.value))


def explain(
    pod: Annotated[str, typer.Argument(help="The pod's name.")],
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-n",
            help="The pod's namespace (as in kubectl); default: look in every namespace.",
        ),
    ] = None,
    output: OutputOpt = Output.table,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    agent_namespace: Annotated[
        str,
        typer.Option(
            "--agent-namespace",
            help="Namespace of the agent pods (the Helm release's namespace).",
            rich_help_panel="Cluster",
        ),
    ] = DEFAULT_NAMESPACE,
    timeout: Timeout = 30.0,
    concurrency: Concurrency = 64,
) -> None:
    """Explain why a pod failed: hardware, driver, application or infrastructure, with
    the evidence (exit codes, events, the node's XIDs and GPU health) and next steps."""
    opts = _opts(kubeconfig, context, agent_namespace, timeout, concurrency)
    from broker.cli.commands import run_explain

    raise typer.Exit(run_explain(opts, pod, namespace, output=output.value))


def serve(
    node: Annotated[
        str | None,
        typer.Option(
            "--node",
            help="Pin to one GPU node: expose its agent's tools exactly as the agent "
            "defines them (for an IDE session about one machine).",
        ),
    ] = None,
    transport: Annotated[
        Transport,
        typer.Option("--transport", help="stdio (an IDE starts the broker) or http."),
    ] = Transport.stdio,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="HTTP: address to bind. Anything but loopback requires --auth-token.",
            rich_help_panel="HTTP",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="HTTP: port.", rich_help_panel="HTTP")
    ] = 8080,
    auth_token: Annotated[
        str | None,
        typer.Option(
            "--auth-token",
            envvar=TOKEN_ENV,
            show_envvar=True,
            help="HTTP: bearer token clients must send (Authorization: Bearer ...). "
            "Prefer the environment variable: a flag is visible in `ps`.",
            rich_help_panel="HTTP",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="HTTP: an extra Host header value to accept (e.g. the Service DNS name); "
            "loopback names and the bound address are always accepted. Repeatable.",
            rich_help_panel="HTTP",
        ),
    ] = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = DEFAULT_NAMESPACE,
    timeout: Timeout = 30.0,
    concurrency: Concurrency = 64,
) -> None:
    """Run the MCP server an IDE or LLM agent connects to.

    Tools: list_gpu_nodes, and every GPU tool of the agent (get_gpu_health,
    analyze_xid_errors, get_gpu_processes, get_gpu_inventory, get_nvlink_topology) run
    across the cluster with node / nodes / node_selector targeting. All read-only.
    stdio by default; --transport http serves streamable HTTP at /mcp and GET /healthz.
    """
    from broker.server import HttpSettings, ServeOptions

    opts = _opts(kubeconfig, context, namespace, timeout, concurrency)
    options = ServeOptions(
        config=opts.config,
        node=node,
        transport=transport.value,
        http=HttpSettings(
            host=host,
            port=port,
            token=auth_token or None,
            allowed_hosts=tuple(allowed_host or ()),
        ),
        call_timeout=timeout,
        max_concurrency=concurrency,
    )
    from broker.cli.commands import run_serve

    raise typer.Exit(run_serve(options))


def make_app(name: str, *, with_serve: bool = True, with_sim: bool = True) -> typer.Typer:
    """The typer application (``broker``, or ``kubectl mcp`` for the kubectl plugin)."""
    cli = typer.Typer(
        name=name,
        help="Diagnose the NVIDIA GPUs of a Kubernetes cluster: from your terminal, or over "
        "MCP from an IDE or LLM agent (`serve`). Read-only.",
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode="markdown",
        pretty_exceptions_enable=False,
    )
    if with_serve:
        cli.command()(serve)
    cli.command()(nodes)
    cli.command()(sweep)
    cli.command()(diagnose)
    cli.command()(explain)
    if with_sim:
        from broker.sim.cli import sim

        cli.command(help=sim.__doc__)(sim)
    return cli


app = make_app("broker")


def main() -> None:
    """Console script ``broker``."""
    app()
