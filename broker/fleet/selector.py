"""Kubernetes label selectors (``kubectl -l`` syntax), evaluated on node labels.

Grammar, as the API server accepts it: comma-separated requirements, each one of
``key=value``, ``key==value``, ``key!=value``, ``key in (a,b)``, ``key notin (a,b)``,
``key`` (exists) and ``!key`` (does not exist). All requirements must hold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from broker.errors import clip

__all__ = ["InvalidSelector", "Requirement", "Selector", "parse_selector"]

# A qualified name with an optional DNS-subdomain prefix, as label keys are.
_KEY = r"(?:[a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_KEY_RE = re.compile(rf"^{_KEY}$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")
_SET_RE = re.compile(r"^\s*(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_CMP_RE = re.compile(r"^\s*(?P<key>[^=!\s]+)\s*(?P<op>==|=|!=)\s*(?P<value>\S*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(?P<neg>!)?\s*(?P<key>[^=!\s()]+)\s*$")


class InvalidSelector(ValueError):
    """The selector text is not valid label-selector syntax; the message says where."""


@dataclass(frozen=True)
class Requirement:
    """One clause: ``key op values``."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # "!=" and "notin" also match nodes without the label, as in Kubernetes.
        return not present or value not in self.values


@dataclass(frozen=True)
class Selector:
    """A parsed selector; ``matches(labels)`` is True when every requirement holds."""

    text: str
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _split(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise InvalidSelector("unbalanced ')'")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise InvalidSelector("unbalanced '('")
    parts.append("".join(current))
    return parts


def _key(key: str, clause: str) -> str:
    if not _KEY_RE.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise InvalidSelector(f"{clip(key)!r} in {clip(clause.strip())!r} is not a valid label key")
    return key


def _value(value: str, clause: str) -> str:
    if not _VALUE_RE.match(value) or len(value) > 63:
        raise InvalidSelector(
            f"{clip(value)!r} in {clip(clause.strip())!r} is not a valid label value"
        )
    return value


def _requirement(clause: str) -> Requirement:
    if not clause.strip():
        raise InvalidSelector("empty requirement (a stray comma?)")
    if m := _SET_RE.match(clause):
        values = tuple(v.strip() for v in m["values"].split(","))
        if values == ("",):
            raise InvalidSelector(f"{clip(clause.strip())!r}: the set of values is empty")
        return Requirement(
            _key(m["key"], clause), m["op"], tuple(_value(v, clause) for v in values)
        )
    if m := _CMP_RE.match(clause):
        op = "=" if m["op"] == "==" else m["op"]
        return Requirement(_key(m["key"], clause), op, (_value(m["value"], clause),))
    if m := _EXISTS_RE.match(clause):
        return Requirement(_key(m["key"], clause), "!" if m["neg"] else "exists")
    raise InvalidSelector(
        f"cannot parse {clip(clause.strip())!r}: use key=value, key!=value, key in (a,b), "
        "key notin (a,b), key or !key"
    )


def parse_selector(text: str) -> Selector:
    """Parse ``text`` (e.g. ``nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3,zone!=b``).

    Raises :class:`InvalidSelector` with what is wrong and where.
    """
    if not text or not text.strip():
        raise InvalidSelector("the selector is empty; omit it to select every GPU node")
    try:
        requirements = tuple(_requirement(part) for part in _split(text))
    except InvalidSelector as exc:
        raise InvalidSelector(f"invalid node_selector {clip(text)!r}: {exc}") from None
    return Selector(text, requirements)
