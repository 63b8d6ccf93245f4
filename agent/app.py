"""Command line and wiring: options -> backend -> tools -> protocol session.

``main`` is the ``gpu-agent`` console script (and ``python -m agent``): it serves one MCP
session on stdin/stdout. ``create_session`` gives the same session without a process,
for the simulated cluster's in-process exec.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from agent import __version__, protocol
from agent.catalog import INSTRUCTIONS
from agent.errors import AgentError, UsageError
from agent.protocol import MAX_MESSAGE_BYTES, Session
from agent.tools import Toolbox

if TYPE_CHECKING:
    import argparse

    from agent.backend import Backend

DESCRIPTION = """\
Read-only NVIDIA GPU diagnostics for one Kubernetes node, served as an MCP server
(JSON-RPC 2.0, one message per line) on stdin/stdout. Logs go to stderr.

Tools: get_gpu_inventory, get_gpu_health, analyze_xid_errors, get_gpu_processes,
get_nvlink_topology.

One-shot mode, for `kubectl exec POD -- gpu-agent call get_gpu_health` (no stdin):
  gpu-agent [OPTIONS] call TOOL ['{"arg": value}']   print the tool's JSON, exit
  gpu-agent tools                                    list the tools (also: call --list)
Exit codes: 0 JSON on stdout; 1 the tool failed (stderr says why); 2 usage (unknown
tool, arguments not a JSON object or rejected by the tool's schema, bad options).
"""

EPILOG = """\
examples:
  gpu-agent                                  # NVML on this node's GPUs
  gpu-agent --backend fake                   # a simulated 8x H100 node with faults
  gpu-agent --backend fake --scenario s.json # your own simulated node
  gpu-agent --host-proc /host/proc           # map GPU processes to pods
  gpu-agent --kmsg off                       # no kernel-log (XID) reading
  gpu-agent call get_gpu_health '{"since_minutes": 30}'

environment (set by the Helm chart on the pod; a command-line option wins):
  GPU_AGENT_KMSG                  like --kmsg: a path, auto or off
  GPU_AGENT_HOST_PROC             like --host-proc
  GPU_AGENT_HOST_SYS              like --host-sys
  GPU_AGENT_JOURNAL               like --journal
  GPU_AGENT_POD_RESOURCES_SOCKET  the kubelet PodResources socket (reported, not yet used)
  GPU_AGENT_LOG_LEVEL             like --log-level
  NODE_NAME                       the Kubernetes node name shown in every answer

When NVML cannot be initialised (no driver, pod without runtimeClassName: nvidia) the
agent still starts and answers; every GPU tool then returns an error that says why.
Each tool call is bounded by --call-timeout: a call stuck in the driver is answered with
an error and abandoned, and the agent keeps answering. When stdin closes, calls still
running 2 s later are answered with an error and the agent exits.
"""


DEFAULTS: dict[str, Any] = {
    "backend": "nvml",
    "scenario": None,
    "kmsg": None,
    "host_proc": None,
    "host_sys": None,
    "journal": None,
    "call_timeout": 20.0,
    "log_level": None,  # GPU_AGENT_LOG_LEVEL, else warning
}
_FLAGS = {"--" + dest.replace("_", "-"): dest for dest in DEFAULTS}
BACKENDS = ("nvml", "fake")

ENV_KMSG = "GPU_AGENT_KMSG"
ENV_HOST_PROC = "GPU_AGENT_HOST_PROC"
ENV_HOST_SYS = "GPU_AGENT_HOST_SYS"
ENV_JOURNAL = "GPU_AGENT_JOURNAL"
ENV_POD_RESOURCES = "GPU_AGENT_POD_RESOURCES_SOCKET"
ENV_NODE_NAME = "NODE_NAME"
ENV_LOG_LEVEL = "GPU_AGENT_LOG_LEVEL"
# Each NVML GPU read is bounded below the call deadline, so a call with one hung GPU
# still answers with the other GPUs' facts (and names the hung one) before it expires.
GPU_TIMEOUT_SHARE = 0.75


class Options:
    """Parsed ``gpu-agent`` options (see ``build_parser`` for their meaning)."""

    def __init__(
        self,
        backend: str,
        scenario: str | None,
        kmsg: str | None,
        host_proc: str | None,
        call_timeout: float,
        log_level: str | None,
        host_sys: str | None = None,
        journal: str | None = None,
    ) -> None:
        self.backend = backend
        self.scenario = scenario
        self.kmsg = kmsg
        self.host_proc = host_proc
        self.host_sys = host_sys
        self.journal = journal
        self.call_timeout = call_timeout
        self.log_level = log_level

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Options) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"Options({vars(self)})"


def _seconds(text: str) -> float | None:
    """A --call-timeout value, or None when it is not a number in (0, 3600]."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 < value <= 3600 else None


def _fast_parse(args: Sequence[str]) -> Options | None:
    """Parse the common, well-formed command lines without argparse (importing and
    building it costs ~5 ms of the start-up budget). None: let argparse decide (help,
    version, abbreviations, anything invalid), so its messages stay the only ones."""
    values = dict(DEFAULTS)
    i = 0
    while i < len(args):
        flag, eq, value = args[i].partition("=")
        if not eq:
            if i + 1 >= len(args):
                return None
            value = args[i + 1]
            i += 1
        i += 1
        dest = _FLAGS.get(flag)
        if dest is None or (value.startswith("-") and not eq):
            return None
        values[dest] = value
    timeout = _seconds(str(values["call_timeout"]))
    if (
        values["backend"] not in BACKENDS
        or (values["log_level"] is not None and values["log_level"] not in protocol.LOG_LEVELS)
        or timeout is None
    ):
        return None
    values["call_timeout"] = timeout
    return Options(**values)


def _seconds_type(text: str) -> float:
    import argparse

    value = _seconds(text)
    if value is None:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds > 0 and ≤ 3600, got {text!r}"
        )
    return value


def build_parser(raise_errors: bool = False) -> argparse.ArgumentParser:
    """The ``gpu-agent`` option parser. ``raise_errors``: raise UsageError instead of
    printing and exiting (for create_session)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            if not raise_errors:
                super().error(message)
            raise UsageError(f"{message} (see gpu-agent --help)")

        def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
            if not raise_errors:
                super().exit(status, message)
            raise UsageError(message or "--help and --version are only for the command line")

    parser = Parser(
        prog="gpu-agent",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=DEFAULTS["backend"],
        help="where GPU facts come from: nvml (the real driver, default) or fake (a scenario)",
    )
    parser.add_argument(
        "--scenario",
        metavar="FILE",
        help="fake backend: JSON scenario describing GPUs and faults "
        "(default: the bundled 8x H100 node with three faulty GPUs)",
    )
    parser.add_argument(
        "--kmsg",
        metavar="PATH|auto|syslog|off",
        help="kernel log to read XIDs from: auto (default: /dev/kmsg if it opens, else the "
        "syslog(2) call, which needs no device mount; with --backend fake the scenario's "
        "own records), syslog (only syslog(2)), a file or device PATH, or off (no XID "
        "reading). Needs CAP_SYSLOG when kernel.dmesg_restrict=1",
    )
    parser.add_argument(
        "--host-proc",
        metavar="PATH",
        help="the host's /proc, to map GPU processes to pods (default: no pod mapping)",
    )
    parser.add_argument(
        "--host-sys",
        metavar="PATH",
        help="the host's /sys, for PCIe AER counters and InfiniBand/RoCE ports (default: "
        "/sys; with --backend fake the scenario's own)",
    )
    parser.add_argument(
        "--journal",
        metavar="PATH",
        help="the host's persistent kernel log, read-only: a journald directory "
        "(/var/log/journal) or file, or a text kern.log; keeps XIDs from before a reboot "
        "(default: none)",
    )
    parser.add_argument(
        "--call-timeout",
        type=_seconds_type,
        default=DEFAULTS["call_timeout"],
        metavar="SECONDS",
        help="answer a tool call with an error when it runs longer (default 20)",
    )
    parser.add_argument(
        "--log-level",
        choices=tuple(protocol.LOG_LEVELS),
        default=DEFAULTS["log_level"],
        help="stderr verbosity (default: GPU_AGENT_LOG_LEVEL, else warning)",
    )
    parser.add_argument("--version", action="version", version=f"gpu-agent {__version__}")
    return parser


def parse_options(args: Sequence[str], raise_errors: bool = False) -> Options:
    """Options from a command line (fast path first, argparse for everything else)."""
    options = _fast_parse(args)
    if options is None:
        options = Options(**vars(build_parser(raise_errors).parse_args(list(args))))
    return options


class Settings:
    """Where the agent's node-facing inputs come from once options and environment are
    merged (a command-line option wins over its environment variable)."""

    def __init__(self, options: Options, env: Mapping[str, str]) -> None:
        env_kmsg = env.get(ENV_KMSG, "").strip()
        self.kmsg: str | None = options.kmsg or env_kmsg or None
        self.kmsg_origin = "flag" if options.kmsg else "env" if env_kmsg else "default"
        self.host_proc = options.host_proc
        self.host_proc_note: str | None = None
        env_proc = env.get(ENV_HOST_PROC, "").strip()
        if self.host_proc is None and env_proc:
            # A bad option is a usage error; a bad chart setting must not stop the agent
            # from answering: pod mapping is off, and get_gpu_processes says why.
            if os.path.isdir(env_proc):
                self.host_proc = env_proc
            else:
                self.host_proc_note = (
                    f"Pod mapping is off: {ENV_HOST_PROC}={env_proc} is not a directory in "
                    "the agent's container (is the chart's hostPath mount of the host's /proc "
                    "missing?)."
                )
        self.host_sys = options.host_sys or env.get(ENV_HOST_SYS, "").strip() or None
        self.journal = options.journal or env.get(ENV_JOURNAL, "").strip() or None
        self.pod_resources_socket = env.get(ENV_POD_RESOURCES, "").strip() or None
        self.node_name = env.get(ENV_NODE_NAME, "").strip() or None
        env_level = env.get(ENV_LOG_LEVEL, "").strip().lower()
        self.log_level = options.log_level or (
            env_level if env_level in protocol.LOG_LEVELS else "warning"
        )


def _factory(options: Options) -> Callable[[], Backend]:
    if options.backend == "fake":
        scenario: str | None = options.scenario

        def fake() -> Backend:
            from agent.fake import load_scenario

            return load_scenario(scenario)

        return fake

    gpu_timeout = GPU_TIMEOUT_SHARE * options.call_timeout

    def nvml() -> Backend:
        from agent.nvml import NvmlBackend  # the only import of pynvml, and only here

        return NvmlBackend(gpu_timeout_s=gpu_timeout)

    return nvml


def session_from(
    options: Options, write: Callable[[bytes], None], env: Mapping[str, str] | None = None
) -> Session:
    """Build the backend (eagerly for fake, lazily for NVML), tools and session.
    ``env`` (default: this process's environment) supplies the chart's settings."""
    if options.scenario is not None and options.backend != "fake":
        raise UsageError("--scenario only applies to --backend fake")
    if options.host_proc is not None and not os.path.isdir(options.host_proc):
        raise UsageError(
            f"--host-proc {options.host_proc}: not a directory (mount the host's /proc there)"
        )
    if options.host_sys is not None and not os.path.isdir(options.host_sys):
        raise UsageError(
            f"--host-sys {options.host_sys}: not a directory (mount the host's /sys there, "
            "read-only)"
        )
    settings = Settings(options, os.environ if env is None else env)
    protocol.log_threshold = protocol.LOG_LEVELS[settings.log_level]
    toolbox = Toolbox(
        _factory(options),
        backend_name=options.backend,
        kmsg_path=settings.kmsg,
        kmsg_origin=settings.kmsg_origin,
        host_proc=settings.host_proc,
        host_sys=settings.host_sys,
        journal=settings.journal,
        host_proc_note=settings.host_proc_note,
        pod_resources_socket=settings.pod_resources_socket,
        node_name=settings.node_name,
        eager=options.backend == "fake",  # a bad scenario is a start-up error
    )
    return Session(
        toolbox,
        write,
        call_timeout=options.call_timeout,
        server_version=__version__,
        instructions=INSTRUCTIONS,
    )


def create_session(
    args: Sequence[str],
    write: Callable[[bytes], None],
    *,
    env: Mapping[str, str] | None = None,
) -> Session:
    """A session for ``gpu-agent ARGS`` without a process (the simulated cluster's exec).

    ``write`` receives complete newline-terminated JSON lines, possibly from worker
    threads. ``env`` stands for the exec'd process's environment (default: this
    process's), e.g. the chart's GPU_AGENT_* settings. Raises AgentError subclasses
    (UsageError, ScenarioError...) for bad input.
    """
    return session_from(parse_options(args, raise_errors=True), write, env)


def serve(session: Session, stream: object) -> None:
    """Feed ``stream``'s lines to ``session`` until EOF; over-long lines are skipped
    without being held in memory, and answered with an error."""
    readline = stream.readline  # type: ignore[attr-defined]
    while True:
        line: bytes = readline(MAX_MESSAGE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_MESSAGE_BYTES and not line.endswith(b"\n"):
            size = len(line)  # line keeps the first bytes: the id is read from them
            while True:  # drain the rest of this line in bounded pieces
                rest: bytes = readline(MAX_MESSAGE_BYTES)
                size += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            session.refuse_oversized(size, line)
            continue
        session.feed(line)


def _command(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(options, command words): ``gpu-agent [OPTIONS] call TOOL [JSON] [OPTIONS]``. Words
    are empty for the MCP server; options may also follow the command."""
    if not any(word in ("call", "tools") for word in args):  # the common case, cheaply
        return list(args), []
    from agent.oneshot import COMMANDS, split_command

    value_flags = tuple(_FLAGS)
    options, rest = split_command(args, value_flags)
    if not rest or rest[0] not in COMMANDS:
        return list(args), []  # argparse explains what is wrong
    words = [rest[0]]
    i = 1
    while i < len(rest):
        word = rest[i]
        if word.startswith("--") and word != "--list":
            step = 2 if word in value_flags else 1
            options.extend(rest[i : i + step])
            i += step
        else:
            words.append(word)
            i += 1
    return options, words


def run_command(
    args: Sequence[str], env: Mapping[str, str] | None = None
) -> tuple[int, bytes, bytes] | None:
    """``gpu-agent ARGS`` in this process when ARGS is a one-shot command (``call``,
    ``tools``): (exit code, stdout, stderr). None: ARGS start the MCP server (use
    create_session). For the simulated cluster's in-process exec; blocks up to the call
    deadline, so run it off the event loop."""
    options_args, words = _command(args)
    if not words:
        return None
    from agent import oneshot

    output = oneshot.Output(captured=True)
    try:
        options = parse_options(options_args, raise_errors=True)
    except UsageError as exc:
        return oneshot.EXIT_USAGE, b"", f"gpu-agent: {exc}\n".encode()
    code = oneshot.main(options, words, session_from, output, env)
    return code, bytes(output.stdout), bytes(output.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """``gpu-agent``: serve MCP on stdin/stdout until stdin closes; ``gpu-agent call``
    and ``gpu-agent tools``: one tool's JSON, or the tool list (agent.oneshot)."""
    args, words = _command(sys.argv[1:] if argv is None else argv)
    options = parse_options(args)
    if words:
        from agent import oneshot

        code = oneshot.main(options, words, session_from)
        try:
            sys.stdout.flush()
        except OSError:  # the reader went away
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.stderr.flush()
        os._exit(code)  # a call stuck in the driver must not hold the process
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    try:
        session = session_from(options, write)
    except AgentError as exc:
        protocol.log(str(exc), "error")
        return 2
    protocol.log(f"serving MCP on stdio (backend {options.backend})", "info")
    try:
        serve(session, sys.stdin.buffer)
    except KeyboardInterrupt:
        return 130
    session.close()
    try:
        sys.stdout.flush()
    except OSError:  # the reader went away: keep Python's exit-time flush quiet
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if session.busy:
        # Threads stuck inside the driver could block interpreter shutdown: leave now.
        sys.stderr.flush()
        os._exit(0)
    return 0
