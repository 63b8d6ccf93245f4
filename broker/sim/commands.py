"""What an exec into a simulated pod runs, decided from its command line.

The agent pod's image is ``python:3.13-slim`` with the agent installed (the chart's
default mounts the zipapp at /usr/local/bin/gpu-agent; the Containerfile's hardened
image has it in /opt/gpu-agent/bin). So, in an agent pod:

* ``gpu-agent ARGS`` (any path the images use) and ``python3 -m agent ARGS`` run the
  real agent with ARGS (its fake backend, on that node's scenario);
* ``sleep N|infinity``, ``echo``, ``true``, ``false`` behave as coreutils do;
* ``sh -c``/``bash -c`` with ONE of the above as its script (``exec`` allowed) runs it;
  a command missing from the image gets the shell's own "not found" (exit 127);
* a program the image has but the sim does not run (``ls``, ``cat``, ``nvidia-smi``
  injected by the NVIDIA runtime, ``python3 -c``, shell pipelines ...) exits 126 and
  says so on stderr: the sim never runs arbitrary programs on its host;
* anything else is "executable file not found", in runc's words (exec.py).

Other pods (workloads, the device plugin) have no agent: only the builtins above.
"""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass

from .agent_runner import AgentRun

AGENT_PATHS = ("gpu-agent", "/usr/local/bin/gpu-agent", "/opt/gpu-agent/bin/gpu-agent")
PYTHONS = ("python3", "python", "python3.13", "/usr/local/bin/python3", "/usr/local/bin/python",
           "/usr/local/bin/python3.13", "/opt/gpu-agent/bin/python3")  # fmt: skip
SHELLS = ("sh", "/bin/sh", "/usr/bin/sh", "bash", "/bin/bash", "/usr/bin/bash")
PYTHON_VERSION = "Python 3.13.5"
# In python:3.13-slim (Debian trixie) or injected by the NVIDIA runtime, but not simulated.
IN_IMAGE = frozenset(
    [
        "cat",
        "chmod",
        "cp",
        "cut",
        "date",
        "dd",
        "df",
        "dirname",
        "du",
        "env",
        "expr",
        "find",
        "grep",
        "gzip",
        "head",
        "hostname",
        "id",
        "kill",
        "ln",
        "ls",
        "mkdir",
        "mktemp",
        "mount",
        "mv",
        "nice",
        "nproc",
        "nvidia-smi",
        "od",
        "pip",
        "pip3",
        "printenv",
        "printf",
        "pwd",
        "readlink",
        "realpath",
        "rm",
        "rmdir",
        "sed",
        "seq",
        "sort",
        "stat",
        "stty",
        "sync",
        "tail",
        "tar",
        "tee",
        "test",
        "timeout",
        "touch",
        "tr",
        "tty",
        "uname",
        "uniq",
        "wc",
        "whoami",
        "xargs",
        "yes",
    ]
)
_SHELL_META = frozenset("|&;<>()$`\\\n*?[]~")  # outside quotes: more than one simple command
_INFINITY = float("inf")


@dataclass(frozen=True)
class RunAgent:
    """Run the real agent with these arguments."""

    args: list[str]


@dataclass(frozen=True)
class Builtin:
    """A simulated program: its output and exit code, after *sleep_s* seconds."""

    stdout: str = ""
    stderr: str = ""
    code: int = 0
    sleep_s: float = 0.0


@dataclass(frozen=True)
class NotFound:
    """The binary is not in the image: runc refuses the exec itself."""

    binary: str


Plan = RunAgent | Builtin | NotFound


def _base(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _not_simulated(what: str) -> Builtin:
    return Builtin(
        stderr=f"k8s-gpu-sim: {what} is in the agent's image but the simulated cluster does "
        "not run it; it runs gpu-agent, python3 -m agent, sleep, echo, true, false, and "
        "sh -c with one of those\n",
        code=126,
    )


def _sleep(args: list[str]) -> Builtin:
    if not args:
        return Builtin(stderr="sleep: missing operand\nTry 'sleep --help' for more "
                       "information.\n", code=1)  # fmt: skip
    total = 0.0
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    for arg in args:
        if arg in ("inf", "infinity"):
            total = _INFINITY
            continue
        number, unit = (arg[:-1], arg[-1]) if arg[-1:] in units else (arg, "s")
        try:
            value = float(number)
        except ValueError:
            value = -1.0
        if value < 0:
            return Builtin(stderr=f"sleep: invalid time interval '{arg}'\nTry 'sleep --help' "
                           "for more information.\n", code=1)  # fmt: skip
        total += value * units[unit]
    return Builtin(sleep_s=total)


def _program(argv: list[str], agent: bool) -> Plan:
    """A program exec'd directly (no shell)."""
    name = argv[0]
    base = _base(name)
    if agent and name in AGENT_PATHS:
        return RunAgent(argv[1:])
    if name in PYTHONS or (base in ("python", "python3") and name.startswith("/")):
        if agent and argv[1:3] == ["-m", "agent"]:
            return RunAgent(argv[3:])
        if argv[1:2] in (["--version"], ["-V"]):
            return Builtin(stdout=PYTHON_VERSION + "\n")
        return _not_simulated(" ".join(argv[:2]))
    if base == "sleep" and name in ("sleep", "/bin/sleep", "/usr/bin/sleep"):
        return _sleep(argv[1:])
    if base == "echo" and name in ("echo", "/bin/echo", "/usr/bin/echo"):
        return Builtin(stdout=" ".join(argv[1:]) + "\n")
    if base in ("true", "false") and name in (base, f"/bin/{base}", f"/usr/bin/{base}"):
        return Builtin(code=0 if base == "true" else 1)
    if name in SHELLS:
        return _shell(argv, agent)
    if base in IN_IMAGE and (name == base or name in (f"/bin/{base}", f"/usr/bin/{base}")):
        return _not_simulated(base)
    return NotFound(name)


def _needs_a_shell(script: str) -> bool:
    """Whether *script* uses the shell beyond one simple command (pipes, expansions,
    redirections, globs), looking only outside quotes (``$`` also inside double)."""
    quote = ""
    for ch in script:
        if quote == "'":
            quote = "" if ch == "'" else quote
        elif quote == '"':
            if ch == '"':
                quote = ""
            elif ch in "$`\\":
                return True
        elif ch in "'\"":
            quote = ch
        elif ch in _SHELL_META:
            return True
    return bool(quote)  # an unterminated quote: the shell's own syntax error


def _shell(argv: list[str], agent: bool) -> Plan:
    shell = _base(argv[0])
    if len(argv) < 3 or argv[1] != "-c":
        return _not_simulated(f"{shell} without -c (an interactive shell)")
    script = argv[2]
    if _needs_a_shell(script):
        return _not_simulated(f"{shell} -c {script!r} (only one simple command is simulated)")
    words = shlex.split(script)
    if words[:1] == ["exec"]:
        words = words[1:]
    if not words:
        return Builtin()
    if words[0] == "exit":
        code = words[1] if len(words) > 1 else "0"
        return Builtin(code=int(code) % 256 if code.isdigit() else 2)
    plan = _program(words, agent)
    if isinstance(plan, NotFound):  # the shell looked it up in $PATH and failed
        if shell == "bash":
            return Builtin(stderr=f"bash: line 1: {plan.binary}: command not found\n", code=127)
        return Builtin(stderr=f"{shell}: 1: {plan.binary}: not found\n", code=127)
    return plan


def resolve(argv: list[str], agent_pod: bool) -> Plan:
    """What ``exec -- ARGV`` runs in an agent pod (*agent_pod*) or another pod."""
    return _program(list(argv), agent_pod)


class BuiltinRun(AgentRun):
    """A simulated program behind an exec: prints, sleeps, exits (stdin is ignored)."""

    def __init__(self, plan: Builtin) -> None:
        super().__init__()
        self.plan = plan
        self._done = asyncio.Event()
        self._rc = plan.code
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        if self.plan.stdout:
            self.output.put_nowait((1, self.plan.stdout.encode()))
        if self.plan.stderr:
            self.output.put_nowait((2, self.plan.stderr.encode()))
        if self.plan.sleep_s == _INFINITY:
            await asyncio.Event().wait()  # until killed (the client left)
        elif self.plan.sleep_s:
            await asyncio.sleep(self.plan.sleep_s)
        self._finish(self._rc)

    def _finish(self, rc: int) -> None:
        if not self._done.is_set():
            self._rc = rc
            self._done.set()
            self.output.put_nowait(None)

    async def send(self, data: bytes) -> None:
        return None

    async def close_stdin(self) -> None:
        return None

    def kill(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._finish(137)

    async def wait(self) -> int:
        await self._done.wait()
        return self._rc

    async def aclose(self) -> None:
        self.kill()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
