"""The persistent kernel log: the host's journald files (read-only mount), or a text
``kern.log`` as a simpler fallback. XIDs from before a reboot live only here: a GPU that
falls off the bus often ends in a reboot that empties the kernel ring buffer.

Journal files are not parsed object by object (a 128 MiB file has a million objects):
the file is searched for ``MESSAGE=`` payloads that mention what the agent looks for
(NVRM, SXid, AER, nvidia), each hit is checked to be an uncompressed DATA object, and
its entries (first entry, then the entry-array chain) give the realtime timestamps;
only entries whose ``_TRANSPORT`` is ``kernel`` count. Limits, by design: compressed
DATA objects (journald compresses payloads over 512 bytes by default; kernel lines are
shorter) are skipped, and at most MAX_JOURNAL_BYTES of the newest files are read.
Format: https://systemd.io/JOURNAL_FILE_FORMAT (little-endian, 8-byte aligned).
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import time
from collections.abc import Iterator
from datetime import UTC

from agent.backend import KmsgRecord
from agent.errors import KmsgUnavailable

SIGNATURE = b"LPKSHHRH"
MAX_JOURNAL_BYTES = 512 * 1024 * 1024  # newest files first, until this much is read
MAX_TEXT_BYTES = 64 * 1024 * 1024  # a kern.log is read from its tail
MAX_ENTRIES_PER_MESSAGE = 10_000  # one identical line logged more often is cut here
_INCOMPATIBLE_COMPACT = 1 << 4
_OBJECT_DATA, _OBJECT_ENTRY, _OBJECT_ENTRY_ARRAY = 1, 3, 6
_COMPRESSED = 0x7  # XZ | LZ4 | ZSTD object flags
# A MESSAGE= payload worth reading: up to the end of the payload (a NUL or newline comes
# within a few bytes after it: zero padding or the next object's header).
_INTERESTING = re.compile(rb"MESSAGE=[^\x00\n]{0,4096}?(?:NVRM|SXid|AER|nvidia)")
_KERNEL_TRANSPORT = b"_TRANSPORT=kernel"
# "Dec  3 07:01:02 host kernel: [12345.678901] NVRM: Xid ..." or an RFC 3339 stamp.
_SYSLOG_LINE = re.compile(
    r"^(?:(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
    r"|(?P<bsd>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d))"
    r" \S+ kernel: (?:\[\s*\d+\.\d+\] )?(?P<message>.*)$"
)


def read_journal(path: str, boot_time: float) -> tuple[str, list[KmsgRecord]]:
    """(what was read, records) from a journal directory, a journal file or a text
    kern.log. Record times are microseconds relative to ``boot_time`` (negative before
    this boot), so the Xid parsers' ``boot_time + usec / 1e6`` is the wall time. Raises
    KmsgUnavailable saying why nothing could be read."""
    try:
        if os.path.isdir(path):
            files = _journal_files(path)
            if not files:
                raise KmsgUnavailable(
                    f"--journal {path}: no *.journal files in it (mount the host's "
                    "/var/log/journal, which holds <machine-id>/*.journal)"
                )
            records: list[KmsgRecord] = []
            budget = MAX_JOURNAL_BYTES
            for name in files:
                size = os.path.getsize(name)
                if size > budget:
                    break
                budget -= size
                records.extend(_read_journal_file(name, boot_time))
            records.sort(key=lambda r: r.usec_since_boot)
            return f"journal {path} ({len(files)} file(s))", records
        with open(path, "rb") as f:
            head = f.read(len(SIGNATURE))
        if head == SIGNATURE:
            records = _read_journal_file(path, boot_time)
            records.sort(key=lambda r: r.usec_since_boot)
            return f"journal {path}", records
        return f"kern.log {path}", read_text_log(path, boot_time)
    except OSError as exc:
        raise KmsgUnavailable(
            f"cannot read the persistent kernel log {path}: {exc.strerror or exc}. Mount "
            "the host's /var/log/journal (or /var/log/kern.log) read-only and pass it with "
            "--journal / GPU_AGENT_JOURNAL."
        ) from exc


def _journal_files(root: str) -> list[str]:
    """*.journal (and *.journal~, journald's files from an unclean shutdown) under
    ``root`` and its machine-id subdirectories, newest first."""
    found: list[str] = []
    for where, dirs, names in os.walk(root):
        if where[len(root) :].count(os.sep) >= 2:
            dirs[:] = []
        found.extend(os.path.join(where, n) for n in names if n.endswith((".journal", ".journal~")))
    return sorted(found, key=lambda p: os.path.getmtime(p), reverse=True)


def _read_journal_file(path: str, boot_time: float) -> list[KmsgRecord]:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 256:
            return []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:8] != SIGNATURE:
                raise KmsgUnavailable(f"{path} is not a journal file (no LPKSHHRH signature)")
            return list(_kernel_messages(data, boot_time))


def _kernel_messages(data: mmap.mmap, boot_time: float) -> Iterator[KmsgRecord]:
    (incompatible,) = struct.unpack_from("<I", data, 12)
    compact = bool(incompatible & _INCOMPATIBLE_COMPACT)
    payload_at = 72 if compact else 64
    end = len(data)
    boot_us = int(boot_time * 1_000_000)
    seq = 0
    for hit in _INTERESTING.finditer(data):
        start = hit.start() - payload_at
        if start < 0 or start % 8:
            continue
        kind, flags, size = _object(data, start)
        if kind != _OBJECT_DATA or flags & _COMPRESSED or start + size > end:
            continue
        message = bytes(data[start + payload_at + 8 : start + size])  # after "MESSAGE="
        entry, array, n_entries = struct.unpack_from("<QQQ", data, start + 40)
        for offset in _entries(data, entry, array, n_entries, compact):
            stamp = _kernel_entry_time(data, offset, compact)
            if stamp is None:
                continue
            (monotonic,) = struct.unpack_from("<Q", data, offset + 32)
            seq += 1
            yield KmsgRecord(
                priority=3,
                sequence=seq,
                usec_since_boot=stamp - boot_us,
                message=message.decode("utf-8", "replace"),
                monotonic_usec=int(monotonic),
            )


def _object(data: mmap.mmap, offset: int) -> tuple[int, int, int]:
    if offset <= 0 or offset + 16 > len(data):
        return 0, 0, 0
    kind, flags, _, size = struct.unpack_from("<BB6sQ", data, offset)
    return kind, flags, size


def _entries(data: mmap.mmap, first: int, array: int, count: int, compact: bool) -> Iterator[int]:
    """Offsets of the entries a DATA object belongs to: its first entry, then the
    entry-array chain (the first entry is not repeated there)."""
    count = min(count, MAX_ENTRIES_PER_MESSAGE)
    if not first or not count:
        return
    yield first
    left = count - 1
    width, fmt = (4, "<I") if compact else (8, "<Q")
    while array and left > 0:
        kind, _, size = _object(data, array)
        if kind != _OBJECT_ENTRY_ARRAY or array + size > len(data):
            return
        (following,) = struct.unpack_from("<Q", data, array + 16)
        for pos in range(array + 24, array + size - width + 1, width):
            (offset,) = struct.unpack_from(fmt, data, pos)
            if not offset or left <= 0:
                return
            left -= 1
            yield offset
        array = following


def _kernel_entry_time(data: mmap.mmap, offset: int, compact: bool) -> int | None:
    """The realtime (µs since the epoch) of a kernel-transport entry, else None."""
    kind, _, size = _object(data, offset)
    if kind != _OBJECT_ENTRY or size < 64 or offset + size > len(data):
        return None
    (realtime,) = struct.unpack_from("<Q", data, offset + 24)
    width, fmt = (4, "<I") if compact else (16, "<Q")
    for pos in range(offset + 64, offset + size - width + 1, width):
        (item,) = struct.unpack_from(fmt, data, pos)
        item_kind, _, item_size = _object(data, item)
        if item_kind != _OBJECT_DATA:
            continue
        at = item + (72 if compact else 64)
        if item_size - (at - item) == len(_KERNEL_TRANSPORT) and (
            data[at : at + len(_KERNEL_TRANSPORT)] == _KERNEL_TRANSPORT
        ):
            return int(realtime)
    return None


def read_text_log(path: str, boot_time: float, now: float | None = None) -> list[KmsgRecord]:
    """Kernel lines of a syslog text file (rsyslog's kern.log or syslog). BSD-style
    stamps carry no year: the year that puts the line in the past is taken."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_TEXT_BYTES:
            f.seek(size - MAX_TEXT_BYTES)
            f.readline()  # drop the partial first line
        text = f.read(MAX_TEXT_BYTES).decode("utf-8", "replace")
    now = time.time() if now is None else now
    year = time.gmtime(now).tm_year
    records = []
    boot_us = int(boot_time * 1_000_000)
    for seq, line in enumerate(text.splitlines()):
        m = _SYSLOG_LINE.match(line)
        if m is None:
            continue
        stamp = _iso(m["iso"]) if m["iso"] else _bsd(m["bsd"], year, now)
        if stamp is None:
            continue
        records.append(
            KmsgRecord(
                priority=3,
                sequence=seq,
                usec_since_boot=int(stamp * 1_000_000) - boot_us,
                message=m["message"],
            )
        )
    return records


def _iso(text: str) -> float | None:
    from datetime import datetime

    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:  # rsyslog's local time without an offset: the agent runs UTC
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _bsd(text: str, year: int, now: float) -> float | None:
    import calendar

    try:
        parsed = time.strptime(f"{year} {text}", "%Y %b %d %H:%M:%S")
    except ValueError:
        return None
    stamp = float(calendar.timegm(parsed))
    if stamp > now + 86400:  # December's lines read in January
        parsed = time.strptime(f"{year - 1} {text}", "%Y %b %d %H:%M:%S")
        stamp = float(calendar.timegm(parsed))
    return stamp
