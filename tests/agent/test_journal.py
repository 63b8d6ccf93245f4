"""The persistent kernel log (--journal): journald files, checked against the real
``journalctl``, and text kern.log; XIDs from before a reboot reach the tools."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.catalog import TOOL_DEFINITIONS
from agent.journal import read_journal, read_text_log
from tests.agent.helpers import Wire
from tests.agent.journalfile import write_journal

SCHEMAS = {t["name"]: t["outputSchema"] for t in TOOL_DEFINITIONS}
XID79 = (
    "NVRM: Xid (PCI:0000:18:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."
)
XID13 = "NVRM: Xid (PCI:0000:2a:00): 13, pid=4242, name=python3, Graphics SM Warp Exception"
NOW = time.time()
BOOT = NOW - 3600.0  # "this boot" started an hour ago


def us(t: float) -> int:
    return int(t * 1_000_000)


def kernel(message: str) -> dict[str, str]:
    return {
        "MESSAGE": message,
        "_TRANSPORT": "kernel",
        "PRIORITY": "3",
        "SYSLOG_IDENTIFIER": "kernel",
    }


ENTRIES = [
    (us(BOOT - 7200), kernel("Linux version 6.8.0")),
    (us(BOOT - 600), kernel(XID79)),  # before the reboot: gone from the ring buffer
    (us(BOOT - 599), kernel(XID79)),  # the same text again: one DATA object, two entries
    (us(BOOT - 500), {"MESSAGE": XID13, "_TRANSPORT": "stdout"}),  # not the kernel
    (us(BOOT + 60), kernel(XID13)),  # this boot
]


def test_the_writer_makes_files_the_real_journalctl_reads(tmp_path: Path) -> None:
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        pytest.skip("journalctl not installed: cannot cross-check the test journal writer")
    path = write_journal(tmp_path / "system.journal", ENTRIES)
    done = subprocess.run(
        [journalctl, "--file", str(path), "-o", "json", "--no-pager"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(int(r["__REALTIME_TIMESTAMP"]), r["MESSAGE"]) for r in rows] == [
        (t, f["MESSAGE"]) for t, f in ENTRIES
    ]


@pytest.mark.parametrize("compact", [False, True])
def test_kernel_messages_with_wall_times_from_a_journal_file(tmp_path: Path, compact: bool) -> None:
    path = write_journal(tmp_path / "system.journal", ENTRIES, compact=compact)
    source, records = read_journal(str(path), BOOT)
    assert source == f"journal {path}"
    got = [(round(BOOT + r.usec_since_boot / 1e6, 3), r.message) for r in records]
    assert got == [
        (round(BOOT - 600, 3), XID79),
        (round(BOOT - 599, 3), XID79),
        (round(BOOT + 60, 3), XID13),
    ]  # "Linux version" is not looked for; the stdout line is not the kernel's


def test_compressed_payloads_are_skipped_as_documented(tmp_path: Path) -> None:
    path = write_journal(tmp_path / "x.journal", ENTRIES, compress_payloads=[f"MESSAGE={XID13}"])
    _, records = read_journal(str(path), BOOT)
    assert [r.message for r in records] == [XID79, XID79]


def test_a_journal_directory_reads_every_machine_file(tmp_path: Path) -> None:
    machine = tmp_path / "journal" / "0123456789abcdef0123456789abcdef"
    machine.mkdir(parents=True)
    write_journal(machine / "system@0001.journal", ENTRIES[:2])
    write_journal(machine / "system.journal~", ENTRIES[4:])
    source, records = read_journal(str(tmp_path / "journal"), BOOT)
    assert source.endswith("(2 file(s))")
    assert [r.message for r in records] == [XID79, XID13]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="no \\*.journal files"):
        read_journal(str(empty), BOOT)


def test_a_text_kern_log(tmp_path: Path) -> None:
    path = tmp_path / "kern.log"
    path.write_text(
        "2026-12-03T06:00:00.250000+00:00 gpu-node-1 kernel: [  12.5] " + XID79 + "\n"
        "Dec  3 06:30:00 gpu-node-1 kernel: " + XID13 + "\n"
        "Dec  3 06:30:01 gpu-node-1 systemd[1]: Started foo.\n"
    )
    now = 1764745200.0  # 2025-12-03T07:00:00Z
    records = read_text_log(str(path), 0.0, now=now)
    assert [(r.usec_since_boot / 1e6, r.message) for r in records] == [
        (1796277600.25, XID79),  # the ISO stamp carries its year (2026)
        (1764743400.0, XID13),  # BSD stamps take the year that is not in the future
    ]


def test_pre_reboot_xids_reach_the_tools(
    wire: Callable[..., Wire], tmp_path: Path, scenario: Callable[[dict[str, Any]], str]
) -> None:
    journal = write_journal(tmp_path / "system.journal", ENTRIES)
    node = scenario({"uptime_s": 600})  # the fake node booted 10 min ago: ENTRIES are older
    w = wire("--backend", "fake", "--scenario", node, "--journal", str(journal))
    w.initialize()
    xids = w.call("analyze_xid_errors", {"since_minutes": 525600})["structuredContent"]
    jsonschema.validate(xids, SCHEMAS["analyze_xid_errors"])
    lost = [g for g in xids["xids"] if g["xid"] == 79 and g["pci_bus_id"] == "00000000:18:00.0"]
    assert lost and lost[0]["count"] == 2 and lost[0]["gpu_index"] == 0  # before this boot
    assert "scenario + journal" in xids["source"]
    health = w.call("get_gpu_health", {"since_minutes": 525600})["structuredContent"]
    journal_status = health["sources"]["journal"]
    assert journal_status["readable"] is True and journal_status["before_this_boot"] >= 2
    assert "compressed" in journal_status["limits"]


def test_an_unreadable_ring_buffer_falls_back_to_the_journal(
    wire: Callable[..., Wire], tmp_path: Path
) -> None:
    journal = write_journal(tmp_path / "system.journal", ENTRIES)
    w = wire("--backend", "fake", "--kmsg", str(tmp_path / "missing"), "--journal", str(journal))
    w.initialize()
    result = w.call("analyze_xid_errors", {"since_minutes": 525600})
    assert result["isError"] is False, result
    xids = result["structuredContent"]
    assert xids["source"] == f"journal {journal}"
    assert {g["xid"] for g in xids["xids"]} == {79, 13}


def test_a_missing_journal_is_said_not_fatal(wire: Callable[..., Wire], tmp_path: Path) -> None:
    w = wire("--backend", "fake", "--journal", str(tmp_path / "nope"))
    w.initialize()
    health = w.call("get_gpu_health")["structuredContent"]
    status = health["sources"]["journal"]
    assert status["readable"] is False and "--journal" in status["reason"]
    assert health["xid_log"]["readable"] is True  # the ring buffer still counts
    plain = wire("--backend", "fake")
    plain.initialize()
    none = plain.call("get_gpu_health")["structuredContent"]["sources"]["journal"]
    assert none["source"] is None and "before the last reboot" in none["reason"]


def test_the_fake_scenario_has_a_journal_with_pre_reboot_xids(
    wire: Callable[..., Wire], scenario: Callable[[dict[str, Any]], str]
) -> None:
    path = scenario(
        {
            "uptime_s": 600,
            "journal": [
                {"ago_s": 900, "line": "NVRM: Xid (PCI:0000:18:00): 79, pid='<unknown>', "
                 "name=<unknown>, GPU has fallen off the bus."},
                {"ago_s": 60, "line": "NVRM: Xid (PCI:0000:18:00): 13, pid=1, name=x, SM"},
            ],
        }
    )  # fmt: skip
    w = wire("--backend", "fake", "--scenario", path)
    w.initialize()
    xids = w.call("analyze_xid_errors", {"since_minutes": 30})["structuredContent"]
    assert sorted(g["xid"] for g in xids["xids"]) == [13, 79]  # 79 only in the journal
    assert xids["source"] == "scenario + scenario journal"


def test_faults_before_the_reboot_are_history_not_the_verdict(
    wire: Callable[..., Wire], tmp_path: Path, scenario: Callable[[dict[str, Any]], str]
) -> None:
    """A reboot resets GPUs and the NVLink fabric: pre-reboot Xid 79 is a warning, a
    pre-reboot fatal SXid no node issue, and this boot's first attach of a GPU no reset."""
    sxid = "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 24007, Fatal, Link 12 sourcetrack timeout"
    attach = "NVRM: GPU at PCI:0000:18:00: GPU-96bbf14a-e1bc-c1dc-78b5-90660fb2a0f0"
    old_boot = BOOT - 86400
    rows = [
        (us(old_boot + 20), {**kernel(attach)}),
        (us(BOOT - 600), kernel(XID79)),
        (us(BOOT - 590), kernel(sxid)),
    ]
    journal = write_journal(tmp_path / "system.journal", rows)
    node = scenario({"uptime_s": 600, "kmsg": [{"ago_s": 580, "line": attach}]})
    w = wire("--backend", "fake", "--scenario", node, "--journal", str(journal))
    w.initialize()
    health = w.call("get_gpu_health", {"since_minutes": 525600})["structuredContent"]
    gpu0 = health["gpus"][0]
    assert [(i["check"], i["severity"]) for i in gpu0["issues"]] == [
        ("xid_before_reboot", "warning")
    ]
    assert "before the last reboot" in gpu0["issues"][0]["message"]
    assert health["status"] == "warning" and health["issues"] == []
    xids = w.call("analyze_xid_errors", {"since_minutes": 525600})["structuredContent"]
    assert [g["sxid"] for g in xids["sxids"]] == [24007]  # still listed, with its time
    jsonschema.validate(xids, SCHEMAS["analyze_xid_errors"])
    assert [(g["xid"], g["before_last_boot"]) for g in xids["xids"]] == [(79, True)]
    assert xids["booted_at"] > xids["xids"][0]["last_seen"]
    assert xids["gpu_events"] == []  # one attach per boot: no reset
