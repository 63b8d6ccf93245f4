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
    wide = "wide"
    json = "json"
    yaml = "yaml"


class Transport(StrEnum):
    stdio = "stdio"
    http = "http"


class Auth(StrEnum):
    token = "token"
    none = "none"
    kubernetes = "kubernetes"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


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
    Output,
    typer.Option(
        "--output",
        "-o",
        help="table for people (wide: more columns), json or yaml for scripts. Piped output "
        "is never wrapped or truncated.",
    ),
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
    pod: Annotated[str | None, typer.Argument(help="The pod's name.")] = None,
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
    job: Annotated[
        str | None,
        typer.Option(
            "--job",
            help="Explain a whole job instead (Job, JobSet, PyTorchJob/MPIJob, "
            "LeaderWorkerSet; with -n): which pod failed first, why, and the cascade.",
        ),
    ] = None,
) -> None:
    """Explain why a pod failed: hardware, driver, application or infrastructure, with
    the evidence (exit codes, events, the node's XIDs and GPU health) and next steps.

    With --job NAME -n NS: why a multi-node job died (the first failure and the rest)."""
    opts = _opts(kubeconfig, context, agent_namespace, timeout, concurrency)
    if job is not None or pod is None:
        if job is None or pod is not None or not namespace:
            raise typer.BadParameter("give a POD, or --job NAME with -n NAMESPACE (not both)")
        from broker.cli.analysis import run_explain_job

        raise typer.Exit(run_explain_job(opts, job, namespace, output.value))
    from broker.cli.commands import run_explain

    raise typer.Exit(run_explain(opts, pod, namespace, output=output.value))


def doctor(
    output: OutputOpt = Output.table,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = DEFAULT_NAMESPACE,
    timeout: Timeout = 30.0,
) -> None:
    """Check that this cluster is ready to be diagnosed, and say what to do first if not.

    In order: the kubeconfig/context and the API server; your RBAC (list nodes, list pods
    and create pods/exec in the agent namespace); GPU nodes; the chart's DaemonSet (desired
    vs ready; if it is not in --namespace, where it is); the RuntimeClass; one agent over
    exec and the GPUs it sees; Pod Security on the namespace. Every check runs that can;
    the fix for the first failure is printed last. The same checks are the MCP tool
    check_setup.

    Exit codes: 0 ready (warnings may be shown); 1 a check failed (the fix is printed).
    """
    opts = _opts(kubeconfig, context, namespace, timeout, 1)
    from broker.cli.commands import run_doctor

    raise typer.Exit(run_doctor(opts, output=output.value))


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
            help="HTTP: address to bind. Anything but loopback requires a token "
            "(K8S_GPU_MCP_TOKEN or --auth-token).",
            rich_help_panel="HTTP",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="HTTP: port.", rich_help_panel="HTTP")
    ] = 8080,
    auth: Annotated[
        Auth,
        typer.Option(
            "--auth",
            help="HTTP: how clients authenticate. token (default): a bearer token "
            "(K8S_GPU_MCP_TOKEN); without one, loopback generates one per run, prints it once "
            "to stderr and saves it (0600) under $XDG_RUNTIME_DIR/k8s-gpu-mcp or "
            "~/.config/k8s-gpu-mcp. none: no authentication (loopback only). kubernetes: "
            "each caller sends their own Kubernetes token; the broker checks it with a "
            "TokenReview and acts as that user (impersonation), so their own RBAC applies "
            "(the chart's in-cluster broker).",
            rich_help_panel="HTTP",
        ),
    ] = Auth.token,
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
    max_connections: Annotated[
        int | None,
        typer.Option(
            "--max-connections",
            min=1,
            help="HTTP: most open client connections; the next one gets a 503 "
            "(default: a quarter of the descriptor limit, at most 256).",
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
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=1,
            max=65535,
            help="Serve Prometheus metrics at /metrics on this port (no authentication: "
            "restrict who reaches it, as the chart's NetworkPolicy does).",
            rich_help_panel="Operations",
        ),
    ] = None,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            help="text, or json: one JSON object per line with a request id per tool call.",
            rich_help_panel="Operations",
        ),
    ] = LogFormat.text,
    caller_rate: Annotated[
        float,
        typer.Option(
            "--caller-rate",
            min=0.01,
            help="HTTP: tool calls per second per caller (bursts of 20).",
            rich_help_panel="Operations",
        ),
    ] = 2.0,
    caller_concurrency: Annotated[
        int,
        typer.Option(
            "--caller-concurrency",
            min=1,
            help="HTTP: tool calls in flight per caller.",
            rich_help_panel="Operations",
        ),
    ] = 8,
    breaker_failures: Annotated[
        int,
        typer.Option(
            "--breaker-failures",
            min=0,
            help="HTTP: consecutive failures after which a node is skipped for 30 s "
            "(doubling, up to 5 min, while trial calls fail); 0 = never skip.",
            rich_help_panel="Operations",
        ),
    ] = 5,
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
    from broker.server.limits import CallerLimits
    from broker.server.team import TeamOptions

    opts = _opts(kubeconfig, context, namespace, timeout, concurrency)
    options = ServeOptions(
        config=opts.config,
        node=node,
        transport=transport.value,
        http=HttpSettings(
            host=host,
            port=port,
            auth=auth.value,
            token=(auth_token or None) if auth != Auth.kubernetes else None,
            allowed_hosts=tuple(allowed_host or ()),
            max_connections=max_connections,
        ),
        call_timeout=timeout,
        max_concurrency=concurrency,
        team=TeamOptions(
            limits=CallerLimits(rate_per_s=caller_rate, concurrent=caller_concurrency),
            breaker_failures=breaker_failures,
        ),
        metrics_port=metrics_port,
        log_format=log_format.value,
    )
    from broker.cli.commands import run_serve

    raise typer.Exit(run_serve(options))


CompareNodes = Annotated[
    list[str] | None,
    typer.Option("--node", help="Compare only these nodes (repeat for several)."),
]


def drift(
    selector: Selector = None,
    node: CompareNodes = None,
    output: OutputOpt = Output.table,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = DEFAULT_NAMESPACE,
    timeout: Timeout = 30.0,
    concurrency: Concurrency = 64,
) -> None:
    """Find configuration drift: settings where GPU nodes differ from their peers.

    Compares nodes of the same GPU product (driver and CUDA versions, VBIOS, ECC,
    persistence, MIG, power limit, clocks, PCIe link, NVLink, InfiniBand, GPUs seen) and
    names the outlier nodes with the majority value. Exit code 2 when drift is found.
    """
    from broker.cli.analysis import run_drift

    opts = _opts(kubeconfig, context, namespace, timeout, concurrency)
    arguments = _node_arguments(node, selector)
    raise typer.Exit(run_drift(opts, arguments, output.value))


def stragglers(
    job: Annotated[
        str | None,
        typer.Option("--job", help="Compare the nodes of this job (Job, JobSet, PyTorchJob, ...)."),
    ] = None,
    job_namespace: Annotated[
        str | None, typer.Option("--job-namespace", help="The job's namespace (with --job).")
    ] = None,
    selector: Selector = None,
    node: CompareNodes = None,
    output: OutputOpt = Output.table,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    namespace: Namespace = DEFAULT_NAMESPACE,
    timeout: Timeout = 30.0,
    concurrency: Concurrency = 64,
) -> None:
    """Find the nodes slowing a job down: live readings compared with their peers.

    SM clocks, throttle reasons, temperature, power, utilisation, PCIe replays and NVLink
    errors, per GPU product, outliers by median absolute deviation, ranked, each with the
    reading that makes it slow. Exit code 2 when a straggler is found.
    """
    from broker.cli.analysis import run_stragglers

    opts = _opts(kubeconfig, context, namespace, timeout, concurrency)
    arguments = _node_arguments(node, selector)
    if job:
        arguments["job"] = job
    if job_namespace:
        arguments["namespace"] = job_namespace
    raise typer.Exit(run_stragglers(opts, arguments, output.value))


def _node_arguments(node: list[str] | None, selector: str | None) -> dict[str, object]:
    arguments: dict[str, object] = {}
    if node:
        arguments["nodes"] = node
    if selector:
        arguments["node_selector"] = selector
    return arguments


def _print_version(ctx: typer.Context, value: bool) -> None:
    if value:
        from broker import __version__

        typer.echo(f"{ctx.find_root().info_name} {__version__}")
        raise typer.Exit()


def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    pass


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
    cli.callback()(_options)  # options before the command; the help text stays the Typer's
    if with_serve:
        cli.command()(serve)
    cli.command()(nodes)
    cli.command()(sweep)
    cli.command()(diagnose)
    cli.command()(drift)
    cli.command()(stragglers)
    cli.command()(explain)
    cli.command()(doctor)
    if with_sim:
        from broker.sim.cli import sim

        cli.command(help=sim.__doc__)(sim)
    return cli


app = make_app("broker")


def main() -> None:
    """Console script ``broker``."""
    app()
