"""Just enough Kubernetes protobuf to read the review requests kubectl POSTs.

kubectl's typed clients send ``application/vnd.kubernetes.protobuf`` bodies (the
``k8s\\0`` magic, then a ``runtime.Unknown`` envelope holding the object's bytes).
Only SelfSubjectAccessReview and SelfSubjectRulesReview specs are decoded, into the
same dicts their JSON form gives; answers go back as JSON, which clients accept.
"""

from __future__ import annotations

from typing import Any

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """A body that is not the protobuf this module understands."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(data: bytes) -> dict[int, list[bytes | int]]:
    """Field number -> values (bytes for length-delimited, int for varints)."""
    out: dict[int, list[bytes | int]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: bytes | int
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ProtobufError("truncated field")
            value, pos = data[pos : pos + size], pos + size
        elif wire == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _msg(f: dict[int, list[bytes | int]], number: int) -> dict[int, list[bytes | int]] | None:
    values = f.get(number)
    if not values or not isinstance(values[-1], bytes):
        return None
    return fields(values[-1])


def _str(f: dict[int, list[bytes | int]], number: int) -> str:
    values = f.get(number)
    if not values or not isinstance(values[-1], bytes):
        return ""
    return values[-1].decode("utf-8", "replace")


def unwrap(body: bytes) -> tuple[str, str, bytes]:
    """(apiVersion, kind, object bytes) from a ``k8s\\0`` + runtime.Unknown body."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic prefix")
    unknown = fields(body[len(MAGIC) :])
    type_meta = _msg(unknown, 1) or {}
    raw = unknown.get(2, [b""])[-1]
    if not isinstance(raw, bytes):
        raise ProtobufError("runtime.Unknown.raw is not bytes")
    return _str(type_meta, 1), _str(type_meta, 2), raw


def review_spec(kind: str, raw: bytes) -> dict[str, Any]:
    """The ``spec`` of a SelfSubjectAccessReview / SelfSubjectRulesReview, JSON-shaped."""
    obj = fields(raw)
    spec = _msg(obj, 2) or {}
    if kind == "SelfSubjectRulesReview":
        return {"namespace": _str(spec, 1)}
    out: dict[str, Any] = {}
    ra = _msg(spec, 1)
    if ra is not None:
        names = ("namespace", "verb", "group", "version", "resource", "subresource", "name")
        out["resourceAttributes"] = {
            key: _str(ra, i) for i, key in enumerate(names, start=1) if _str(ra, i)
        }
    nra = _msg(spec, 2)
    if nra is not None:
        out["nonResourceAttributes"] = {"path": _str(nra, 1), "verb": _str(nra, 2)}
    return out
