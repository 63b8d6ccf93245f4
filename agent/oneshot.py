"""One-shot mode: ``gpu-agent call TOOL ['{"arg": ...}']`` and ``gpu-agent tools``.

For plain ``kubectl exec POD -- gpu-agent call get_gpu_health`` (no ``-i``, no stdin) and
generic Kubernetes MCP servers' ``pods_exec``: run one tool through the same session as
the MCP server (same validation, deadline and errors), print its JSON, exit.

Exit codes: 0 the tool's JSON is on stdout; 1 the tool ran and failed (message on
stderr); 2 usage: unknown tool, arguments that are not a JSON object or that the tool's
inputSchema rejects, bad options.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.catalog import TOOL_DEFINITIONS, TOOL_NAMES
from agent.errors import AgentError

COMMANDS = ("call", "tools")
EXIT_OK, EXIT_TOOL_ERROR, EXIT_USAGE = 0, 1, 2
# The session answers by the call deadline; this is only a guard against a bug.
WAIT_SLACK_S = 5.0


def split_command(args: Sequence[str], value_flags: Sequence[str]) -> tuple[list[str], list[str]]:
    """(options, the rest from the first positional word on). ``value_flags`` take the
    next word as their value unless written ``--flag=value``."""
    i = 0
    while i < len(args):
        word = args[i]
        if not word.startswith("-") or word == "-":
            return list(args[:i]), list(args[i:])
        i += 2 if word in value_flags else 1
    return list(args), []


class Output:
    """Where one-shot output goes: this process's stdout/stderr, or (``captured``) two
    buffers, for the simulated cluster's in-process exec."""

    def __init__(self, captured: bool = False) -> None:
        self.captured = captured
        self.stdout = bytearray()
        self.stderr = bytearray()

    def out(self, data: bytes) -> None:
        if self.captured:
            self.stdout += data
        else:
            sys.stdout.flush()
            sys.stdout.buffer.write(data)

    def err(self, text: str) -> None:
        if self.captured:
            self.stderr += text.encode("utf-8", "backslashreplace")
        else:
            sys.stderr.write(text)
            sys.stderr.flush()


def _fail(output: Output, message: str, code: int = EXIT_USAGE) -> int:
    output.err(f"gpu-agent: {message}\n")
    return code


def _usage(output: Output, message: str) -> int:
    return _fail(
        output,
        f"{message}\nusage: gpu-agent [OPTIONS] call TOOL ['{{\"arg\": value}}']   "
        "(or: gpu-agent tools)\ntools: " + ", ".join(TOOL_NAMES),
    )


def list_tools(output: Output) -> int:
    """``gpu-agent tools``: each tool's name and title, one a line."""
    width = max(len(name) for name in TOOL_NAMES)
    for tool in TOOL_DEFINITIONS:
        output.out(f"{tool['name']:<{width}}  {tool.get('title', '')}\n".encode())
    return EXIT_OK


def parse_call(words: Sequence[str]) -> tuple[str, dict[str, Any]] | str:
    """(tool, arguments) from ``TOOL [JSON]``, or the usage problem."""
    if not words:
        return "call needs a tool name"
    if len(words) > 2:
        return f"call takes a tool and at most one JSON argument, got {len(words)} words"
    name = words[0]
    if name not in TOOL_NAMES:
        from agent.errors import clip

        return f"unknown tool {clip(name, 80)!r}"
    if len(words) == 1:
        return name, {}
    try:
        arguments = json.loads(words[1])
    except ValueError as exc:
        return f"arguments must be a JSON object, e.g. '{{\"since_minutes\": 30}}' ({exc})"
    if not isinstance(arguments, dict):
        return "arguments must be a JSON object, e.g. '{\"since_minutes\": 30}'"
    return name, arguments


# (options, write, env) -> a protocol Session: agent.app.session_from, handed in by the
# caller (this module is below app, which starts it).
OpenSession = Callable[[Any, Callable[[bytes], None], Mapping[str, str] | None], Any]


def call(
    options: Any,
    name: str,
    arguments: dict[str, Any],
    output: Output,
    session_from: OpenSession,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run one tool through a protocol session and print its structured result."""
    from agent.protocol import LATEST_VERSION, dumps, encode

    answers: dict[Any, dict[str, Any]] = {}
    arrived = threading.Condition()

    def write(data: bytes) -> None:
        message = json.loads(data)
        with arrived:
            answers[message.get("id")] = message
            arrived.notify_all()

    try:
        session = session_from(options, write, env)
    except AgentError as exc:
        return _fail(output, str(exc))
    init = {"protocolVersion": LATEST_VERSION, "capabilities": {}}
    session.feed(dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}))
    params = {"name": name, "arguments": arguments}
    session.feed(dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}))
    with arrived:
        arrived.wait_for(lambda: 1 in answers, options.call_timeout + WAIT_SLACK_S)
    answer = answers.get(1)
    session.close(grace=0)
    if answer is None:
        message = f"{name} gave no answer within {options.call_timeout:g} s"
        return _fail(output, message, EXIT_TOOL_ERROR)
    if "error" in answer:  # the session refused the call: its arguments are wrong
        return _fail(output, f"{name}: {answer['error'].get('message', answer['error'])}")
    result = answer["result"]
    if result.get("isError"):
        text = " ".join(c.get("text", "") for c in result.get("content", []))
        return _fail(output, f"{name} failed: {text}", EXIT_TOOL_ERROR)
    output.out(encode(result.get("structuredContent") or {}))  # bytes: never a bad character
    return EXIT_OK


def main(
    options: Any,
    words: Sequence[str],
    session_from: OpenSession,
    output: Output | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """``gpu-agent [OPTIONS] call|tools ...``; ``words`` starts with the command."""
    output = output or Output()
    command, rest = words[0], list(words[1:])
    if command == "tools":
        return list_tools(output) if not rest else _usage(output, "tools takes no arguments")
    if rest == ["--list"]:
        return list_tools(output)
    parsed = parse_call(rest)
    if isinstance(parsed, str):
        return _usage(output, parsed)
    return call(options, *parsed, output, session_from, env)
