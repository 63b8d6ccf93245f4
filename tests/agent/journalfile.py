"""Write small systemd journal files for tests (https://systemd.io/JOURNAL_FILE_FORMAT).

Enough of the format for readers that walk entries: header, empty data/field hash
tables, DATA objects (shared by entries that carry the same field, with their own
entry arrays), ENTRY objects and the global ENTRY_ARRAY. The real ``journalctl
--file`` reads what this writes (tests/agent/test_journal.py checks it), so the agent's
reader is tested against the format, not against this writer alone.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

HEADER_SIZE = 272
COMPACT = 1 << 4
_BUCKETS = 4


def _align(n: int) -> int:
    return (n + 7) & ~7


def write_journal(
    path: Path,
    entries: Sequence[tuple[int, dict[str, str]]],
    *,
    compact: bool = False,
    compress_payloads: Sequence[str] = (),
) -> Path:
    """``entries``: (realtime µs, fields). ``compress_payloads``: payloads ("FIELD=value")
    whose DATA object is flagged compressed (the agent must skip them)."""
    data_payload_at = 72 if compact else 64
    item_size = 4 if compact else 16
    array_item = 4 if compact else 8
    # Layout: header | data hash table | field hash table | DATA... | ENTRY... | arrays.
    offset = HEADER_SIZE
    data_ht = offset
    offset += _align(16 + 16 * _BUCKETS)
    field_ht = offset
    offset += _align(16 + 16 * _BUCKETS)
    payloads: dict[bytes, list[int]] = {}
    for n, (_, fields) in enumerate(entries):
        for key, value in fields.items():
            payloads.setdefault(f"{key}={value}".encode(), []).append(n)
    data_at: dict[bytes, int] = {}
    for payload in payloads:
        data_at[payload] = offset
        offset += _align(data_payload_at + len(payload))
    entry_at: list[int] = []
    for _, fields in entries:
        entry_at.append(offset)
        offset += _align(64 + item_size * len(fields))
    per_data_array: dict[bytes, int] = {}
    for payload, users in payloads.items():
        if len(users) > 1:
            per_data_array[payload] = offset
            offset += _align(24 + array_item * (len(users) - 1))
    global_array = offset
    offset += _align(24 + array_item * len(entries))
    tail = global_array
    out = bytearray(offset)

    def obj(at: int, kind: int, size: int, flags: int = 0) -> None:
        struct.pack_into("<BB6xQ", out, at, kind, flags, size)

    obj(data_ht, 4, 16 + 16 * _BUCKETS)
    obj(field_ht, 5, 16 + 16 * _BUCKETS)
    for payload, at in data_at.items():
        users = payloads[payload]
        flags = 4 if payload.decode() in compress_payloads else 0  # ZSTD flag
        obj(at, 1, data_payload_at + len(payload), flags)
        array = per_data_array.get(payload, 0)
        struct.pack_into(
            "<QQQQQQ", out, at + 16, zlib.crc32(payload), 0, 0, entry_at[users[0]], array,
            len(users),
        )  # fmt: skip
        out[at + data_payload_at : at + data_payload_at + len(payload)] = payload
        if array:
            obj(array, 6, 24 + array_item * (len(users) - 1))
            for k, user in enumerate(users[1:]):
                fmt = "<I" if compact else "<Q"
                struct.pack_into(fmt, out, array + 24 + array_item * k, entry_at[user])
    for n, (realtime, fields) in enumerate(entries):
        at = entry_at[n]
        obj(at, 3, 64 + item_size * len(fields))
        boot_id = bytes(range(16))
        struct.pack_into("<QQQ16sQ", out, at + 16, n + 1, realtime, 1_000_000 + n, boot_id, 0)
        for k, (key, value) in enumerate(fields.items()):
            target = data_at[f"{key}={value}".encode()]
            if compact:
                struct.pack_into("<I", out, at + 64 + 4 * k, target)
            else:
                struct.pack_into("<QQ", out, at + 64 + 16 * k, target, 0)
    obj(global_array, 6, 24 + array_item * len(entries))
    for k, at in enumerate(entry_at):
        struct.pack_into("<I" if compact else "<Q", out, global_array + 24 + array_item * k, at)
    header = struct.pack(
        "<8sIIB7x16s16s16s16sQQQQQQQQQQQQQQQ",
        b"LPKSHHRH",
        0,
        COMPACT if compact else 0,
        0,  # state: offline (closed cleanly)
        b"f" * 16,
        b"m" * 16,
        bytes(range(16)),
        b"s" * 16,
        HEADER_SIZE,
        offset - HEADER_SIZE,  # arena size
        data_ht + 16,
        16 * _BUCKETS,
        field_ht + 16,
        16 * _BUCKETS,
        tail,
        2 + len(data_at) + len(entries) + len(per_data_array) + 1,  # n_objects
        len(entries),
        len(entries),  # tail entry seqnum
        1,  # head entry seqnum
        global_array,
        entries[0][0] if entries else 0,
        entries[-1][0] if entries else 0,
        1_000_000 + len(entries),
    )
    out[: len(header)] = header
    n_arrays = 1 + len(per_data_array)
    struct.pack_into("<QQQQ", out, len(header), len(data_at), 0, 0, n_arrays)
    tail_entry = entry_at[-1] if entry_at else 0
    struct.pack_into("<IIQ", out, 256, global_array, len(entries), tail_entry)
    path.write_bytes(bytes(out))
    return path
