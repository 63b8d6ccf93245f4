"""Label and field selectors as the API server parses them (apimachinery grammar).

Errors raise ``SelectorError`` whose message is what a real API server puts in the
400 ``BadRequest`` Status (``unable to parse requirement: ...``, ``field label not
supported: ...``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS1123_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
_SPECIAL = " \t\n,()=!<>"


class SelectorError(ValueError):
    """A selector the API server would reject with 400 BadRequest."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", ">", "<"
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
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if not present or value is None:
            return False
        try:  # gt/lt compare integers; a non-integer label value never matches
            number = int(value)
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == ">" else number < bound


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in " \t\n":
            i += 1
        elif text.startswith(("==", "!="), i):
            out.append(text[i : i + 2])
            i += 2
        elif ch in ",()=!<>":
            out.append(ch)
            i += 1
        else:
            j = i
            while j < len(text) and text[j] not in _SPECIAL:
                j += 1
            out.append(text[i:j])
            i = j
    return out


def _check_key(key: str) -> None:
    name = key.rsplit("/", 1)[-1]
    if "/" in key:
        prefix = key.rsplit("/", 1)[0]
        if not prefix or len(prefix) > 253 or not _DNS1123_RE.match(prefix):
            raise SelectorError(
                f'unable to parse requirement: key: Invalid value: "{key}": prefix part '
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character"
            )
    if not name or len(name) > 63 or not _NAME_RE.match(name):
        raise SelectorError(
            f'unable to parse requirement: key: Invalid value: "{key}": {_NAME_MSG}'
        )


def _check_value(key: str, index: int, value: str) -> None:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise SelectorError(
            f'unable to parse requirement: values[{index}][{key}]: Invalid value: "{value}": '
            f"{_VALUE_MSG}"
        )


def _is_ident(tok: str | None) -> bool:
    return tok is not None and tok[0] not in ",()=!<>" and tok not in ("==", "!=")


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse ``labelSelector`` (``a=b,c!=d,e in (f,g),!h,i``); raise SelectorError."""
    if not text or not text.strip():
        return LabelSelector()
    toks = _tokens(text)
    pos = 0

    def peek() -> str | None:
        return toks[pos] if pos < len(toks) else None

    reqs: list[Requirement] = []
    while True:
        tok = peek()
        if tok is None:
            break
        negate = tok == "!"
        if negate:
            pos += 1
            tok = peek()
        if not _is_ident(tok):
            found = "" if tok is None else tok
            raise SelectorError(
                f"unable to parse requirement: found '{found}', expected: identifier"
            )
        assert tok is not None
        key = tok
        pos += 1
        _check_key(key)
        nxt = peek()
        if negate:
            reqs.append(Requirement(key, "!"))
        elif nxt is None or nxt == ",":
            reqs.append(Requirement(key, "exists"))
        elif nxt in ("=", "==", "!=", ">", "<"):
            pos += 1
            op = "=" if nxt == "==" else nxt
            val = peek()
            if _is_ident(val) and val not in ("in", "notin"):
                assert val is not None
                pos += 1
            elif val is None or val == ",":
                val = ""
            else:
                raise SelectorError(
                    f"unable to parse requirement: found '{val}', expected: identifier"
                )
            if op in (">", "<") and not re.fullmatch(r"-?\d+", val):
                raise SelectorError(
                    f"unable to parse requirement: values[0]: Invalid value: \"{val}\": for 'Gt', "
                    "'Lt' operators, the value must be an integer"
                )
            _check_value(key, 0, val)
            reqs.append(Requirement(key, op, (val,)))
        elif nxt in ("in", "notin"):
            pos += 1
            if peek() != "(":
                raise SelectorError(
                    f"unable to parse requirement: found '{peek() or ''}', expected: '('"
                )
            pos += 1
            values: list[str] = []
            while True:
                val = peek()
                if val == ")" and not values:
                    break
                if val is None or val in ("(", "!", "=", "==", "!=", "<", ">"):
                    raise SelectorError(
                        f"unable to parse requirement: found '{val or ''}', expected: ',', ')' "
                        "or identifier"
                    )
                if val in (",", ")"):
                    values.append("")
                else:
                    values.append(val)
                    pos += 1
                sep = peek()
                if sep == ")":
                    break
                if sep != ",":
                    raise SelectorError(
                        f"unable to parse requirement: found '{sep or ''}', expected: ',' or ')'"
                    )
                pos += 1
            pos += 1  # ')'
            if not values:
                raise SelectorError(
                    "unable to parse requirement: values: Invalid value: []string{}: for 'in', "
                    "'notin' operators, values set can't be empty"
                )
            for i, v in enumerate(values):
                _check_value(key, i, v)
            reqs.append(Requirement(key, nxt, tuple(values)))
        else:
            raise SelectorError(
                f"unable to parse requirement: found '{nxt}', expected: "
                "in, notin, =, ==, !=, gt, lt"
            )
        after = peek()
        if after is None:
            break
        if after != ",":
            raise SelectorError(f"found '{after}', expected: ',' or 'end of string'")
        pos += 1
        if peek() is None:
            raise SelectorError("found '', expected: !, identifier, or 'end of string'")
    return LabelSelector(tuple(reqs))


# Field selectors -------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str  # "=" or "!="
    value: str


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        for r in self.requirements:
            equal = fields.get(r.field, "") == r.value
            if equal != (r.op == "="):
                return False
        return True


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, i = [], "", 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            cur += text[i : i + 2]
            i += 2
            continue
        if text[i] == sep:
            parts.append(cur)
            cur = ""
        else:
            cur += text[i]
        i += 1
    parts.append(cur)
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def parse_field_selector(text: str | None, supported: frozenset[str]) -> FieldSelector:
    """Parse ``fieldSelector`` (``a=b,c!=d``) for a resource supporting *supported* fields."""
    if not text or not text.strip():
        return FieldSelector()
    reqs: list[FieldRequirement] = []
    for part in _split_unescaped(text, ","):
        for op in ("!=", "==", "="):
            if op in part:
                field, value = part.split(op, 1)
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        field = field.strip()
        if field not in supported:
            raise SelectorError(f"field label not supported: {field}")
        reqs.append(FieldRequirement(field, "!=" if op == "!=" else "=", _unescape(value)))
    return FieldSelector(tuple(reqs))


# Which fields each resource supports, and how to read them from an object.

FieldGetter = Callable[[dict[str, Any]], dict[str, str]]


def _meta(obj: dict[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata", {})
    return {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}


def pod_fields(obj: dict[str, Any]) -> dict[str, str]:
    spec, status = obj.get("spec", {}), obj.get("status", {})
    out = _meta(obj)
    out.update(
        {
            "spec.nodeName": spec.get("nodeName", ""),
            "spec.restartPolicy": spec.get("restartPolicy", ""),
            "spec.schedulerName": spec.get("schedulerName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", ""),
            "spec.hostNetwork": str(bool(spec.get("hostNetwork", False))).lower(),
            "status.phase": status.get("phase", ""),
            "status.podIP": status.get("podIP", ""),
            "status.nominatedNodeName": status.get("nominatedNodeName", ""),
        }
    )
    return out


def node_fields(obj: dict[str, Any]) -> dict[str, str]:
    out = _meta(obj)
    out["spec.unschedulable"] = str(bool(obj.get("spec", {}).get("unschedulable", False))).lower()
    return out


def event_fields(obj: dict[str, Any]) -> dict[str, str]:
    inv, src = obj.get("involvedObject", {}), obj.get("source", {})
    out = _meta(obj)
    for key in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"):
        out[f"involvedObject.{key}"] = inv.get(key, "")
    out.update(
        {
            "reason": obj.get("reason", ""),
            "reportingComponent": obj.get("reportingComponent", ""),
            "source": src.get("component", ""),
            "type": obj.get("type", ""),
        }
    )
    return out


def namespace_fields(obj: dict[str, Any]) -> dict[str, str]:
    out = _meta(obj)
    out["status.phase"] = obj.get("status", {}).get("phase", "")
    return out


FIELDS: dict[str, tuple[frozenset[str], FieldGetter]] = {
    "pods": (
        frozenset(
            [
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ]
        ),
        pod_fields,
    ),
    "nodes": (frozenset(["metadata.name", "spec.unschedulable"]), node_fields),
    "events": (
        frozenset(
            [
                "metadata.name",
                "metadata.namespace",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ]
            + [
                f"involvedObject.{k}"
                for k in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion")
            ]
            + ["involvedObject.fieldPath"]
        ),
        event_fields,
    ),
    "namespaces": (frozenset(["metadata.name", "status.phase"]), namespace_fields),
}


def secret_fields(obj: dict[str, Any]) -> dict[str, str]:
    out = _meta(obj)
    out["type"] = obj.get("type", "")
    return out


def job_fields(obj: dict[str, Any]) -> dict[str, str]:
    out = _meta(obj)
    out["status.successful"] = str(obj.get("status", {}).get("succeeded", 0))
    return out


_META_FIELDS = (frozenset(["metadata.name", "metadata.namespace"]), _meta)
_GROUP_FIELDS: dict[str, tuple[frozenset[str], FieldGetter]] = {
    "secrets": (frozenset(["metadata.name", "metadata.namespace", "type"]), secret_fields),
    "jobs": (frozenset(["metadata.name", "metadata.namespace", "status.successful"]), job_fields),
}


def fields_for(plural: str, group: str) -> tuple[frozenset[str], FieldGetter]:
    """The field selectors *plural* in *group* supports (every kind: metadata.name and
    metadata.namespace), and how to read them."""
    if not group and plural in FIELDS:
        return FIELDS[plural]
    return _GROUP_FIELDS.get(plural, _META_FIELDS)
