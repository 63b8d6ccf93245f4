"""A small JSON-Schema subset validator: only the keywords the tools' inputSchemas use.

``jsonschema`` would cost more than the agent's whole start-up budget. Problems name the
path and what was expected; echoed input is clipped so a huge argument cannot make a
huge error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from agent.errors import clip

MAX_PROBLEMS = 10  # a request with 100,000 unknown keys gets 10 problems and a count


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool):  # bool is an int in Python, never in JSON
        return False
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float) and math.isfinite(value)
    return True  # unknown type names are not ours to reject


def validate(value: Any, schema: Mapping[str, Any], path: str = "arguments") -> list[str]:
    """Check ``value`` against a JSON Schema subset (type, enum, properties, required,
    additionalProperties, items, minimum/maximum, exclusiveMinimum/Maximum, minLength,
    maxLength). Returns readable problems (at most MAX_PROBLEMS and a count of the rest);
    empty means valid."""
    problems = _validate(value, schema, path)
    if len(problems) > MAX_PROBLEMS:
        more = len(problems) - MAX_PROBLEMS
        problems = [*problems[:MAX_PROBLEMS], f"...and {more} more problem(s)"]
    return problems


def _validate(value: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    kinds = schema.get("type")
    if kinds is not None:
        allowed = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_type_ok(value, k) for k in allowed):
            return [f"{path} must be {' or '.join(allowed)}, got {_json_type(value)}"]
    problems: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path} must be one of {json.dumps(schema['enum'])}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        for key, word in _BOUNDS:
            bound = schema.get(key)
            if not isinstance(bound, int | float):
                continue
            if key == "minimum":
                ok = value >= bound
            elif key == "maximum":
                ok = value <= bound
            elif key == "exclusiveMinimum":
                ok = value > bound
            else:
                ok = value < bound
            if not ok:
                problems.append(f"{path} must be {word} {bound}, got {_brief(value)}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            problems.append(f"{path} must have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{path} must have at most {schema['maxLength']} characters")
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in value:
                problems.append(f"{path}.{key} is required")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                problems.extend(_validate(item, props[key], f"{path}.{key}"))
            elif extra is False:
                known = ", ".join(props) or "none"
                problems.append(f"{path} has unknown property {clip(repr(key))} (known: {known})")
            elif isinstance(extra, Mapping):
                problems.extend(_validate(item, extra, f"{path}.{clip(key, 80)}"))
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            problems.extend(_validate(item, schema["items"], f"{path}[{i}]"))
    return problems


_BOUNDS = (
    ("minimum", "≥"),
    ("maximum", "≤"),
    ("exclusiveMinimum", ">"),
    ("exclusiveMaximum", "<"),
)


def _brief(value: Any) -> str:
    text = (
        repr(value) if not isinstance(value, int) or value.bit_length() < 200 else "a huge number"
    )
    return text if len(text) <= 80 else text[:80] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"
