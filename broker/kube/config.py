"""Cluster configuration the way kubectl finds it, and the API clients built from it.

Precedence (as kubectl): ``--kubeconfig`` (one file) > ``KUBECONFIG`` (a ``:``-separated
list, merged, first definition wins) > in-cluster service account when
``KUBERNETES_SERVICE_HOST`` is set and no kubeconfig exists > ``~/.kube/config``.
Credentials: bearer tokens (``token``/``tokenFile``), client certificates, and exec
credential plugins (``users[].user.exec``, as GKE/EKS/AKS kubeconfigs use). Plugins run
here, not inside kubernetes_asyncio, so that they get no stdin (the broker's stdin may
be an MCP stream), a deadline, and a refresh when their token expires.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from broker.errors import ConfigError, clip
from broker.kube.identity import Identity, impersonate_clients
from broker.kube.kubeconfig_check import (
    check_certificate_dates,
    check_documents,
    check_selection,
)
from broker.kube.names import DEFAULT_NAMESPACE

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Refresh an exec-plugin token this long before it expires (kubectl uses a similar skew).
_EXPIRY_SKEW = dt.timedelta(seconds=60)
# A plugin that hands out tokens already (nearly) expired is re-run at most this often;
# a 401 re-runs it once, then not again within the second interval.
_RERUN_FLOOR_S = 30.0
_FORCED_RERUN_FLOOR_S = 5.0
_PLUGIN_OUTPUT_LIMIT = 1024 * 1024

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterConfig:
    """Where the cluster is and which namespace holds the agent pods.

    ``kubeconfig`` None means: ``KUBECONFIG``, then in-cluster, then ``~/.kube/config``.
    """

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    request_timeout: float = 15.0  # one REST request (discovery)
    credential_timeout: float = 30.0  # one exec credential plugin run
    # One read with its retries, and one discovery (both lists): the CLI's --timeout.
    # None: bounded only by request_timeout x retry attempts (about a minute).
    read_deadline: float | None = None
    impersonate: Identity | None = None  # act as this caller (the in-cluster broker)

    @classmethod
    def from_options(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> ClusterConfig:
        """Build from CLI options (``None`` = not given); ``timeout`` bounds API reads."""
        return cls(
            kubeconfig=kubeconfig,
            context=context,
            namespace=namespace or DEFAULT_NAMESPACE,
            read_deadline=timeout,
        )


@dataclass
class ExecPlugin:
    """One ``users[].user.exec`` stanza, runnable on its own."""

    command: str
    args: list[str]
    env: dict[str, str]
    api_version: str
    install_hint: str | None
    interactive_mode: str
    cluster_info: dict[str, Any] | None  # sent when provideClusterInfo is true
    base_dir: str  # relative commands resolve against the kubeconfig's folder (as kubectl)

    @classmethod
    def from_stanza(
        cls, stanza: Mapping[str, Any], cluster: Mapping[str, Any], kubeconfig_path: str
    ) -> ExecPlugin:
        command = stanza.get("command")
        api_version = stanza.get("apiVersion")
        if not isinstance(command, str) or not command:
            raise ConfigError("kubeconfig exec plugin has no `command`; fix the users[].user.exec")
        if not isinstance(api_version, str):
            raise ConfigError(
                "kubeconfig exec plugin has no `apiVersion` "
                "(e.g. client.authentication.k8s.io/v1); fix the users[].user.exec stanza"
            )
        env = {
            str(item["name"]): str(item["value"])
            for item in stanza.get("env") or []
            if isinstance(item, dict) and "name" in item
        }
        info = None
        if stanza.get("provideClusterInfo"):
            info = {
                "server": cluster.get("server"),
                "certificate-authority-data": cluster.get("certificate-authority-data"),
                "insecure-skip-tls-verify": bool(cluster.get("insecure-skip-tls-verify", False)),
            }
            info = {k: v for k, v in info.items() if v is not None}
        return cls(
            command=command,
            args=[str(a) for a in stanza.get("args") or []],
            env=env,
            api_version=api_version,
            install_hint=stanza.get("installHint"),
            interactive_mode=str(stanza.get("interactiveMode") or "IfAvailable"),
            cluster_info=info,
            base_dir=os.path.dirname(os.path.abspath(kubeconfig_path)),
        )

    def _argv0(self) -> str:
        if os.sep in self.command and not os.path.isabs(self.command):
            return os.path.normpath(os.path.join(self.base_dir, self.command))
        return self.command

    async def run(self, limit_s: float) -> dict[str, Any]:
        """Run the plugin and return its ExecCredential ``status``."""
        if self.interactive_mode == "Always":
            raise ConfigError(
                f"exec plugin {self.command!r} requires an interactive terminal "
                "(interactiveMode: Always); log in with kubectl first, or use a plugin mode "
                "that works without a terminal"
            )
        spec: dict[str, Any] = {"interactive": False}
        if self.cluster_info is not None:
            spec["cluster"] = self.cluster_info
        env = dict(os.environ)
        env.update(self.env)
        env["KUBERNETES_EXEC_INFO"] = json.dumps(
            {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec}
        )
        # Output goes to unnamed files, not pipes: a plugin may leave a child (a login
        # helper, an agent) holding its stdout, and a pipe would then never reach EOF.
        # The plugin is done when it exits.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = await asyncio.create_subprocess_exec(
                    self._argv0(),
                    *self.args,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                )
            except OSError as exc:
                hint = f" {self.install_hint.strip()}" if self.install_hint else ""
                raise ConfigError(
                    f"cannot run exec credential plugin {self.command!r}: "
                    f"{exc.strerror or exc}.{hint}"
                ) from exc
            try:
                await asyncio.wait_for(proc.wait(), limit_s)
            except TimeoutError:
                pass
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await asyncio.shield(proc.wait())
                    timed_out = True
                else:
                    timed_out = False
            stdout, stderr = _head(out), _head(err)
        if timed_out:
            raise ConfigError(
                f"exec credential plugin {self.command!r} did not finish within {limit_s:g} s; "
                "run it by hand to see whether it waits for a login"
            )
        if proc.returncode != 0:
            tail = stderr.decode("utf-8", "replace").strip()[-500:]
            raise ConfigError(
                f"exec credential plugin {self.command!r} exited with code {proc.returncode}"
                f"{': ' + tail if tail else ''}; run it by hand to log in again"
            )
        return self._parse(stdout)

    def _parse(self, stdout: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(stdout)
        except ValueError:
            raise ConfigError(
                f"exec credential plugin {self.command!r} printed something that is not an "
                "ExecCredential JSON document"
            ) from None
        if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
            raise ConfigError(
                f"exec credential plugin {self.command!r}: output is not an ExecCredential"
            )
        if doc.get("apiVersion") != self.api_version:
            raise ConfigError(
                f"exec credential plugin {self.command!r} answered apiVersion "
                f"{doc.get('apiVersion')!r}, the kubeconfig asked for {self.api_version!r}"
            )
        status = doc.get("status")
        has_cert = isinstance(status, dict) and bool(
            status.get("clientCertificateData") and status.get("clientKeyData")
        )
        if not isinstance(status, dict) or not (status.get("token") or has_cert):
            raise ConfigError(
                f"exec credential plugin {self.command!r} returned neither a token nor a "
                "client certificate and key"
            )
        return status


def _head(file: IO[bytes]) -> bytes:
    file.seek(0)
    return file.read(_PLUGIN_OUTPUT_LIMIT)


def _expiry(status: Mapping[str, Any]) -> dt.datetime | None:
    stamp = status.get("expirationTimestamp")
    if not isinstance(stamp, str):
        return None
    try:
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def _kubeconfig_paths(config: ClusterConfig, environ: Mapping[str, str]) -> list[str] | None:
    """The kubeconfig files to merge, or None for in-cluster configuration."""
    if config.kubeconfig:
        path = os.path.expanduser(config.kubeconfig)
        if not os.path.isfile(path):
            raise ConfigError(f"--kubeconfig {config.kubeconfig}: no such file")
        return [path]
    env_value = environ.get("KUBECONFIG", "")
    if env_value:
        paths = [os.path.expanduser(p) for p in env_value.split(os.pathsep) if p]
        found = [p for p in paths if os.path.isfile(p)]
        if not found:
            raise ConfigError(
                f"KUBECONFIG={env_value} names no existing file; fix it or pass --kubeconfig"
            )
        return found
    home = environ.get("HOME") or str(Path.home())
    default = os.path.join(home, ".kube", "config")
    if os.path.isfile(default):
        return [default]
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    raise ConfigError(
        "no Kubernetes configuration found: pass --kubeconfig, set KUBECONFIG, or create "
        "~/.kube/config (the broker finds clusters the way kubectl does)"
    )


class KubeApi:
    """The loaded cluster configuration and the two API clients the broker uses.

    ``rest`` is a plain ApiClient (discovery); ``ws`` is a WsApiClient (pods/exec) with no
    connection limit, because every open node session holds one websocket.
    """

    def __init__(
        self,
        config: ClusterConfig,
        configuration: Any,
        *,
        context: str | None,
        plugin: ExecPlugin | None,
        plugin_expiry: dt.datetime | None,
    ) -> None:
        from kubernetes_asyncio.client import ApiClient
        from kubernetes_asyncio.stream import WsApiClient

        self.config = config
        self.namespace = config.namespace
        self.context = context
        self.configuration = configuration
        self.server: str = str(configuration.host)
        self._plugin = plugin
        self._plugin_expiry = plugin_expiry
        self._plugin_ran_at = time.monotonic()
        self._plugin_forced_at = float("-inf")
        self._said_stale = False
        self._refresh_lock = asyncio.Lock()
        self._note_stale_token()
        try:
            configuration.connection_pool_maxsize = 0  # aiohttp: 0 = unlimited, one per session
            self.ws = WsApiClient(configuration=configuration)
            configuration.connection_pool_maxsize = 100
            self.rest = ApiClient(configuration=configuration)
            if config.impersonate is not None:
                impersonate_clients((self.rest, self.ws), config.impersonate)
        except (ssl.SSLError, OSError) as exc:
            files = ", ".join(
                f"{k}={v}"
                for k, v in (
                    ("certificate-authority", configuration.ssl_ca_cert),
                    ("client-certificate", configuration.cert_file),
                    ("client-key", configuration.key_file),
                )
                if v
            )
            raise ConfigError(
                f"cannot load the TLS files of the kubeconfig/service account ({files}): {exc}; "
                "check that they are PEM files that match each other"
            ) from exc

    @classmethod
    async def open(cls, config: ClusterConfig, environ: Mapping[str, str] | None = None) -> KubeApi:
        """Load the configuration (running an exec plugin if the user has one)."""
        from kubernetes_asyncio.client import Configuration
        from kubernetes_asyncio.config import ConfigException

        env = os.environ if environ is None else environ
        configuration = Configuration()
        paths = _kubeconfig_paths(config, env)
        if paths is None:
            _load_incluster(configuration, env)
            return cls(config, configuration, context=None, plugin=None, plugin_expiry=None)
        try:
            context, plugin, expiry = await _load_kubeconfig(config, paths, configuration)
        except ConfigException as exc:
            raise ConfigError(f"kubeconfig {os.pathsep.join(paths)}: {exc}") from exc
        return cls(config, configuration, context=context, plugin=plugin, plugin_expiry=expiry)

    async def refresh_credentials(self, force: bool = False) -> bool:
        """Re-run the exec plugin when its token is (nearly) expired, or when ``force``.

        Returns True when new credentials were installed.
        """
        if self._plugin is None:
            return False
        async with self._refresh_lock:
            now = dt.datetime.now(dt.UTC)
            expiry = self._plugin_expiry
            since = time.monotonic() - self._plugin_ran_at
            if force:
                # A 401 re-runs the plugin once (a fresh token may help, as kubectl does);
                # a second 401 right after that one's token gets the same answer.
                if time.monotonic() - self._plugin_forced_at < _FORCED_RERUN_FLOOR_S:
                    return False
                self._plugin_forced_at = time.monotonic()
            elif expiry is None or expiry - _EXPIRY_SKEW > now or since < _RERUN_FLOOR_S:
                return False
            status = await self._plugin.run(self.config.credential_timeout)
            self._plugin_ran_at = time.monotonic()
            token = status.get("token")
            if token:
                self.configuration.api_key["BearerToken"] = f"Bearer {token}"
            self._plugin_expiry = _expiry(status)
            self._note_stale_token()
            return bool(token)

    def _note_stale_token(self) -> None:
        """Say once when the plugin's token is already (nearly) expired when handed out."""
        expiry = self._plugin_expiry
        if self._plugin is None or expiry is None or self._said_stale:
            return
        if expiry - _EXPIRY_SKEW > dt.datetime.now(dt.UTC):
            return
        self._said_stale = True
        logger.warning(
            "exec credential plugin %r returned a token that expires at %s (already past "
            "or within %d s); using it, and re-running the plugin at most every %g s. If "
            "the API server refuses it, log in again.",
            self._plugin.command,
            expiry.isoformat(),
            int(_EXPIRY_SKEW.total_seconds()),
            _RERUN_FLOOR_S,
        )

    async def aclose(self) -> None:
        await self.ws.close()
        await self.rest.close()


def kubeconfig_contexts(
    config: ClusterConfig, environ: Mapping[str, str] | None = None
) -> tuple[list[str], str | None]:
    """The kubeconfig's context names (first definition wins, as kubectl) and the
    current one; ``([], None)`` in-cluster. Raises ConfigError."""
    import yaml

    paths = _kubeconfig_paths(config, os.environ if environ is None else environ)
    if paths is None:
        return [], None
    names: list[str] = []
    current: str | None = None
    for path in paths:
        try:
            with open(path) as f:
                doc = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"kubeconfig {path}: cannot be read: {exc}") from exc
        if not isinstance(doc, dict):
            continue
        current = current or doc.get("current-context") or None
        for entry in doc.get("contexts") or []:
            name = entry.get("name") if isinstance(entry, dict) else None
            if name and str(name) not in names:
                names.append(str(name))
    return names, config.context or current


def _load_incluster(configuration: Any, environ: Mapping[str, str]) -> None:
    from kubernetes_asyncio.config import ConfigException
    from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader

    try:
        InClusterConfigLoader(
            token_filename=f"{SERVICE_ACCOUNT_DIR}/token",
            cert_filename=f"{SERVICE_ACCOUNT_DIR}/ca.crt",
            environ=dict(environ),
        ).load_and_set(configuration)
    except ConfigException as exc:
        raise ConfigError(
            f"in-cluster configuration failed: {exc}; mount the service account token "
            "(automountServiceAccountToken) or pass --kubeconfig"
        ) from exc


async def _load_kubeconfig(
    config: ClusterConfig, paths: list[str], configuration: Any
) -> tuple[str | None, ExecPlugin | None, dt.datetime | None]:
    from kubernetes_asyncio.config.kube_config import (
        ConfigNode,
        KubeConfigLoader,
        KubeConfigMerger,
    )

    paths = check_documents(paths)
    merger = KubeConfigMerger(os.pathsep.join(paths))
    root = merger.config
    if root is None or not isinstance(root.value, dict):
        raise ConfigError(f"kubeconfig {paths[0]} is empty or not a mapping")
    raw_contexts = root.value.get("contexts") or []
    contexts = [c.value if isinstance(c, ConfigNode) else c for c in raw_contexts]
    names = [str(c.get("name")) for c in contexts if isinstance(c, dict)]
    # kubectl: the first file that sets current-context wins (the merger keeps the last).
    first_current = next(
        (
            doc["current-context"]
            for path in paths
            if isinstance(doc := merger.config_files.get(path), dict) and doc.get("current-context")
        ),
        None,
    )
    context = config.context or first_current
    if not context:
        raise ConfigError(
            f"kubeconfig {paths[0]} has no current-context; pass --context "
            f"(one of: {', '.join(names) or 'none defined'})"
        )
    if context not in names:
        raise ConfigError(
            f"context {context!r} is not in the kubeconfig (have: {', '.join(names) or 'none'}); "
            "pick one with --context"
        )
    ctx = next(c for c in contexts if c.get("name") == context)
    user_name = (ctx.get("context") or {}).get("user")
    cluster_name = (ctx.get("context") or {}).get("cluster")
    cluster = _find(root.value.get("clusters"), cluster_name)
    if cluster is None:
        raise ConfigError(
            f"context {context!r} names cluster {cluster_name!r}, which is not defined"
        )
    users = root.value.get("users") or []
    user_nodes = [
        u if isinstance(u, ConfigNode) else ConfigNode("user", u, paths[0]) for u in users
    ]
    chosen = next((u for u in user_nodes if u.value.get("name") == user_name), None)
    check_selection(
        str(context),
        ctx.get("context") or {},
        cluster.value.get("cluster") or {},
        cluster.path or paths[0],
        (chosen.value.get("user") or {}) if chosen is not None else None,
        (chosen.path if chosen is not None else None) or paths[0],
        [str(u.value.get("name")) for u in user_nodes],
    )
    plugin = None
    expiry = None
    for i, entry in enumerate(users):
        node = entry if isinstance(entry, ConfigNode) else ConfigNode("user", entry, paths[0])
        if node.value.get("name") != user_name:
            continue
        user = dict(node.value.get("user") or {})
        stanza = user.pop("exec", None)
        if isinstance(stanza, dict):
            cluster_doc = cluster.value.get("cluster") or {}
            plugin = ExecPlugin.from_stanza(stanza, cluster_doc, node.path or paths[0])
            status = await plugin.run(config.credential_timeout)
            expiry = _expiry(status)
            if status.get("token"):
                user["token"] = status["token"]
            else:
                check_certificate_dates(
                    str(status["clientCertificateData"]).encode(),
                    f"exec credential plugin {plugin.command!r}",
                )
                user["client-certificate-data"] = _b64(status["clientCertificateData"])
                user["client-key-data"] = _b64(status["clientKeyData"])
            # Replace, not mutate: the merger keeps the original for its own bookkeeping.
            users[i] = ConfigNode(node.name, {**node.value, "user": user}, node.path)
        break
    loader = KubeConfigLoader(config_dict=root, active_context=context, config_base_path=None)
    try:
        await loader.load_and_set(configuration)
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
        # What check_selection did not foresee: still one line, never a traceback.
        raise ConfigError(
            f"kubeconfig {os.pathsep.join(paths)}: context {context!r} cannot be loaded "
            f"({type(exc).__name__}: {clip(exc, 300)}); check it with `kubectl config view`"
        ) from exc
    return str(context), plugin, expiry


def _find(items: Any, name: Any) -> Any:
    from kubernetes_asyncio.config.kube_config import ConfigNode

    for entry in items or []:
        node = entry if isinstance(entry, ConfigNode) else ConfigNode("item", entry)
        if isinstance(node.value, dict) and node.value.get("name") == name:
            return node
    return None


def _b64(pem: str) -> str:
    return base64.b64encode(pem.encode()).decode()


def describe(api: KubeApi) -> str:
    """One line naming the cluster, for logs and error messages."""
    where = f"context {api.context}" if api.context else "in-cluster service account"
    return f"{where} at {api.server}, namespace {api.namespace}"
