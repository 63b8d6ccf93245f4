"""What an exec runs, decided from its command line (broker/sim/commands.py)."""

from __future__ import annotations

import pytest

from broker.sim.commands import Builtin, NotFound, RunAgent, resolve


@pytest.mark.parametrize(
    ("argv", "agent_pod", "plan"),
    [
        (["gpu-agent"], True, RunAgent([])),
        (["/usr/local/bin/gpu-agent", "call", "get_gpu_health"], True,
         RunAgent(["call", "get_gpu_health"])),
        (["/opt/gpu-agent/bin/gpu-agent", "--version"], True, RunAgent(["--version"])),
        (["python3", "-m", "agent", "tools"], True, RunAgent(["tools"])),
        (["sh", "-c", "exec gpu-agent call get_gpu_inventory '{}'"], True,
         RunAgent(["call", "get_gpu_inventory", "{}"])),
        (["gpu-agent"], False, NotFound("gpu-agent")),
        (["sleep", "infinity"], False, Builtin(sleep_s=float("inf"))),
        (["sleep", "1m", "2"], True, Builtin(sleep_s=62.0)),
        (["echo", "a", "b"], True, Builtin(stdout="a b\n")),
        (["false"], True, Builtin(code=1)),
        (["sh", "-c", "exit 3"], True, Builtin(code=3)),
        (["python3", "--version"], True, Builtin(stdout="Python 3.13.5\n")),
        (["bash", "-c", "nvtop"], True,
         Builtin(stderr="bash: line 1: nvtop: command not found\n", code=127)),
        (["nvtop"], True, NotFound("nvtop")),
        (["sh", "-c", "echo 'a | b'"], True, Builtin(stdout="a | b\n")),
        (["sh", "-c", "gpu-agent tools | head -1"], True, None),  # a pipeline
        (["sh", "-c", 'echo "$HOME"'], True, None),  # an expansion
        (["/bin/sh"], True, None),  # interactive: 126, said on stderr
    ],
)  # fmt: skip
def test_resolve(argv: list[str], agent_pod: bool, plan: object) -> None:
    got = resolve(argv, agent_pod)
    if plan is None:
        assert isinstance(got, Builtin) and got.code == 126 and "does not run it" in got.stderr
    else:
        assert got == plan


def test_sleep_rejects_what_coreutils_rejects() -> None:
    got = resolve(["sleep", "soon"], True)
    assert isinstance(got, Builtin) and got.code == 1
    assert got.stderr.startswith("sleep: invalid time interval 'soon'")
    got = resolve(["sleep"], True)
    assert isinstance(got, Builtin) and got.stderr.startswith("sleep: missing operand")
