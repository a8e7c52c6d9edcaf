"""Issue 18 end to end with the k0s stand-in in real VMs, on ONE 2-node lab: snapshot, mark the
cluster with a namespace, revert (the namespace is gone, every node Ready), status and smoke pass,
a second revert works, and lab.down leaves no snapshot behind. Bad input is tested before any VM
exists (tests/unit/test_bad_inputs.py, tests/unit/test_snapshots.py)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import libvirt
import pytest

from .conftest import STANDIN, invoke, lab_leftovers, node_exec

pytestmark = pytest.mark.vm
LAB = "snapshots-it"
MARKER = "snapshots-it-marker"
LIBVIRT_SNAPSHOT_METADATA = Path("/var/lib/libvirt/qemu/snapshot")
# The last two are asked from the host through the lab's kubeconfig, which they prove as well.
REVERT_STEPS = ["restore every VM's memory and disk", "correct the guest clocks",
                "API answers /readyz through the lab's kubeconfig", "every node Ready"]


@pytest.fixture(scope="module")
def lab():
    try:
        invoke("lab.up", "--nodes", "2", "--k0s-binary", str(STANDIN), "--lab", LAB)
        # A user for smoke's rbac check, made before the snapshot so that the cluster knows it.
        invoke("lab.user", "demo", "--group", "development", "--lab", LAB)
        yield LAB
    finally:
        invoke("lab.down", "--lab", LAB, check=False)


def _namespace_exists(name: str) -> bool:
    result = node_exec(LAB, "node1", f"k0s kubectl get namespace {name} -o name", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr or "not found" in result.stderr, result.stderr
    return result.returncode == 0


def _revert() -> dict[str, float]:
    """lab.revert through the CLI; the seconds it printed for each step."""
    result = invoke("lab.revert", "clean", "--lab", LAB)
    output = result.stdout + result.stderr
    timings = {m.group(1): float(m.group(2))
               for m in re.finditer(r"^\s*[\d.]+s\s+(\S.*?): done in ([\d.]+)s$", output, re.MULTILINE)}
    assert list(timings) == REVERT_STEPS, output
    assert "is back at snapshot clean" in output, output
    return timings


def test_snapshot_create_revert_twice_then_down_leaves_nothing(lab):
    invoke("lab.snapshot", "clean", "--lab", LAB)
    listed = json.loads(invoke("lab.snapshots", "--json", "--lab", LAB).stdout)
    assert [(s["name"], s["nodes"]) for s in listed] == [("clean", 2)]
    assert listed[0]["size_bytes"] > 0 and listed[0]["k0s_version"] != "-"

    node_exec(LAB, "node1", "printf 'apiVersion: v1\\nkind: Namespace\\nmetadata:\\n  name: %s\\n' "
                            f"{MARKER} | k0s kubectl apply -f -")
    assert _namespace_exists(MARKER)

    first = _revert()
    assert not _namespace_exists(MARKER), "the namespace made after the snapshot survived the revert"
    status = json.loads(invoke("lab.status", "--json", "--lab", LAB).stdout)
    assert [(n["name"], n["vm_state"], n["ready"]) for n in status["nodes"]] == [
        ("node1", "Running", True), ("node2", "Running", True)]
    invoke("lab.smoke", "--only", "nodes,rbac", "--user", "demo", "--lab", LAB)

    second = _revert()
    state = json.loads(invoke("lab.snapshots", "--json", "--lab", LAB).stdout)
    assert state[0]["last_reverted"] is True
    print(f"revert timings: first {first}, second {second}")

    domains = [f"k0slab-{LAB}-node1", f"k0slab-{LAB}-node2"]
    invoke("lab.down", "--lab", LAB)
    assert lab_leftovers(LAB) == []
    conn = libvirt.open("qemu:///system")
    try:
        assert not [d.name() for d in conn.listAllDomains(0) if d.name() in domains]
    finally:
        conn.close()
    assert not [d for d in domains if (LIBVIRT_SNAPSHOT_METADATA / d).exists() and any(
        (LIBVIRT_SNAPSHOT_METADATA / d).iterdir())]
