"""The inputs of one failure explanation, as gathered (None = could not be read)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from broker.kube.names import DEFAULT_NAMESPACE
from broker.kube.reader import Missing

Obj = dict[str, Any]

WINDOW_BEFORE_S = 900.0  # XIDs asked for reach this far before the container's start
WINDOW_AFTER_S = 120.0  # ... and this far after its exit (shown, never counted as cause)


@dataclass
class Facts:
    """Everything known about one pod's failure; None = could not be read."""

    namespace: str
    name: str
    pod: Obj | None
    events: list[Obj] | None = None
    node: Obj | None = None
    xids: Obj | None = None  # the agent's analyze_xid_errors answer
    health: Obj | None = None  # the agent's get_gpu_health answer
    processes: Obj | None = None  # the agent's get_gpu_processes answer
    inventory: Obj | None = None  # the agent's get_gpu_inventory answer
    missing: list[Missing] = field(default_factory=list)
    now: float = field(default_factory=time.time)
    agent_namespace: str = DEFAULT_NAMESPACE
    window_before_s: float = WINDOW_BEFORE_S
    window_after_s: float = WINDOW_AFTER_S
