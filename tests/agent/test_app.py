"""The ``gpu-agent`` command line (agent.app / agent.__main__) as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent import __version__
from agent.app import Options, _fast_parse, build_parser, parse_options
from tests.agent.helpers import AGENT, ROOT

SCRIPT = Path(sys.executable).with_name("gpu-agent")


def run(
    args: list[str], stdin: bytes = b"", timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        args, input=stdin, capture_output=True, cwd=ROOT, timeout=timeout, check=False
    )


def lines(*messages: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(m).encode() + b"\n" for m in messages)


def test_help_documents_every_option() -> None:
    done = run([*AGENT, "--help"])
    assert done.returncode == 0
    out = done.stdout.decode()
    for option in ("--backend", "--scenario", "--kmsg", "--host-proc", "--call-timeout"):
        assert option in out
    assert "get_gpu_health" in out and "runtimeClassName" in out


def test_console_script_reports_its_version() -> None:
    done = run([str(SCRIPT), "--version"])
    assert done.returncode == 0
    assert done.stdout.decode().strip() == f"gpu-agent {__version__}"


def test_bad_options_exit_2_with_a_message_and_empty_stdout(tmp_path: Path) -> None:
    for args, needle in (
        (["--backend", "dcgm"], "invalid choice"),
        (["--call-timeout", "soon"], "number of seconds"),
        (["--backend", "fake", "--scenario", str(tmp_path / "none.json")], "none.json"),
        (["--scenario", str(tmp_path / "none.json")], "--scenario only applies"),
    ):
        done = run([*AGENT, *args])
        assert done.returncode == 2, args
        assert done.stdout == b""
        assert needle in done.stderr.decode(), done.stderr


def test_eof_answers_everything_pipelined_then_exits_0() -> None:
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25"},
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        *(
            {
                "jsonrpc": "2.0",
                "id": i,
                "method": "tools/call",
                "params": {"name": "get_gpu_health"},
            }
            for i in range(1, 9)
        ),
        {"jsonrpc": "2.0", "id": 9, "method": "ping"},
    ]
    done = run([str(SCRIPT), "--backend", "fake"], lines(*requests))
    assert done.returncode == 0, done.stderr.decode()
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(a["id"] for a in answers) == list(range(10))
    by_id = {a["id"]: a for a in answers}
    for i in range(1, 9):
        assert by_id[i]["result"]["structuredContent"]["status"] == "critical"
    assert done.stderr == b""


def test_eof_with_a_stuck_call_answers_it_and_exits_promptly(
    scenario: Callable[[dict[str, Any]], str],
) -> None:
    path = scenario({"faults": [{"gpu": 0, "kind": "slow_nvml", "seconds": 60}]})
    started = time.monotonic()
    done = run(
        [*AGENT, "--backend", "fake", "--scenario", path, "--call-timeout", "0.5"],
        lines(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "get_gpu_health"},
            }
        ),
        timeout=30,
    )
    assert time.monotonic() - started < 15  # not the 60 s the call would take
    assert done.returncode == 0
    answer = json.loads(done.stdout)
    assert answer["result"]["isError"] is True
    assert "--call-timeout" in answer["result"]["content"][0]["text"]
    assert b"timed out" in done.stderr  # logged on stderr, never stdout


def test_eof_does_not_wait_for_the_call_deadline_of_a_stuck_call(
    scenario: Callable[[dict[str, Any]], str],
) -> None:
    path = scenario({"faults": [{"gpu": 0, "kind": "slow_nvml", "seconds": 60}]})
    started = time.monotonic()
    done = run(
        [*AGENT, "--backend", "fake", "--scenario", path, "--call-timeout", "30"],
        lines(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "get_gpu_inventory"},
            },
            {"jsonrpc": "2.0", "id": 2, "method": "ping"},
        ),
        timeout=30,
    )
    assert time.monotonic() - started < 10  # the EOF grace (2 s), not the 30 s deadline
    assert done.returncode == 0
    answers = {a["id"]: a for a in map(json.loads, done.stdout.splitlines())}
    assert answers[2]["result"] == {}
    text = answers[1]["result"]["content"][0]["text"]
    assert answers[1]["result"]["isError"] is True
    assert "input closed" in text and "still running" in text
    assert b"input closed" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--backend", "fake"],
        ["--backend=fake", "--scenario", "s.json", "--call-timeout", "2.5"],
        ["--kmsg", "/var/log/kern", "--host-proc=/host/proc", "--log-level", "debug"],
        ["--backend", "nvml", "--backend", "fake"],  # last one wins, as in argparse
    ],
)
def test_fast_option_parsing_matches_argparse(args: list[str]) -> None:
    fast = _fast_parse(args)
    assert fast is not None
    assert fast == Options(**vars(build_parser().parse_args(args)))


@pytest.mark.parametrize(
    "args",
    [
        ["--back", "fake"],  # an abbreviation: argparse's business
        ["--backend"],
        ["--backend", "dcgm"],
        ["--call-timeout", "-1"],
        ["--kmsg", "--backend"],
        ["--help"],
        ["positional"],
    ],
)
def test_unusual_command_lines_go_to_argparse(args: list[str]) -> None:
    assert _fast_parse(args) is None


def test_argparse_fallback_accepts_abbreviations() -> None:
    assert parse_options(["--back", "fake"]).backend == "fake"


def test_one_hung_gpu_does_not_cost_the_whole_nvml_call(
    fake_nvml_lib: Path, tmp_path: Path
) -> None:
    """NVML reads are bounded per GPU below --call-timeout (0.75x), so a health call with
    one hung GPU answers with the other GPUs instead of timing out as a whole."""
    from tests.agent.fakenvml import build as fakenvml

    config = tmp_path / "nvml.conf"
    config.write_text("gpu.3.sleep_s = 30\ngpu.3.sleep_on = nvmlDeviceGetPowerUsage\n")
    kmsg_log = ROOT / "tests" / "agent" / "data" / "kmsg-xid.txt"
    proc = subprocess.Popen(
        [*AGENT, "--backend", "nvml", "--call-timeout", "4", "--kmsg", str(kmsg_log)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=fakenvml.fake_env(fake_nvml_lib, config),
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        started = time.monotonic()
        proc.stdin.write(
            lines(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "tools/call",
                    "params": {"name": "get_gpu_health"},
                }
            )
        )
        proc.stdin.flush()
        answer = json.loads(proc.stdout.readline())  # stdin stays open: no EOF grace
        elapsed = time.monotonic() - started
    finally:
        proc.stdin.close()
        proc.stdout.read()
        proc.wait(timeout=30)
        proc.stdout.close()
    result = answer["result"]
    assert result["isError"] is False, result["content"][0]["text"]
    assert elapsed < 4  # answered before the call deadline
    gpus = {g["index"]: g for g in result["structuredContent"]["gpus"]}
    assert gpus[3]["status"] == "critical"
    assert any("hung" in issue["message"] for issue in gpus[3]["issues"])
    assert all(gpus[i]["status"] != "critical" for i in gpus if i != 3)
