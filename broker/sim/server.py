"""Start the simulated cluster: ``start_sim`` (async context manager) and
``sim_in_thread`` (the same, on a background thread, for subprocess and kubectl tests)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from . import kubeconfig as kc
from .app import AuditEntry, SimContext, create_app
from .auth import Rule, User
from .cluster import SimCluster
from .errors import SimError, SimStartError
from .scenario import NodeFaults, Scenario, load_scenario
from .tls import CertificateAuthority, server_context

CERT_USER = "sim-cert-admin"  # the client-certificate identity (O=system:masters)


@dataclass
class SimServer:
    """A running simulated cluster.

    ``kubeconfig`` has contexts ``sim`` (bearer token, current), ``sim-cert`` (client
    certificate) and ``sim-<user>`` for each extra user. Runtime controls change what
    the next request sees.
    """

    cluster: SimCluster
    url: str
    kubeconfig: Path
    token: str
    ca_pem: bytes | None
    context: str
    _ctx: SimContext
    _spec: kc.KubeconfigSpec
    _ca: CertificateAuthority | None
    _users: dict[str, str] = field(default_factory=dict)

    @property
    def nodes(self) -> list[str]:
        """GPU node names (named scenario nodes first, then generated ones)."""
        return self.cluster.gpu_nodes

    @property
    def namespace(self) -> str:
        """Where the agent pods run (``gpu-diagnostics`` unless the scenario says else)."""
        return self.cluster.namespace

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path?query, status) of recent requests, oldest first."""
        return list(self._ctx.requests)

    @property
    def audit(self) -> list[AuditEntry]:
        """Recent authenticated requests: who they ran as, who impersonated, oldest first."""
        return list(self._ctx.audit)

    def bind_group(self, group: str, rules: list[Rule]) -> None:
        """Grant *rules* to every member of *group* (a RoleBinding to a Group subject)."""
        self.cluster.auth.add_group(group, rules)

    @property
    def running_agents(self) -> int:
        return len(self._ctx.runs)

    def agent_pod(self, node: str) -> str | None:
        """The agent pod's name on *node* (None when the node has none)."""
        return self.cluster.agent_pod_name(node)

    def faults(self, node: str | None = None) -> NodeFaults:
        """Mutable fault settings for *node*, or for requests about no node (None)."""
        return self.cluster.faults(node)

    def set_agent_pod(self, node: str, state: str) -> None:
        """ready | not_ready | pending | crashloop | missing."""
        self.cluster.set_agent_pod(node, state)

    def update_agent(self, node: str, **keys: Any) -> None:
        """Agent scenario keys for the next exec on *node* (e.g. disabled_tools=[...])."""
        self.cluster.update_agent(node, **keys)

    def add_user(
        self,
        name: str,
        rules: list[Rule] | None = None,
        groups: list[str] | None = None,
        *,
        token: str | None = None,
        cert: bool = False,
    ) -> str:
        """Add a user with RBAC *rules* and a kubeconfig context ``sim-<name>`` holding
        its token (or, with ``cert=True``, a client certificate). Returns the context."""
        user: User = self.cluster.add_user(name, rules, groups, token)
        context = f"sim-{name}"
        cred = kc.Credential(context)
        if cert:
            if self._ca is None:
                raise SimError("client certificates need the sim to serve HTTPS (tls=True)")
            pair = self._ca.client_pair(name, tuple(user.groups))
            cred.cert_pem, cred.key_pem = pair.cert_pem, pair.key_pem
        else:
            cred.token = user.token
        self._spec.credentials = [c for c in self._spec.credentials if c.context != context]
        self._spec.credentials.append(cred)
        kc.write(self.kubeconfig, self._spec)
        self._users[name] = context
        return context

    def user_token(self, name: str) -> str:
        return self.cluster.auth.users[name].token


def _check_in_process() -> None:
    if importlib.util.find_spec("agent") is None:
        raise SimStartError("in-process mode needs the agent package importable (pip install -e .)")


@contextlib.asynccontextmanager
async def start_sim(
    nodes: int = 0,
    scenario: Path | str | dict[str, Any] | Scenario | None = None,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    kubeconfig: Path | None = None,
    in_process: bool = False,
    tls: bool = True,
    workdir: Path | None = None,
    token: str | None = None,
) -> AsyncIterator[SimServer]:
    """Serve a simulated cluster until the block exits.

    *nodes* is the number of GPU nodes (the scenario's named nodes, padded with healthy
    generated ones); *scenario* a file, a dict, a Scenario or None for the demo scenario.
    Agent execs run ``python -m agent`` subprocesses, or in this process with
    *in_process*. Everything is written under *workdir* (default: a temporary directory,
    removed at exit) except *kubeconfig* when given.
    """
    sc = load_scenario(scenario)
    if in_process:
        _check_in_process()
    owned = workdir is None
    base = Path(tempfile.mkdtemp(prefix="k8s-gpu-sim-")) if workdir is None else workdir
    runner: web.AppRunner | None = None
    ctx: SimContext | None = None
    try:
        agents = base / "agents"
        agents.mkdir(parents=True, exist_ok=True)
        cluster = SimCluster(sc, nodes, admin_token=token)
        ca = CertificateAuthority() if tls else None
        cluster.ca_pem = ca.cert_pem.decode() if ca is not None else ""
        ssl_ctx = server_context(ca, ca.server_pair(host), base) if ca is not None else None
        ctx = SimContext(cluster, agents, in_process)
        runner = web.AppRunner(create_app(ctx), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx)
        try:
            await site.start()
        except OSError as exc:
            raise SimStartError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port"
            ) from None
        bound = runner.addresses[0][1]
        scheme = "https" if tls else "http"
        shown = f"[{host}]" if ":" in host else host
        url = f"{scheme}://{shown}:{bound}"
        ctx.server_address = f"{shown}:{bound}"
        creds = [kc.Credential("sim", token=cluster.admin.token)]
        if ca is not None:
            pair = ca.client_pair(CERT_USER, ("system:masters",))
            creds.append(kc.Credential("sim-cert", cert_pem=pair.cert_pem, key_pem=pair.key_pem))
        for user in sc.users:
            creds.append(
                kc.Credential(f"sim-{user.name}", token=cluster.auth.users[user.name].token)
            )
        spec = kc.KubeconfigSpec(url, ca.cert_pem if ca else None, creds)
        path = kubeconfig or base / "kubeconfig"
        try:
            kc.write(path, spec)
        except OSError as exc:
            raise SimStartError(f"cannot write kubeconfig {path}: {exc.strerror or exc}") from None
        yield SimServer(
            cluster=cluster,
            url=url,
            kubeconfig=path,
            token=cluster.admin.token,
            ca_pem=ca.cert_pem if ca else None,
            context="sim",
            _ctx=ctx,
            _spec=spec,
            _ca=ca,
        )
    finally:
        if ctx is not None:
            await asyncio.gather(*(run.aclose() for run in list(ctx.runs)), return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        if owned:
            shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def sim_in_thread(*args: Any, **kwargs: Any) -> Iterator[SimServer]:
    """``start_sim`` on a background event-loop thread, for synchronous code (kubectl
    subprocess tests). Arguments as for ``start_sim``. Runtime controls (faults, agent pod
    state) are plain attribute changes and may be used from the calling thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        async with start_sim(*args, **kwargs) as sim:
            stop = asyncio.Event()
            box["sim"], box["stop"] = sim, stop
            ready.set()
            await stop.wait()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported to the caller's thread
            box["error"] = exc
        finally:
            ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    thread = threading.Thread(target=run, name="k8s-gpu-sim", daemon=True)
    thread.start()
    if not ready.wait(120):
        raise SimStartError("the simulated cluster did not start within 120 s")
    if "error" in box:
        thread.join(10)
        raise box["error"]
    try:
        yield box["sim"]
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(60)
        if "error" in box:
            raise box["error"]
