"""Issue 17 end to end with the k0s stand-in, chained on two labs to keep VM time short:
a 2-node lab at v1.33.4 upgraded to v1.34.1 (the way back refused), backed up, and restored as
a new lab on new IPs that still holds a namespace made before the backup; both labs come down
leaving nothing. Bad input that needs no VM is in tests/unit/test_bad_inputs.py."""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import REPO, cluster_nodes, invoke, lab_leftovers, node_exec, ready_of

pytestmark = pytest.mark.vm
OLD, NEW = "lifecycle-a", "lifecycle-b"
FROM, TO = "v1.33.4+k0s.0", "v1.34.1+k0s.0"
NAMESPACE = "lifecycle-drill"


MAKE_VERSION = REPO / "tests" / "standin" / "make-version"


def _standin_at(version: str, folder: Path) -> Path:
    if not MAKE_VERSION.exists():  # a failure, not a skip: this drill must not pass unseen
        pytest.fail(f"{MAKE_VERSION} is missing: the stand-in's stage 3 (versions, backup/restore, drain) is needed")
    out = folder / f"k0s-{version}"
    subprocess.run([sys.executable, str(MAKE_VERSION), version, str(out)], check=True, timeout=120)
    return out


def _status(lab: str) -> dict:
    return json.loads(invoke("lab.status", "--json", "--lab", lab).stdout)


def _assert_all_at(lab: str, version: str) -> dict:
    status = _status(lab)
    for node in status["nodes"]:
        assert (node["name"], node["k0s_on_disk"], node["k0s_running"], node["ready"]) == (
            node["name"], version, version, True)
    assert status["k0s_version"] == version and status["upgrade_target"] is None
    return status


def _smoke_version(lab: str, folder: Path) -> str:
    report = folder / f"{lab}-smoke.xml"
    invoke("lab.smoke", "--lab", lab, "--only", "nodes", "--junit", str(report))
    (prop,) = ET.parse(report).getroot().findall("testsuite/properties/property")
    return prop.get("value")


def test_upgrade_then_backup_and_restore_onto_a_new_lab(tmp_path):
    old_k0s, new_k0s = _standin_at(FROM, tmp_path), _standin_at(TO, tmp_path)
    archive = tmp_path / "old.backup.tar"
    try:
        invoke("lab.up", "--nodes", "2", "--k0s-binary", str(old_k0s), "--lab", OLD)
        _assert_all_at(OLD, FROM)
        node_exec(OLD, "node1", f"k0s kubectl create namespace {NAMESPACE}")

        upgraded = invoke("lab.upgrade", "--k0s-binary", str(new_k0s), "--lab", OLD)
        assert "node2: cordon and drain" in upgraded.stdout
        old_status = _assert_all_at(OLD, TO)
        assert all(ready_of(item) == "True" for item in cluster_nodes(OLD).values())
        assert _smoke_version(OLD, tmp_path) == TO

        back = invoke("lab.upgrade", "--k0s-binary", str(old_k0s), "--lab", OLD, check=False)
        assert back.returncode == 1 and "does not support downgrades" in back.stderr, back.stderr
        _assert_all_at(OLD, TO)

        invoke("lab.backup", "--lab", OLD, "--output", str(archive))
        into_existing = invoke("lab.restore", str(archive), "--lab", OLD, check=False)
        assert into_existing.returncode == 1 and "already exists" in into_existing.stderr
        invoke("lab.down", "--lab", OLD)
        assert lab_leftovers(OLD) == []

        restored = invoke("lab.restore", str(archive), "--lab", NEW, "--k0s-binary", str(new_k0s))
        assert "k0s restore done" in restored.stdout
        new_status = _assert_all_at(NEW, TO)
        old_ips = {n["name"]: n["ip"] for n in old_status["nodes"]}
        new_ips = {n["name"]: n["ip"] for n in new_status["nodes"]}
        assert sorted(new_ips) == sorted(old_ips) and not set(new_ips.values()) & set(old_ips.values())
        for name, item in cluster_nodes(NEW).items():
            assert ready_of(item) == "True"
            assert [a["address"] for a in item["status"]["addresses"] if a["type"] == "InternalIP"] == [new_ips[name]]
        assert NAMESPACE in node_exec(NEW, "node1", f"k0s kubectl get namespace {NAMESPACE}").stdout
        assert _smoke_version(NEW, tmp_path) == TO
    finally:
        invoke("lab.down", "--lab", OLD, check=False)
        invoke("lab.down", "--lab", NEW, check=False)
    assert lab_leftovers(OLD) == [] and lab_leftovers(NEW) == []
