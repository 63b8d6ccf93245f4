"""The host's sysfs beyond NVML: PCIe AER counters of each GPU and InfiniBand/RoCE port
state. Read lazily, only by the tools that report them, under ``--host-sys`` (default
``/sys``; tests point it at a fake tree).

- ``<root>/bus/pci/devices/<domain:bus:dev.fn>/aer_dev_{correctable,nonfatal,fatal}``:
  one ``NAME COUNT`` per line, ``TOTAL_ERR_COR`` / ``TOTAL_ERR_NONFATAL`` /
  ``TOTAL_ERR_FATAL`` the totals (kernel 5.7+, with AER enabled on the port).
- ``<root>/class/infiniband/<device>/ports/<n>/{state,phys_state,rate,link_layer}``:
  ``4: ACTIVE``, ``5: LinkUp``, ``400 Gb/sec (4X NDR)``, ``InfiniBand`` or ``Ethernet``
  (RoCE); ``counters/link_downed``: how often the link went down since boot.

Standard library only; a missing file is "not available", never an error.
"""

from __future__ import annotations

import os

from agent.backend import AerCounts, HostFacts, IbPort

DEFAULT_ROOT = "/sys"
_AER_FILES = (
    ("correctable", "aer_dev_correctable", "TOTAL_ERR_COR"),
    ("nonfatal", "aer_dev_nonfatal", "TOTAL_ERR_NONFATAL"),
    ("fatal", "aer_dev_fatal", "TOTAL_ERR_FATAL"),
)
_MAX_FILE = 64 * 1024  # sysfs attributes are one page; this bounds a strange file
_MAX_PORTS = 256  # a node has a handful; bound the answer anyway


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(_MAX_FILE).decode("utf-8", "replace")
    except OSError:
        return None


def sysfs_pci_address(nvml_bus_id: str) -> str:
    """NVML's "00000000:3B:00.0" -> sysfs's "0000:3b:00.0"."""
    domain, bus, devfn = nvml_bus_id.split(":")
    return f"{domain[-4:]}:{bus}:{devfn}".lower()


def read_aer(root: str, nvml_bus_id: str) -> AerCounts | None:
    """The GPU's AER counters, or None when sysfs has none for it (AER off, no such
    device in this tree, or an older kernel)."""
    try:
        base = os.path.join(root, "bus", "pci", "devices", sysfs_pci_address(nvml_bus_id))
    except ValueError:
        return None
    totals: dict[str, int | None] = {}
    details: dict[str, int] = {}
    found = False
    for key, name, total_name in _AER_FILES:
        text = _read(os.path.join(base, name))
        totals[key] = None
        if text is None:
            continue
        found = True
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                continue
            count = int(parts[1])
            if parts[0] == total_name:
                totals[key] = count
            elif count:
                details[parts[0]] = details.get(parts[0], 0) + count
    if not found:
        return None
    return AerCounts(totals["correctable"], totals["nonfatal"], totals["fatal"], details)


def _value(text: str | None) -> str | None:
    """ "4: ACTIVE" -> "ACTIVE"; "400 Gb/sec (4X NDR)" stays as it is."""
    if text is None:
        return None
    text = text.strip()
    head, sep, tail = text.partition(": ")
    return tail.strip() if sep and head.isdigit() else text or None


def _count(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def read_infiniband(root: str) -> list[IbPort] | None:
    """Every InfiniBand/RoCE port, or None when the node has no RDMA devices (or the
    tree is not mounted)."""
    base = os.path.join(root, "class", "infiniband")
    try:
        devices = sorted(os.listdir(base))
    except OSError:
        return None
    ports: list[IbPort] = []
    for device in devices:
        try:
            numbers = sorted(
                (n for n in os.listdir(os.path.join(base, device, "ports")) if n.isdigit()),
                key=int,
            )
        except OSError:
            continue
        for number in numbers:
            where = os.path.join(base, device, "ports", number)
            ports.append(
                IbPort(
                    device=device,
                    port=int(number),
                    state=_value(_read(os.path.join(where, "state"))),
                    phys_state=_value(_read(os.path.join(where, "phys_state"))),
                    rate=_value(_read(os.path.join(where, "rate"))),
                    link_layer=_value(_read(os.path.join(where, "link_layer"))),
                    link_downed=_count(_read(os.path.join(where, "counters", "link_downed"))),
                )
            )
            if len(ports) >= _MAX_PORTS:
                return ports
    return ports


def read_host(root: str, bus_ids: list[str]) -> HostFacts:
    """AER counters of the given GPUs (NVML bus ids) and the RDMA ports under ``root``."""
    aer = {}
    for bus_id in bus_ids:
        counts = read_aer(root, bus_id)
        if counts is not None:
            aer[bus_id] = counts
    return HostFacts(aer=aer, infiniband=read_infiniband(root), source=root)
