"""GPU product presets: what NVIDIA's GPU feature discovery would label a node with.

The agent's fake backend has its own presets (same names); these are the
Kubernetes-side facts: GFD label values, memory in MiB as GFD reports it, the
cloud instance type such nodes usually are, and node CPU/memory capacity.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Product:
    key: str  # preset name shared with agent/fake.py ("H100-80GB")
    gfd_product: str  # nvidia.com/gpu.product (spaces become '-')
    memory_mib: int  # nvidia.com/gpu.memory
    family: str  # nvidia.com/gpu.family
    compute: tuple[int, int]  # nvidia.com/gpu.compute.major/minor
    mig_capable: bool
    instance_type: str  # node.kubernetes.io/instance-type for the default GPU count
    cpus: int
    memory_gib: int


PRODUCTS: dict[str, Product] = {
    p.key: p
    for p in (
        Product("H100-80GB", "NVIDIA-H100-80GB-HBM3", 81559, "hopper", (9, 0), True,
                "p5.48xlarge", 192, 2048),
        Product("A100-80GB", "NVIDIA-A100-SXM4-80GB", 81920, "ampere", (8, 0), True,
                "p4de.24xlarge", 96, 1152),
        Product("L4", "NVIDIA-L4", 23034, "ada-lovelace", (8, 9), False,
                "g6.12xlarge", 48, 192),
        Product("T4", "Tesla-T4", 15360, "turing", (7, 5), False,
                "g4dn.12xlarge", 48, 192),
    )
}  # fmt: skip


def product(key: str) -> Product:
    """The preset named *key*; raises KeyError listing the known ones."""
    try:
        return PRODUCTS[key]
    except KeyError:
        raise KeyError(f"unknown GPU product {key!r}; known: {', '.join(PRODUCTS)}") from None
