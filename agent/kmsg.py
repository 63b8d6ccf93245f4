"""Reading the kernel log without blocking: ``/dev/kmsg`` (one record per read, until
``EAGAIN``), the ``syslog(2)`` system call (what ``dmesg`` falls back to; it needs no
device node, so it works in a container without a ``/dev/kmsg`` mount), or a saved log
(kmsg-format or dmesg-format lines) from a file, FIFO or pipe.

Nothing here can hang: the log is opened with ``O_NONBLOCK``, reading stops at
``EAGAIN`` or end of file, ``syslog(2)`` is a single bounded copy, and a byte cap
bounds endless sources.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time

from agent.backend import KmsgRecord
from agent.errors import KmsgUnavailable

DEFAULT_KMSG = "/dev/kmsg"
AUTO = "auto"  # /dev/kmsg, then syslog(2)
SYSLOG = "syslog"  # --kmsg value: syslog(2) only
SYSLOG_SOURCE = "syslog(2)"  # how a syslog(2) read is named in tool output
# syslog(2) actions (linux/syslog.h)
SYSLOG_ACTION_READ_ALL = 3
SYSLOG_ACTION_SIZE_BUFFER = 10
# Bound on what one read_kmsg call takes in. The kernel ring buffer is at most a few
# MiB (log_buf_len); a saved log file larger than this is read from its tail.
MAX_KMSG_BYTES = 16 * 1024 * 1024
# One /dev/kmsg read() returns one record; records are < 8 KiB (text + dictionary).
_RECORD_BUF = 16 * 1024
_FILE_CHUNK = 1024 * 1024


def kmsg_error(path: str, err: OSError) -> KmsgUnavailable:
    """Turn an OSError from opening/reading the kernel log into a message that says why
    and what to do."""
    code = err.errno
    if code in (errno.EPERM, errno.EACCES):
        return KmsgUnavailable(
            f"cannot read the kernel log {path}: permission denied. Reading /dev/kmsg needs "
            "CAP_SYSLOG when kernel.dmesg_restrict=1, and an unprivileged container's device "
            "cgroup usually refuses a hostPath /dev/kmsg anyway: use --kmsg auto (syslog(2), "
            "which needs only CAP_SYSLOG; the chart adds it when xid.enabled=true), or pass "
            "--kmsg FILE with a saved log. XIDs cannot be checked until then."
        )
    if code == errno.ENOENT:
        return KmsgUnavailable(
            f"cannot read the kernel log: {path} does not exist. A path given with --kmsg "
            "(or GPU_AGENT_KMSG) must exist in the agent's container (a hostPath mount); "
            "--kmsg auto reads the log with syslog(2) and needs no mount. XIDs cannot be "
            "checked until then."
        )
    reason = err.strerror or str(err)
    return KmsgUnavailable(f"cannot read the kernel log {path}: {reason}.")


_CAP_SYSLOG_ADVICE = (
    "Grant the agent container CAP_SYSLOG (needed when kernel.dmesg_restrict=1; the chart "
    "adds it when xid.enabled=true: check the DaemonSet's securityContext), or pass --kmsg "
    "FILE with a saved log. XIDs cannot be checked until then."
)


def _reason(err: OSError) -> str:
    if err.errno in (errno.EPERM, errno.EACCES):
        return "permission denied"
    if err.errno == errno.ENOENT:
        return "not present"
    if err.errno == errno.ENOSYS:
        return f"not available ({err.strerror}; a seccomp profile may block it)"
    return err.strerror or str(err)


def boot_time(proc_root: str = "/proc") -> float:
    """Boot time (epoch seconds) from ``<proc_root>/stat`` ``btime``; if that cannot be
    read, estimated from the monotonic clock (which is what kmsg timestamps count)."""
    try:
        with open(os.path.join(proc_root, "stat"), encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(int(line.split()[1]))
    except (OSError, ValueError, IndexError):
        pass
    return time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)


def read_kmsg(
    path: str = DEFAULT_KMSG, *, proc_root: str = "/proc", max_bytes: int = MAX_KMSG_BYTES
) -> tuple[float, list[KmsgRecord]]:
    """Read every record the kernel log holds now, without blocking.

    ``path`` is ``/dev/kmsg`` (one record per read, until ``EAGAIN``) or any file, FIFO
    or pipe of kmsg-format lines (``PRI,SEQ,USEC,FLAGS;message`` plus continuation
    lines starting with a space) or of ``dmesg`` lines (``[  123.456789] message``).
    Returns ``(boot_time_epoch, records)``; raises KmsgUnavailable saying why the log
    cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise kmsg_error(path, e) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise KmsgUnavailable(f"cannot read the kernel log: {path} is a directory.")
        if stat.S_ISCHR(mode):
            records = _read_device(fd, max_bytes)
        else:
            records = parse_kmsg_text(_read_stream(fd, mode, max_bytes))
    except OSError as e:
        raise kmsg_error(path, e) from None
    finally:
        os.close(fd)
    return boot_time(proc_root), records


def syslog_error(err: OSError) -> KmsgUnavailable:
    """Why ``syslog(2)`` could not read the kernel log, and what to do."""
    if err.errno in (errno.EPERM, errno.EACCES):
        return KmsgUnavailable(
            "cannot read the kernel log with syslog(2): permission denied. " + _CAP_SYSLOG_ADVICE
        )
    return KmsgUnavailable(f"cannot read the kernel log with syslog(2): {_reason(err)}.")


def read_syslog(
    *, proc_root: str = "/proc", max_bytes: int = MAX_KMSG_BYTES
) -> tuple[float, list[KmsgRecord]]:
    """Read the kernel ring buffer with ``syslog(2)`` (``klogctl`` ``READ_ALL``: a copy,
    nothing is consumed). Needs CAP_SYSLOG when ``kernel.dmesg_restrict=1``; Docker's and
    containerd's default seccomp profiles allow the call to a container holding it.
    Returns ``(boot_time_epoch, records)``; raises KmsgUnavailable saying why not."""
    try:
        text = _klogctl_read(max_bytes)
    except OSError as e:
        raise syslog_error(e) from None
    return boot_time(proc_root), parse_syslog_text(text)


def _klogctl_read(max_bytes: int) -> str:
    """The ring buffer's text; OSError (with the errno) when the kernel refuses."""
    import ctypes  # only here: most agent runs never read the kernel log this way

    try:
        klogctl = ctypes.CDLL(None, use_errno=True).klogctl
    except (OSError, AttributeError):
        raise OSError(errno.ENOSYS, "the C library has no klogctl") from None
    klogctl.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
    klogctl.restype = ctypes.c_int
    size = klogctl(SYSLOG_ACTION_SIZE_BUFFER, None, 0)
    if size < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    # The text (with its "<pri>[time] " prefixes) can be longer than the ring buffer
    # holds; when it does not fit, the kernel returns the newest records that do.
    length = min(max(2 * size, 64 * 1024), max_bytes, 0x7FFFFFFF)
    buffer = ctypes.create_string_buffer(length)
    got = klogctl(SYSLOG_ACTION_READ_ALL, buffer, length)
    if got < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return buffer.raw[:got].decode("utf-8", "replace")


def parse_syslog_text(text: str) -> list[KmsgRecord]:
    """Records from ``syslog(2)`` text: ``<pri>[secs.usecs] message`` lines (a
    multi-line message repeats the prefix on each line). Raises KmsgUnavailable when the
    kernel prints no timestamps (``printk.time=0``): XIDs could not be placed in time."""
    records = parse_kmsg_text(text)
    if not records and _UNTIMED_LINE.search(text):
        raise KmsgUnavailable(
            "cannot place kernel-log lines in time: syslog(2) returns them without "
            "timestamps (printk.time=0 on this node). Enable them with `echo Y > "
            "/sys/module/printk/parameters/time` (or boot with printk.time=1), or pass "
            "--kmsg /dev/kmsg."
        )
    return records


def read_kernel_log(
    spec: str = AUTO,
    *,
    proc_root: str = "/proc",
    max_bytes: int = MAX_KMSG_BYTES,
    device: str = DEFAULT_KMSG,
) -> tuple[str, float, list[KmsgRecord]]:
    """``(source, boot_time_epoch, records)`` for a ``--kmsg`` value: ``auto`` tries
    ``device`` (``/dev/kmsg``) and then ``syslog(2)``; ``syslog`` uses only ``syslog(2)``; anything
    else is a path for ``read_kmsg``. ``source`` names what was read ("/dev/kmsg",
    "syslog(2)" or the path). Raises KmsgUnavailable saying why nothing could be read
    (for ``auto``, why each way failed)."""
    if spec == SYSLOG:
        return (SYSLOG_SOURCE, *read_syslog(proc_root=proc_root, max_bytes=max_bytes))
    if spec != AUTO:
        return (spec, *read_kmsg(spec, proc_root=proc_root, max_bytes=max_bytes))
    try:
        # An unprivileged container's device cgroup usually refuses /dev/kmsg (char
        # 1:11) even when it is mounted: probe it, then fall back to syslog(2).
        fd = os.open(device, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        kmsg_failure = e
    else:
        os.close(fd)
        return (device, *read_kmsg(device, proc_root=proc_root, max_bytes=max_bytes))
    try:
        text = _klogctl_read(max_bytes)
    except OSError as e:
        syslog_failure = e
    else:
        return SYSLOG_SOURCE, boot_time(proc_root), parse_syslog_text(text)
    denied = any(e.errno in (errno.EPERM, errno.EACCES) for e in (kmsg_failure, syslog_failure))
    message = (
        f"cannot read the kernel log: {device}: {_reason(kmsg_failure)}; "
        f"syslog(2): {_reason(syslog_failure)}."
    )
    raise KmsgUnavailable(message + (" " + _CAP_SYSLOG_ADVICE if denied else ""))


def _read_device(fd: int, max_bytes: int) -> list[KmsgRecord]:
    records: list[KmsgRecord] = []
    total = 0
    # Every pass either consumes bytes or is an EPIPE that moved the reader forward;
    # the pass cap is a last guard against a device that does neither.
    for _ in range(max(1, max_bytes // 16)):
        try:
            chunk = os.read(fd, _RECORD_BUF)
        except BlockingIOError:  # EAGAIN: no more records right now
            break
        except OSError as e:
            if e.errno == errno.EPIPE:
                # Records were overwritten while we read; the next read resumes at
                # the oldest record still in the buffer.
                continue
            if e.errno == errno.EINVAL:  # record larger than our buffer: give up there
                break
            raise
        if not chunk:
            break
        total += len(chunk)
        records.extend(parse_kmsg_text(chunk.decode("utf-8", "replace")))
        if total >= max_bytes:
            break
    return records


def _read_stream(fd: int, mode: int, max_bytes: int) -> str:
    skip_partial = False
    if stat.S_ISREG(mode):
        size = os.fstat(fd).st_size
        if size > max_bytes:
            os.lseek(fd, size - max_bytes, os.SEEK_SET)
            skip_partial = True
    chunks: list[bytes] = []
    total = 0
    while total < max_bytes:
        try:
            chunk = os.read(fd, min(_FILE_CHUNK, max_bytes - total))
        except BlockingIOError:  # a FIFO/pipe with a writer but no data: stop here
            break
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    text = b"".join(chunks).decode("utf-8", "replace")
    if skip_partial:
        text = text.partition("\n")[2]
    return text


# Digit counts are bounded so a corrupt line cannot make an absurd timestamp.
_KMSG_HEADER = re.compile(r"(\d{1,10}),(\d{1,20}),(\d{1,20})(?:,[^;]*)?;(.*)")
# dmesg / syslog(2) lines; a "[  T123]" / "[ C1]" caller id (CONFIG_PRINTK_CALLER) is dropped.
_DMESG_LINE = re.compile(
    r"(?:<(\d{1,10})>)?\[\s*(\d{1,14})\.(\d{1,9})\](?:\[\s*[TC]\d{1,10}\])?\s?(.*)"
)
_UNTIMED_LINE = re.compile(r"^<\d{1,10}>(?!\[)", re.MULTILINE)
_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def _unescape(message: str) -> str:
    # /dev/kmsg writes control bytes, bytes >= 0x7f and the backslash as \xNN; undo
    # that on the bytes so multi-byte UTF-8 comes back whole.
    if "\\x" not in message:
        return message
    raw = _ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), message.encode("utf-8", "replace"))
    return raw.decode("utf-8", "replace")


def parse_kmsg_text(text: str) -> list[KmsgRecord]:
    """Records from kmsg-format or dmesg-format lines. Continuation (dictionary) lines,
    blank lines and lines in neither format are skipped."""
    records: list[KmsgRecord] = []
    dmesg_seq = 0
    for line in text.split("\n"):
        if not line or line[0] in " \t":  # dictionary line: " SUBSYSTEM=pci", " DEVICE=+..."
            continue
        line = line.rstrip("\r")
        m = _KMSG_HEADER.match(line)
        if m is not None:
            records.append(
                KmsgRecord(
                    priority=int(m[1]),
                    sequence=int(m[2]),
                    usec_since_boot=int(m[3]),
                    message=_unescape(m[4]),
                )
            )
            continue
        d = _DMESG_LINE.match(line)
        if d is not None:
            frac = d[3][:6].ljust(6, "0")
            records.append(
                KmsgRecord(
                    priority=int(d[1]) if d[1] else 6,
                    sequence=dmesg_seq,
                    usec_since_boot=int(d[2]) * 1_000_000 + int(frac),
                    message=d[4],
                )
            )
            dmesg_seq += 1
    return records
