"""broker.fleet.selector: kubectl label-selector syntax on node labels."""

from __future__ import annotations

import pytest

from broker.fleet.selector import InvalidSelector, parse_selector

LABELS = {
    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    "topology.kubernetes.io/zone": "us-east-1a",
    "node-role": "",
}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3", True),
        ("nvidia.com/gpu.product==NVIDIA-H100-80GB-HBM3", True),
        ("nvidia.com/gpu.product!=NVIDIA-H100-80GB-HBM3", False),
        ("nvidia.com/gpu.product=Tesla-T4", False),
        ("missing!=x", True),  # != matches nodes without the label, as in Kubernetes
        ("topology.kubernetes.io/zone in (us-east-1a, us-east-1b)", True),
        ("topology.kubernetes.io/zone notin (us-east-1a)", False),
        ("missing notin (a)", True),
        ("missing in (a)", False),
        ("node-role", True),
        ("!node-role", False),
        ("!missing", True),
        ("node-role=", True),
        ("nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3,topology.kubernetes.io/zone in (x)", False),
        (" nvidia.com/gpu.product = NVIDIA-H100-80GB-HBM3 , node-role ", True),
    ],
)
def test_matches(text: str, matches: bool) -> None:
    assert parse_selector(text).matches(LABELS) is matches


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "empty"),
        ("a in (b", "unbalanced '('"),
        ("a in b)", "unbalanced ')'"),
        ("a,,b", "empty requirement"),
        ("a in ()", "set of values is empty"),
        ("bad key=1", "cannot parse"),
        ("-bad=1", "not a valid label key"),
        ("a=b c", "cannot parse"),
        ("a=" + "x" * 64, "not a valid label value"),
        ("a=b!", "not a valid label value"),
    ],
)
def test_bad_selectors_say_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(InvalidSelector) as info:
        parse_selector(text)
    assert complaint in str(info.value)
