"""``broker sim``: run the simulated cluster until interrupted (typer only, no logic)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .run import serve_forever


def sim(
    nodes: Annotated[
        int,
        typer.Option(
            "--nodes",
            "-n",
            min=0,
            max=5000,
            help="GPU nodes (scenario nodes first, then healthy generated ones).",
        ),
    ] = 10,
    scenario: Annotated[
        Path | None,
        typer.Option(
            "--scenario",
            exists=True,
            dir_okay=False,
            readable=True,
            help="Scenario file (YAML or JSON); default: the demo scenario.",
        ),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free port).")
    ] = 0,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig",
            dir_okay=False,
            help="Where to write the kubeconfig (default: a temporary file).",
        ),
    ] = None,
    in_process: Annotated[
        bool,
        typer.Option(
            "--in-process/--subprocess",
            help="Serve exec with the agent's code in this process (for scale runs) "
            "instead of one `python -m agent` process per exec.",
        ),
    ] = False,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    tls: Annotated[
        bool, typer.Option("--tls/--no-tls", help="HTTPS with a throw-away CA (default).")
    ] = True,
) -> None:
    """Run a simulated GPU cluster that kubectl and the broker can use, until Ctrl-C."""
    code = serve_forever(
        nodes=nodes,
        scenario=scenario,
        port=port,
        kubeconfig=kubeconfig,
        in_process=in_process,
        host=host,
        tls=tls,
    )
    if code:
        raise typer.Exit(code)
