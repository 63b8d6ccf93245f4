"""Which node sources the chart turned on for the agents, read from the agent pods' env.

The chart gives the agent container one variable per source (values ``xid``,
``hostJournal``, ``hostSys``, ``hostProc``) and exec'd agents inherit it, so the pod spec
says what every diagnosis on that node can see, before any agent runs. ``broker doctor``
reports it; the agent's own answers say the same per call under ``sources``. The names are
the agent's (agent/app.py, ``gpu-agent --help``); tests/chart/test_doctor_contract.py
checks them against the rendered chart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Json = dict[str, Any]

# (source, the agent's variable, the chart value that turns it on)
SOURCES = (
    ("kernel_log", "GPU_AGENT_KMSG", "xid.enabled"),
    ("journal", "GPU_AGENT_JOURNAL", "hostJournal.enabled"),
    ("host_sysfs", "GPU_AGENT_HOST_SYS", "hostSys.enabled"),
    ("host_proc", "GPU_AGENT_HOST_PROC", "hostProc.enabled"),
)
MIXED = "mixed"  # the pods disagree (a rollout in progress, or hand-edited pods)


def _env(pod: Mapping[str, Any]) -> dict[str, str]:
    containers = (pod.get("spec") or {}).get("containers") or []
    return {
        str(e.get("name")): str(e["value"])
        for c in containers[:1]
        for e in c.get("env") or []
        if e.get("value") is not None
    }


def _state(source: str, env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if source == "kernel_log":
        return "off" if value in ("", "off") else "on"
    return "on" if value else "off"


def node_sources(pods: Sequence[Mapping[str, Any]]) -> Json:
    """{source: "on" | "off" | "mixed"} over the agent pods; {} when there are none."""
    if not pods:
        return {}
    envs = [_env(p) for p in pods]
    found: Json = {}
    for source, name, _ in SOURCES:
        states = {_state(source, env, name) for env in envs}
        found[source] = states.pop() if len(states) == 1 else MIXED
    return found


def describe(sources: Mapping[str, str]) -> str:
    """One line for the doctor's summary, e.g. "node sources: kernel log on, journal off
    (hostJournal.enabled), ..."."""
    parts = []
    for source, _, value in SOURCES:
        state = sources.get(source)
        if state is None:
            continue
        hint = f" ({value})" if state == "off" else ""
        parts.append(f"{source.replace('_', ' ')} {state}{hint}")
    return "node sources: " + ", ".join(parts) if parts else ""
