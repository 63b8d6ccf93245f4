"""NOTES.txt tells the user how to connect, what to label, and warns in privileged mode."""

from __future__ import annotations

import pytest

from tests.chart.helmchart import CI_FILES, NAMESPACE, Chart

pytestmark = pytest.mark.needs_helm

CI = {p.name: p for p in CI_FILES}


def test_notes_show_how_to_run_the_broker_against_this_install(chart: Chart) -> None:
    notes = chart.notes()
    assert f"broker serve --namespace {NAMESPACE}" in notes
    assert f"kubectl mcp diagnose NODE --namespace {NAMESPACE}" in notes
    assert (
        f"kubectl -n {NAMESPACE} get pods -l "
        "app.kubernetes.io/name=k8s-gpu-mcp,app.kubernetes.io/component=agent"
    ) in notes
    assert "WARNING" not in notes


def test_notes_permission_checks_ask_about_the_exec_subresource(chart: Chart) -> None:
    notes = chart.notes()
    checks = [line.strip() for line in notes.splitlines() if "kubectl auth can-i" in line]
    assert f"kubectl auth can-i create pods --subresource=exec -n {NAMESPACE}" in checks
    assert f"kubectl auth can-i get pods --subresource=exec -n {NAMESPACE}" in checks
    # `can-i create pods/exec` asks about a pod named "exec": never offered as a command.
    assert not [c for c in checks if c.startswith("kubectl") and "pods/exec" in c]
    # Every cluster-wide read the ClusterRole grants has its check.
    for what in ("list nodes", "list pods --all-namespaces", "list events --all-namespaces"):
        assert f"kubectl auth can-i {what}" in checks


def test_notes_state_the_pod_read_choice(chart: Chart) -> None:
    assert "every pod's spec, env values included" in chart.notes()
    notes = chart.notes("rbac.subjects=null", values=[CI["namespaced-reads-values.yaml"]])
    checks = [line.strip() for line in notes.splitlines() if "kubectl auth can-i" in line]
    assert "kubectl auth can-i list pods --all-namespaces" not in checks
    assert "kubectl auth can-i list pods -n ml-research" in checks
    assert "kubectl auth can-i list pods -n inference" in checks
    assert "Pods are readable only in ml-research, inference" in notes
    assert "-n inference create rolebinding gpu-diag-pod-read --role=" in notes


def test_notes_say_how_to_bind_when_nobody_is_bound(chart: Chart) -> None:
    assert "Nobody is bound" in chart.notes()
    assert "Nobody is bound" not in chart.notes(values=[CI["full-values.yaml"]])


@pytest.mark.parametrize(
    ("sets", "level"),
    [
        ((), "privileged"),
        (("xid.enabled=false",), "baseline"),
        (("agent.nonRoot.enabled=true",), "restricted"),
    ],
)
def test_notes_give_the_pod_security_label_for_the_mode(
    chart: Chart, sets: tuple[str, ...], level: str
) -> None:
    notes = chart.notes(*sets)
    assert f"kubectl label namespace {NAMESPACE} --overwrite" in notes
    assert f"pod-security.kubernetes.io/enforce={level} " in notes
    assert "pod-security.kubernetes.io/warn=restricted" in notes


def test_privileged_mode_warns_loudly(chart: Chart) -> None:
    notes = chart.notes(values=[CI["privileged-values.yaml"]])
    head = notes[:600]
    assert "WARNING: PRIVILEGED MODE" in head
    assert "root on its GPU node" in head
    assert "pod-security.kubernetes.io/enforce=privileged" in notes


def test_dra_admin_access_notes_name_the_namespace_label(chart: Chart) -> None:
    notes = chart.notes(values=[CI["dra-values.yaml"]])
    assert f"kubectl label namespace {NAMESPACE} resource.kubernetes.io/admin-access=true" in notes


def test_non_root_notes_say_xid_is_off(chart: Chart) -> None:
    notes = chart.notes(values=[CI["nonroot-values.yaml"]])
    assert "XID analysis from the kernel log is OFF" in notes
    assert "GPU_AGENT_KMSG=off" in notes and "syslog(2)" not in notes


def test_default_notes_explain_the_xid_source_and_the_pod_security_cost(chart: Chart) -> None:
    notes = chart.notes()
    assert "GPU_AGENT_KMSG=auto" in notes and "syslog(2)" in notes
    assert "xid.mountDevKmsg=true" not in notes  # not mounted, so not claimed
    assert "Why: adds CAP_SYSLOG" in notes and "mounts host paths" not in notes
    assert "xid.enabled=false would meet baseline" in notes
    mounted = chart.notes("xid.mountDevKmsg=true")
    assert "mounted from the host: xid.mountDevKmsg=true" in mounted
    assert "mounts host paths" in mounted
    assert "would meet baseline" not in mounted  # the mount also needs privileged
    assert "XID analysis from the kernel log is OFF" not in notes + mounted


def test_device_plugin_notes_state_the_cost(chart: Chart) -> None:
    notes = chart.notes(values=[CI["deviceplugin-values.yaml"]])
    assert "1 x nvidia.com/gpu.shared per node" in notes
