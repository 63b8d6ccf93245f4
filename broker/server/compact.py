"""Keep ``tools/list`` small: every client downloads it and many put all of it in the
model's context (it was 51 KB; the budget is 30 KB). Output schemas exist so clients can
validate ``structuredContent``: prose inside them (``description``, ``title``) helps no
validator, and below the first level of properties the cluster-wide server sends only
each value's type (the top-level fields, their types and which are required). The
answers themselves are unchanged and still validate. Input schemas are sent whole: the
model reads those to call the tool.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["OUTPUT_DEPTH", "compact_definition", "strip_prose", "truncate"]

Json = dict[str, Any]
_PROSE = frozenset({"description", "title", "examples", "$comment"})
OUTPUT_DEPTH = 1  # levels of properties kept in full in an output schema
_KEPT_WHEN_TRUNCATED = ("type", "enum")


def strip_prose(schema: Any) -> Any:
    """``schema`` without description/title/examples at any depth. A property that happens
    to be *named* ``description`` or ``title`` (inside ``properties``) is kept."""
    if isinstance(schema, list):
        return [strip_prose(s) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out: Json = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "$defs", "definitions") and isinstance(
            value, Mapping
        ):
            out[key] = {name: strip_prose(sub) for name, sub in value.items()}
        elif key in _PROSE and isinstance(value, str | list):
            continue
        else:
            out[key] = strip_prose(value)
    return out


def truncate(schema: Any, depth: int) -> Any:
    """``schema`` with ``depth`` levels of ``properties`` kept; below them each value is
    only its ``type`` (and ``enum``). Array items do not count as a level."""
    if not isinstance(schema, Mapping):
        return schema
    if depth <= 0:
        return {k: schema[k] for k in _KEPT_WHEN_TRUNCATED if k in schema}
    out: Json = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, Mapping):
            out[key] = {name: truncate(sub, depth - 1) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = truncate(value, depth)
        elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
            out[key] = [truncate(v, depth) for v in value]
        else:
            out[key] = value
    return out


def compact_definition(definition: Mapping[str, Any], depth: int = OUTPUT_DEPTH) -> Json:
    """A tool definition whose output schema carries no prose and ``depth`` levels."""
    out = dict(definition)
    if out.get("outputSchema") is not None:
        out["outputSchema"] = truncate(strip_prose(out["outputSchema"]), depth)
    return out
