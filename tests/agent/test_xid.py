"""Kernel-log reading and Xid parsing/analysis (agent.kmsg, agent.xid)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import kmsg, xid
from agent.backend import KmsgRecord
from agent.errors import KmsgUnavailable

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "kmsg-xid.txt"
BTIME = 1_795_800_000
# Inventory as NVML reports it; 0000:3b:00 is missing on purpose (it fell off the bus).
GPUS: list[tuple[int, str | None, str | None]] = [
    (0, "GPU-00000000-0000-0000-0000-000000000018", "00000000:18:00.0"),
    (1, "GPU-00000000-0000-0000-0000-000000000086", "00000000:86:00.0"),
    (2, None, "00000000:AF:00.0"),
    (3, "GPU-no-pci", None),
]


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    """A fake /proc whose stat says the machine booted at BTIME."""
    root = tmp_path / "proc"
    root.mkdir()
    (root / "stat").write_text(
        "cpu  10 0 10 100 0 0 0 0 0 0\nintr 1 2 3\nctxt 42\n"
        f"btime {BTIME}\nprocesses 100\nprocs_running 1\n"
    )
    return root


@pytest.fixture
def fixture_events(proc_root: Path) -> list[xid.XidEvent]:
    boot, records = xid.read_kmsg(str(FIXTURE), proc_root=str(proc_root))
    return xid.parse_xids(records, boot, GPUS)


def run_bounded(fn: Callable[[], Any], seconds: float = 5.0) -> tuple[Any, float]:
    """Run fn in a thread; fail (instead of hanging the suite) if it does not return."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the test thread
            box["error"] = e

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"call did not return within {seconds}s"
    if "error" in box:
        raise box["error"]
    return box.get("value"), time.monotonic() - started


# --- catalog -----------------------------------------------------------------------


def test_catalog_has_every_row_of_the_shipped_tsv(repo_root: Path) -> None:
    tsv = (repo_root / "agent" / "data" / "xid-catalog.tsv").read_text().splitlines()
    codes = {int(line.split("\t")[0]) for line in tsv[1:] if line.strip()}
    cat = xid.catalog()
    assert set(cat) == codes
    assert xid.catalog() is cat  # parsed once


def test_every_catalog_bucket_has_a_deliberate_severity() -> None:
    # A bucket missing from the table would silently fall back to "warning"; a new
    # catalog must extend the table on purpose.
    buckets = {i.immediate_action for i in xid.catalog().values() if i.immediate_action}
    assert buckets <= set(xid._BUCKET_SEVERITY)
    assert {i.severity for i in xid.catalog().values()} <= set(xid.SEVERITY_ORDER)


@pytest.mark.parametrize(
    ("code", "bucket", "severity"),
    [
        (79, "RESTART_BM", "critical"),
        (48, "WORKFLOW_XID_48", "critical"),
        (64, "RESET_GPU", "critical"),
        (74, "WORKFLOW_NVLINK_ERR", "critical"),
        (142, "CONTACT_SUPPORT", "critical"),
        (154, "XID_154", "critical"),
        (13, "RESTART_APP", "warning"),
        (54, "CHECK_MECHANICALS", "warning"),
        (45, "WORKFLOW_XID_45", "warning"),
        (63, "IGNORE", "info"),
        (92, "IGNORE", "info"),
        (171, None, "critical"),  # no bucket, uncorrectable DRAM error
        (163, None, "warning"),  # no bucket, power-smoothing state change
    ],
)
def test_catalog_severity_follows_the_immediate_action(
    code: int, bucket: str | None, severity: str
) -> None:
    info = xid.catalog()[code]
    assert info.immediate_action == bucket
    assert info.severity == severity
    assert info.known
    assert xid.recommended_action(info)


def test_catalog_entry_carries_meaning_and_actions() -> None:
    info = xid.catalog()[79]
    assert info.mnemonic == "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS"
    assert "bus" in info.description.lower()
    assert info.investigatory_action == "CONTACT_SUPPORT"
    assert "power-cycle" in xid.recommended_action(info)


def test_unmapped_gpu_keeps_the_index_placeholder() -> None:
    event = make_event(64, NOW - 1, gpu_index=None, gpu_uuid=None)
    (group,) = xid.analyze([event], 60, now=NOW)["xids"]
    assert group["recommended_action"] == xid.recommended_action(xid.catalog()[64])
    mapped = xid.analyze([make_event(64, NOW - 1, gpu=3)], 60, now=NOW)["xids"][0]
    assert "nvidia-smi -r -i 3" in mapped["recommended_action"]


def test_unknown_code_gets_a_generic_entry() -> None:
    info = xid.info_for(9999)
    assert not info.known
    assert info.mnemonic == "UNKNOWN"
    assert info.severity == "warning"
    assert "not in the agent's catalog" in xid.recommended_action(info)


def test_parse_catalog_skips_broken_rows() -> None:
    text = (
        "xid\tmnemonic\tdescription\timmediate\tinvestigatory\n"
        "x\tBAD\n"
        "7\tONLY_TWO\n"
        "8\tOK\td\tIGNORE\t\n"
    )
    cat = xid.parse_catalog(text)
    assert list(cat) == [8]
    assert cat[8].investigatory_action is None
    assert cat[8].severity == "info"


# --- kmsg format ---------------------------------------------------------------------


def test_kmsg_text_skips_continuation_and_foreign_lines() -> None:
    records = xid.parse_kmsg_text(FIXTURE.read_text())
    messages = [r.message for r in records]
    assert not any(m.startswith(("SUBSYSTEM", "DEVICE")) for m in messages)
    assert "this line is not in kmsg format at all" not in messages
    # 26 physical lines: 4 dictionary lines and 1 foreign line are not records.
    assert len(records) == len(FIXTURE.read_text().splitlines()) - 5
    first = records[0]
    assert (first.priority, first.sequence, first.usec_since_boot) == (6, 1201, 3512345678)
    assert [r.sequence for r in records] == sorted(r.sequence for r in records)


def test_kmsg_escapes_are_undone() -> None:
    line = "4,9,100,-;NVRM: caf\\xc3\\xa9 \\x5c path\\x0aNVRM: second line\n"
    (record,) = xid.parse_kmsg_text(line)
    assert record.message == "NVRM: café \\ path\nNVRM: second line"


def test_dmesg_format_lines_are_read() -> None:
    text = (
        "[    0.000000] Linux version 6.8.0\n"
        "<4>[ 7200.000100] NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, "
        "GPU has fallen off the bus.\n"
    )
    records = xid.parse_kmsg_text(text)
    assert [r.usec_since_boot for r in records] == [0, 7_200_000_100]
    assert records[1].priority == 4
    events = xid.parse_xids(records, 1000.0, [])
    assert [(e.xid, e.timestamp) for e in events] == [(79, pytest.approx(8200.0001))]


def test_read_kmsg_file_uses_btime_for_wall_clock(proc_root: Path) -> None:
    boot, records = xid.read_kmsg(str(FIXTURE), proc_root=str(proc_root))
    assert boot == BTIME
    xid79 = next(r for r in records if "): 79," in r.message)
    events = xid.parse_xids([xid79], boot, [])
    assert events[0].timestamp == pytest.approx(BTIME + 7200.0001)


def test_boot_time_falls_back_to_the_monotonic_clock(tmp_path: Path) -> None:
    expected = time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)
    assert xid.boot_time(str(tmp_path)) == pytest.approx(expected, abs=1.0)
    (tmp_path / "stat").write_text("btime notanumber\n")
    assert xid.boot_time(str(tmp_path)) == pytest.approx(expected, abs=1.0)


def test_read_kmsg_reads_the_tail_of_a_large_file(tmp_path: Path, proc_root: Path) -> None:
    log = tmp_path / "big.log"
    lines = [f"6,{i},{i * 1000},-;filler message number {i:06d}" for i in range(5000)]
    log.write_text("\n".join(lines) + "\n")
    _, records = xid.read_kmsg(str(log), proc_root=str(proc_root), max_bytes=4096)
    assert records, "the tail must still be read"
    assert records[-1].sequence == 4999
    assert sum(len(line) + 1 for line in lines[-len(records) :]) <= 4096
    # the partial first line was dropped, not parsed as a bogus record
    assert all(r.message.startswith("filler message number") for r in records)


# --- never blocking ----------------------------------------------------------------------


def test_fifo_with_a_silent_writer_returns_at_eagain(tmp_path: Path, proc_root: Path) -> None:
    fifo = tmp_path / "kmsg.fifo"
    os.mkfifo(fifo)
    # O_RDWR keeps a writer attached, so the reader sees EAGAIN (not EOF) once drained:
    # a blocking reader would wait forever here.
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(
            writer,
            b"4,1,5000000,-;NVRM: Xid (PCI:0000:18:00): 13, pid=1, name=a, x\n"
            b" SUBSYSTEM=pci\n"
            b"6,2,6000000,-;other\n",
        )
        (boot, records), elapsed = run_bounded(
            lambda: xid.read_kmsg(str(fifo), proc_root=str(proc_root))
        )
        assert elapsed < 2.0
        assert boot == BTIME
        assert [r.sequence for r in records] == [1, 2]
        # drained and still open: the second read finds nothing and returns at once
        (_, again), _ = run_bounded(lambda: xid.read_kmsg(str(fifo), proc_root=str(proc_root)))
        assert again == []
    finally:
        os.close(writer)


def test_fifo_without_writer_returns_empty(tmp_path: Path, proc_root: Path) -> None:
    fifo = tmp_path / "empty.fifo"
    os.mkfifo(fifo)
    (_, records), elapsed = run_bounded(lambda: xid.read_kmsg(str(fifo), proc_root=str(proc_root)))
    assert records == []
    assert elapsed < 2.0


def test_endless_character_device_is_bounded(proc_root: Path) -> None:
    # /dev/zero never reaches EAGAIN or EOF: only the byte cap stops the read.
    (_, records), elapsed = run_bounded(
        lambda: xid.read_kmsg("/dev/zero", proc_root=str(proc_root), max_bytes=256 * 1024)
    )
    assert records == []
    assert elapsed < 2.0


def test_real_dev_kmsg_is_read_without_blocking() -> None:
    if not os.access("/dev/kmsg", os.R_OK):
        pytest.skip("/dev/kmsg is not readable on this machine")
    (boot, records), elapsed = run_bounded(lambda: xid.read_kmsg("/dev/kmsg"))
    assert elapsed < 2.0
    assert records, "the kernel log of a running machine is never empty"
    seqs = [r.sequence for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(r.usec_since_boot >= 0 for r in records)
    assert boot == xid.boot_time()
    assert boot < time.time()


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EPERM, errno.EACCES])
def test_permission_error_names_cap_syslog(code: int) -> None:
    err = xid.kmsg_error("/dev/kmsg", PermissionError(code, os.strerror(code)))
    assert isinstance(err, KmsgUnavailable)
    text = str(err)
    assert "CAP_SYSLOG" in text
    assert "kernel.dmesg_restrict=1" in text
    assert "xid.enabled=true" in text
    assert "/dev/kmsg" in text


def test_missing_log_names_the_path_and_the_mount(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "kmsg"
    with pytest.raises(KmsgUnavailable) as info:
        xid.read_kmsg(str(missing))
    assert str(missing) in str(info.value)
    assert "hostPath" in str(info.value)


def test_other_errors_keep_the_reason() -> None:
    err = xid.kmsg_error("/dev/kmsg", OSError(errno.EIO, os.strerror(errno.EIO)))
    assert os.strerror(errno.EIO) in str(err)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KmsgUnavailable, match="directory"):
        xid.read_kmsg(str(tmp_path))


def test_real_eperm_without_cap_syslog(repo_root: Path) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to drop CAP_SYSLOG")
    if Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() != "1":
        pytest.skip("kernel.dmesg_restrict=0: reading /dev/kmsg needs no capability here")
    code = (
        "from agent import xid\n"
        "from agent.errors import KmsgUnavailable\n"
        "try:\n"
        "    xid.read_kmsg('/dev/kmsg')\n"
        "except KmsgUnavailable as e:\n"
        "    print(e)\n"
    )
    # Dropping CAP_SYSLOG from the bounding set before exec leaves root without it.
    result = subprocess.run(
        [setpriv, "--bounding-set", "-syslog", "--inh-caps", "-syslog", sys.executable, "-c", code],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "CAP_SYSLOG" in result.stdout
    assert "permission denied" in result.stdout


# --- parsing Xid lines ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0000:3b:00", "00000000:3B:00.0"),
        ("0000:3B:00.0", "00000000:3B:00.0"),
        ("00000000:3b:00.0", "00000000:3B:00.0"),
        ("0018:01:00", "00000018:01:00.0"),
        ("3b:00.1", "00000000:3B:00.1"),
        ("0000:3b:20", None),  # device is 5 bits
        ("3b", None),
        ("GPU-123", None),
        ("", None),
    ],
)
def test_normalize_pci_bus_id(value: str, expected: str | None) -> None:
    assert xid.normalize_pci_bus_id(value) == expected


def test_fixture_events_are_the_well_formed_xid_lines(
    fixture_events: list[xid.XidEvent],
) -> None:
    assert [(e.xid, e.pci_bus_id) for e in fixture_events] == [
        (79, "00000000:3B:00.0"),
        (154, "00000000:3B:00.0"),
        (13, "00000000:18:00.0"),
        (13, "00000000:18:00.0"),
        (43, "00000000:18:00.0"),
        (31, "00000000:86:00.0"),
        (48, "00000000:AF:00.0"),
        (63, "00000000:AF:00.0"),
        (46, "00000000:3F:00.0"),
        (999, "00000001:AB:00.0"),
    ]
    assert all(e.message.startswith("NVRM: Xid (") for e in fixture_events)


def test_pid_and_process_forms(fixture_events: list[xid.XidEvent]) -> None:
    by_seq = {(e.xid, round(e.timestamp - BTIME, 4)): e for e in fixture_events}
    unknown = by_seq[(79, 7200.0001)]
    assert (unknown.pid, unknown.process) == (None, None)
    app = by_seq[(13, 7300.0)]
    assert (app.pid, app.process) == (12345, "python3")
    old = by_seq[(31, 7400.0)]  # old driver form: no "PCI:", no pid/name
    assert (old.pid, old.process) == (None, None)
    minimal = by_seq[(46, 7700.0)]
    assert minimal.message == "NVRM: Xid (PCI:0000:3f:00): 46"


def test_pci_ids_map_to_inventory_gpus(fixture_events: list[xid.XidEvent]) -> None:
    gpu_of = {e.pci_bus_id: (e.gpu_index, e.gpu_uuid) for e in fixture_events}
    assert gpu_of["00000000:18:00.0"] == (0, "GPU-00000000-0000-0000-0000-000000000018")
    assert gpu_of["00000000:86:00.0"] == (1, "GPU-00000000-0000-0000-0000-000000000086")
    assert gpu_of["00000000:AF:00.0"] == (2, None)
    # not in the inventory: the driver's "GPU at PCI:..." line still names its uuid
    assert gpu_of["00000000:3B:00.0"] == (None, "GPU-5c2b5b0a-8a7e-4c47-b0a5-0f0e39c3f8a1")
    assert gpu_of["00000000:3F:00.0"] == (None, None)


def test_timestamps_are_boot_time_plus_offset(fixture_events: list[xid.XidEvent]) -> None:
    records = {r.message: r for r in xid.parse_kmsg_text(FIXTURE.read_text())}
    for event in fixture_events:
        record = next(r for m, r in records.items() if event.message in m)
        assert event.timestamp == pytest.approx(BTIME + record.usec_since_boot / 1e6)
    assert [e.timestamp for e in fixture_events] == sorted(e.timestamp for e in fixture_events)


@pytest.mark.parametrize(
    ("detail", "action", "severity"),
    [
        ("GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)", 1, "critical"),
        (
            "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)",
            2,
            "critical",
        ),
        ("GPU recovery action changed from 0x0 (None) to 0x2 (OS Reboot)", 2, "critical"),
        ("GPU recovery action changed from 0x0 (None) to 0x3 (Drain P2P)", 3, "warning"),
        ("GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)", 0, "info"),
        ("Node Reboot Required", 2, "critical"),
    ],
)
def test_xid_154_recovery_action(detail: str, action: int, severity: str) -> None:
    record = KmsgRecord(3, 1, 1_000_000, f"NVRM: Xid (PCI:0008:01:00): 154, {detail}")
    (event,) = xid.parse_xids([record], 0.0, [])
    assert event.recovery_action == action
    assert xid.event_severity(event) == severity


def test_recovery_action_only_for_xid_154(fixture_events: list[xid.XidEvent]) -> None:
    assert {e.xid for e in fixture_events if e.recovery_action is not None} == {154}


@pytest.mark.parametrize(
    "line",
    [
        "NVRM: Xid (PCI:0000:66:00): abc, pid=2280636",
        "NVRM: Xid : 32, pid=2280636",
        "NVRM: Xid (PCI:0000:66:00) 32",
        "NVRM: Xid (PCI:zzzz:66:00): 32, x",
        "NVRM: Xid (PCI:0000:66:00): 1234567, x",
        "NVRM: GPU at PCI:0000:66:00: GPU-12345678-1234-5678-9abc-def012345678",
        "nvidia 0000:3b:00.0: Xid 79",
        "",
    ],
)
def test_malformed_or_foreign_lines_are_skipped(line: str) -> None:
    assert xid.parse_xid_line(line) is None
    assert xid.parse_xids([KmsgRecord(4, 1, 1, line)], 0.0, GPUS) == []


def test_xid_inside_a_multiline_record() -> None:
    record = xid.parse_kmsg_text(
        "4,5,2000000,-;NVRM: GPU0 prologue\\x0aNVRM: Xid (PCI:0000:18:00): 94, pid=3, "
        "name=x, Contained: SM (0x1)\n"
    )
    (event,) = xid.parse_xids(record, 10.0, GPUS)
    assert (event.xid, event.gpu_index, event.timestamp) == (94, 0, pytest.approx(12.0))


# --- analysis -------------------------------------------------------------------------------


def make_event(code: int, ts: float, gpu: int = 0, **kw: Any) -> xid.XidEvent:
    fields: dict[str, Any] = {
        "xid": code,
        "pci_bus_id": f"00000000:{0x18 + gpu:02X}:00.0",
        "timestamp": ts,
        "pid": None,
        "process": None,
        "message": f"NVRM: Xid (PCI:0000:{0x18 + gpu:02x}:00): {code}, ...",
        "gpu_index": gpu,
        "gpu_uuid": f"GPU-{gpu}",
    }
    fields.update(kw)
    return xid.XidEvent(**fields)


NOW = 1_800_000_000.0


def test_window_edges_are_inclusive_at_the_start() -> None:
    cutoff = NOW - 60 * 60
    events = [
        make_event(13, cutoff - 0.000001),
        make_event(13, cutoff),
        make_event(13, NOW),
        make_event(13, NOW + 5),  # clock skew after the boot-time rounding: still shown
    ]
    result = xid.analyze(events, since_minutes=60, now=NOW)
    assert result["summary"]["events"] == 3
    (group,) = result["xids"]
    assert group["count"] == 3
    assert group["first_seen"] == xid.iso_utc(cutoff)
    assert group["last_seen"] == xid.iso_utc(NOW + 5)
    assert result["window"] == {
        "since_minutes": 60,
        "start": xid.iso_utc(cutoff),
        "end": xid.iso_utc(NOW),
    }


def test_empty_window_is_a_clean_report() -> None:
    result = xid.analyze([make_event(79, NOW - 7200)], since_minutes=60, now=NOW)
    assert result["xids"] == []
    assert result["summary"] == {
        "events": 0,
        "groups": 0,
        "critical": 0,
        "warning": 0,
        "info": 0,
        "gpus_affected": 0,
        "worst_severity": None,
    }


def test_iso_utc_is_z_suffixed_and_clamped() -> None:
    assert xid.iso_utc(0) == "1970-01-01T00:00:00Z"
    assert xid.iso_utc(1_795_800_000.9) == "2026-11-27T17:20:00Z"  # checked with datetime
    assert xid.iso_utc(1e30) == "9999-12-31T23:59:59Z"
    assert xid.iso_utc(-5) == "1970-01-01T00:00:00Z"


def test_grouping_and_order_worst_first_then_most_recent() -> None:
    events = [
        make_event(13, NOW - 300, gpu=1, pid=10, process="python"),
        make_event(13, NOW - 200, gpu=1, pid=11, process="python"),
        make_event(13, NOW - 100, gpu=1, pid=10, process="python"),
        make_event(13, NOW - 50, gpu=2, pid=12, process="torchrun"),
        make_event(79, NOW - 1000, gpu=3),
        make_event(48, NOW - 20, gpu=4),
        make_event(63, NOW - 10, gpu=4),
    ]
    result = xid.analyze(events, since_minutes=60, now=NOW)
    order = [(g["xid"], g["gpu_index"]) for g in result["xids"]]
    # critical (48 newer than 79), then warning (gpu 2 newer than gpu 1), then info
    assert order == [(48, 4), (79, 3), (13, 2), (13, 1), (63, 4)]
    g13 = result["xids"][3]
    assert g13["count"] == 3
    assert g13["pids"] == [10, 11]
    assert g13["processes"] == ["python"]
    assert g13["first_seen"] == xid.iso_utc(NOW - 300)
    assert g13["last_seen"] == xid.iso_utc(NOW - 100)
    assert g13["name"] == xid.catalog()[13].mnemonic
    assert g13["immediate_action"] == "RESTART_APP"
    assert g13["severity"] == "warning"
    assert result["summary"] == {
        "events": 7,
        "groups": 5,
        "critical": 2,
        "warning": 2,
        "info": 1,
        "gpus_affected": 4,
        "worst_severity": "critical",
    }


def test_xid_154_group_is_judged_by_its_latest_action() -> None:
    raised = make_event(154, NOW - 100, recovery_action=1)
    cleared = make_event(154, NOW - 10, recovery_action=0)
    (group,) = xid.analyze([raised, cleared], 60, now=NOW)["xids"]
    assert group["severity"] == "info"
    assert group["recovery_action"] == "None"
    (group,) = xid.analyze([cleared, raised], 60, now=NOW + 0)["xids"]  # input order irrelevant
    assert group["severity"] == "info"
    (group,) = xid.analyze([raised], 60, now=NOW)["xids"]
    assert group["severity"] == "critical"
    assert group["recovery_action"] == "GPU Reset Required"
    assert "nvidia-smi -r -i 0" in group["recommended_action"]  # the GPU's own index
    reboot = make_event(154, NOW - 5, gpu=1, recovery_action=2)
    (group,) = xid.analyze([reboot], 60, now=NOW)["xids"]
    assert "reboot" in group["recommended_action"]
    future = make_event(154, NOW - 5, recovery_action=9)
    (group,) = xid.analyze([future], 60, now=NOW)["xids"]
    assert (group["severity"], group["recovery_action"]) == ("critical", "0x9")
    assert group["recommended_action"] == xid.recommended_action(xid.catalog()[154])


def test_fixture_analysis_end_to_end(fixture_events: list[xid.XidEvent]) -> None:
    now = BTIME + 8000.0
    result = xid.analyze(fixture_events, since_minutes=60, now=now)
    assert result["summary"]["events"] == 10
    top = result["xids"][0]
    assert top["severity"] == "critical"
    assert {g["xid"] for g in result["xids"] if g["severity"] == "critical"} == {79, 154, 48, 46}
    unknown = next(g for g in result["xids"] if g["xid"] == 999)
    assert unknown["name"] == "UNKNOWN"
    assert unknown["gpu_index"] is None
    assert all(g["last_seen"].endswith("Z") for g in result["xids"])
    # a narrow window keeps only the newest events (usec 7.8e9 and 7.7e9)
    narrow = xid.analyze(fixture_events, since_minutes=(8000 - 7700) / 60, now=now)
    assert sorted(g["xid"] for g in narrow["xids"]) == [46, 999]


def test_per_group_lists_are_bounded() -> None:
    events = [make_event(13, NOW - i, pid=i, process=f"p{i}") for i in range(1, 100)]
    (group,) = xid.analyze(events, 60, now=NOW)["xids"]
    assert group["count"] == 99
    assert len(group["pids"]) == 20 and len(group["processes"]) == 20


# --- never crash on arbitrary input ------------------------------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "NVRM: Xid (",
        "PCI:",
        "0000:3b:00",
        "0000:3b:00.0",
        "): ",
        "79",
        "154",
        ", ",
        "pid=",
        "'<unknown>'",
        "name=",
        "<unknown>",
        "GPU recovery action changed from 0x0 (None) to 0x",
        "zz",
        "\\x0a",
        "\\xff",
        "\n",
        " ",
        ";",
        "6,1,2,-;",
        "NVRM: GPU at PCI:0000:3b:00: GPU-",
        "99999999999999999999999",
    ]
)
_LINES = st.one_of(
    st.text(max_size=200),
    st.lists(_FRAGMENTS, max_size=12).map("".join),
    st.lists(st.one_of(_FRAGMENTS, st.text(max_size=8)), max_size=12).map("".join),
)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_LINES, max_size=8), usec=st.integers(min_value=0, max_value=10**20))
def test_parsing_never_raises(lines: list[str], usec: int) -> None:
    text = "\n".join(lines)
    records = xid.parse_kmsg_text(text)
    records.extend(KmsgRecord(6, i, usec, line) for i, line in enumerate(lines))
    events = xid.parse_xids(records, float(BTIME), GPUS)
    for event in events:
        assert xid.normalize_pci_bus_id(event.pci_bus_id) == event.pci_bus_id
        xid.event_severity(event)
    xid.analyze(events, since_minutes=10**9, now=NOW)


# --- syslog(2) and --kmsg auto --------------------------------------------------------------

DROP_SYSLOG = ("--bounding-set", "-syslog", "--inh-caps", "-syslog")


def _syslog_allowed() -> bool:
    try:
        kmsg.read_syslog()
    except KmsgUnavailable:
        return False
    return True


def _run_python(code: str, repo_root: Path, prefix: tuple[str, ...] = ()) -> str:
    result = subprocess.run(
        [*prefix, sys.executable, "-c", code],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def test_syslog_text_is_parsed_like_dmesg() -> None:
    text = (
        "<6>[    1.352556] eth0: link up\n"
        "<3>[ 6335.661041][  T812] NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', "
        "name=<unknown>, GPU has fallen off the bus.\n"
        "<4>[ 6335.661041][    C3] NVRM: GPU at PCI:0000:3b:00: GPU-bc0fa0b9\n"
    )
    records = kmsg.parse_syslog_text(text)
    assert [(r.priority, r.usec_since_boot) for r in records] == [
        (6, 1_352_556),
        (3, 6_335_661_041),
        (4, 6_335_661_041),
    ]
    assert records[1].message.startswith("NVRM: Xid (PCI:0000:3b:00): 79")  # caller id gone
    (event,) = xid.parse_xids(records, 1000.0)
    assert event.xid == 79 and event.timestamp == pytest.approx(1000 + 6335.661041)
    assert event.gpu_uuid == "GPU-bc0fa0b9"


def test_syslog_without_timestamps_is_refused_with_the_fix() -> None:
    with pytest.raises(KmsgUnavailable, match="printk.time"):
        kmsg.parse_syslog_text("<6>eth0: link up\n<3>NVRM: Xid (PCI:0000:3b:00): 79\n")
    assert kmsg.parse_syslog_text("") == []


def test_syslog_reads_the_real_ring_buffer() -> None:
    if not _syslog_allowed():
        pytest.skip("syslog(2) is not permitted here (no CAP_SYSLOG)")
    device = xid.read_kmsg("/dev/kmsg")[1] if os.access("/dev/kmsg", os.R_OK) else []
    boot, records = kmsg.read_syslog()  # after /dev/kmsg: it holds all of that and more
    assert records and boot == kmsg.boot_time()
    assert all(r.usec_since_boot >= 0 for r in records)
    # Both are views of the same ring buffer: /dev/kmsg's newest one-line records are
    # in the syslog(2) copy, with the same timestamps.
    copy = {(r.usec_since_boot, r.message) for r in records}
    newest = [(r.usec_since_boot, r.message) for r in device[-20:] if "\n" not in r.message]
    assert [item for item in newest if item not in copy] == []


def test_auto_prefers_dev_kmsg_then_falls_back_to_syslog(tmp_path: Path) -> None:
    if not os.access("/dev/kmsg", os.R_OK) or not _syslog_allowed():
        pytest.skip("needs a readable /dev/kmsg and syslog(2)")
    source, _, records = kmsg.read_kernel_log("auto")
    assert source == "/dev/kmsg" and records
    absent = str(tmp_path / "kmsg")  # as in a container without the hostPath mount
    source, _, records = kmsg.read_kernel_log("auto", device=absent)
    assert source == "syslog(2)" and records
    source, _, _ = kmsg.read_kernel_log("syslog")
    assert source == "syslog(2)"
    source, _, _ = kmsg.read_kernel_log(str(FIXTURE))
    assert source == str(FIXTURE)


def test_auto_in_a_container_without_dev_kmsg(repo_root: Path) -> None:
    """The chart's default: no /dev/kmsg in the container, CAP_SYSLOG granted."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0 or not _syslog_allowed():
        pytest.skip("needs root, unshare and syslog(2)")
    code = (
        "from agent import kmsg\n"
        "import os\n"
        "source, _, records = kmsg.read_kernel_log('auto')\n"
        "print(os.path.exists('/dev/kmsg'), source, len(records) > 0)\n"
    )
    # A private mount namespace with an empty /dev, as a container has no /dev/kmsg.
    script = 'mount -t tmpfs none /dev && exec "$@"'
    try:
        out = _run_python(code, repo_root, prefix=(unshare, "-m", "sh", "-c", script, "sh"))
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a mount namespace here: {exc.stderr.strip()[:200]}")
    assert out.split() == ["False", "syslog(2)", "True"]


def test_syslog_eperm_without_cap_syslog(repo_root: Path) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to drop CAP_SYSLOG")
    if Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() != "1":
        pytest.skip("kernel.dmesg_restrict=0: syslog(2) needs no capability here")
    code = (
        "from agent import kmsg\n"
        "from agent.errors import KmsgUnavailable\n"
        "for call in (kmsg.read_syslog, lambda: kmsg.read_kernel_log('auto'),\n"
        "             lambda: kmsg.read_kernel_log('auto', device='/nonexistent/kmsg')):\n"
        "    try:\n"
        "        call()\n"
        "    except KmsgUnavailable as e:\n"
        "        print(e)\n"
    )
    lines = _run_python(code, repo_root, prefix=(setpriv, *DROP_SYSLOG)).splitlines()
    assert len(lines) == 3, lines
    syslog_only, both_denied, absent_and_denied = lines
    assert "syslog(2): permission denied" in syslog_only and "CAP_SYSLOG" in syslog_only
    assert "/dev/kmsg: permission denied; syslog(2): permission denied" in both_denied
    assert "/nonexistent/kmsg: not present; syslog(2): permission denied" in absent_and_denied
    assert "xid.enabled=true" in absent_and_denied


def test_ctypes_is_imported_only_to_read_the_log(repo_root: Path) -> None:
    code = (
        "import sys\n"
        "from agent.app import create_session\n"
        "out = []\n"
        "s = create_session(['--backend', 'fake'], out.append)\n"
        's.feed(\'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
        '"params":{"name":"get_gpu_health"}}\')\n'
        "s.close()\n"
        "print('ctypes' in sys.modules, len(out))\n"
        "from agent import kmsg\n"
        "try:\n"
        "    kmsg.read_syslog()\n"
        "except Exception:\n"
        "    pass\n"
        "print('ctypes' in sys.modules)\n"
    )
    assert _run_python(code, repo_root).split() == ["False", "1", "True"]


# --- MIG: the driver's GPU-instance tag --------------------------------------------------
# The forms NVIDIA's open kernel modules print (kernel_rc.c krcReportXid; the contained-error
# example in kern_gpu_ga100.c).


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "NVRM: Xid (PCI:0000:18:00 GPU-I:05): 94, pid=7194, name=python, Contained: CE "
            "User Channel (0x9). RST: No, D-RST: No",
            (94, 7194, "python", 5, None),
        ),
        (
            "NVRM: Xid (PCI:0000:18:00 GPU-I:01 GPU-CI:02): 13, pid=9, name=a, Graphics Exception",
            (13, 9, "a", 1, 2),
        ),
        (
            "NVRM: Xid (PCI:0000:18:00): 95, pid=7062, Uncontained: LTC TAG",
            (95, 7062, None, None, None),
        ),
    ],
)
def test_mig_instance_tags_are_parsed(line: str, expected: tuple[Any, ...]) -> None:
    parsed = xid.parse_xid_line(line)
    assert parsed is not None
    assert parsed.pci_bus_id == "00000000:18:00.0"
    got = (parsed.xid, parsed.pid, parsed.process)
    assert got + (parsed.gpu_instance_id, parsed.compute_instance_id) == expected
    (event,) = xid.parse_xids([KmsgRecord(3, 1, 1_000_000, line)], 0.0, GPUS)
    assert (event.gpu_index, event.gpu_instance_id, event.compute_instance_id) == (
        0,
        expected[3],
        expected[4],
    )


@pytest.mark.parametrize(
    "line",
    [
        "NVRM: Xid (PCI:0000:18:00 GPU-I:): 13, x",  # no instance number
        "NVRM: Xid (PCI:0000:18:00 GPU-CI:02): 13, x",  # a CI needs its GPU instance
        "NVRM: Xid (PCI:0000:18:00 GPU-I:1234): 13, x",
    ],
)
def test_malformed_instance_tags_are_not_xids(line: str) -> None:
    assert xid.parse_xid_line(line) is None


def test_xids_on_different_slices_are_separate_groups_named_by_their_mig_device() -> None:
    from agent.backend import MigInstance

    def tagged(code: int, ts: float, gi: int | None) -> xid.XidEvent:
        return make_event(code, ts, gpu_instance_id=gi)

    events = [tagged(13, NOW - 30, 1), tagged(13, NOW - 20, 1), tagged(13, NOW - 10, 3)]
    events.append(tagged(13, NOW - 5, None))
    instances = {
        0: [
            MigInstance(1, 0, "MIG-aaaa", "1g.10gb", 9984),
            MigInstance(3, 0, "MIG-cccc", "3g.40gb", 40320),
        ]
    }
    groups = xid.analyze(events, 60, now=NOW, instances=instances)["xids"]
    by_instance = {g["gpu_instance_id"]: g for g in groups}
    assert set(by_instance) == {1, 3, None}
    assert by_instance[1]["count"] == 2
    assert (by_instance[1]["mig_uuid"], by_instance[1]["mig_profile"]) == ("MIG-aaaa", "1g.10gb")
    assert (by_instance[3]["mig_uuid"], by_instance[3]["mig_profile"]) == ("MIG-cccc", "3g.40gb")
    assert by_instance[None]["mig_uuid"] is None  # untagged: no slice to name
    # without an inventory the instance is still reported, the device is not
    (row,) = xid.analyze([tagged(13, NOW - 5, 7)], 60, now=NOW)["xids"]
    assert (row["gpu_instance_id"], row["mig_uuid"]) == (7, None)
