"""Issue 13 end to end with the k0s stand-in, which refuses Ready where real k0s would (no egress and
no complete airgap bundle): what a node needs before it can become Ready (k0s-facts §9).

One NAT lab and one airgap lab each carry several checks; refusals run before any VM exists.
Timings go to out/timings/egress.json."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest
import yaml

from k0slab.core.paths import data_home
from k0slab.core.state import LabDir

from .conftest import (
    INVOKE, REPO, STANDIN, cluster_nodes, invoke, k0slab_domains, lab_leftovers, node_exec, readable_by_nobody,
    ready_of,
)

pytestmark = pytest.mark.vm
NAT_LAB = "egressnat"
AIRGAP_LAB = "egressgap"
FAIL_LAB = "egressfail"
MAKE_BUNDLE = REPO / "tests" / "standin" / "make-airgap-bundle"
SMOKE_IMAGE = "docker.io/library/busybox:1.36.1"
# Issue 13: a lab whose images cannot be had fails within 3 minutes of k0s starting.
FAIL_FAST_S = 180
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def record_timings():
    yield
    out = REPO / "out" / "timings"
    out.mkdir(parents=True, exist_ok=True)
    (out / "egress.json").write_text(json.dumps(TIMINGS, indent=2))


def _timed_up(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    try:
        return invoke("lab.up", "--k0s-binary", str(STANDIN), "--lab", name, *args)
    finally:
        TIMINGS[f"{name} lab.up s"] = round(time.monotonic() - started, 1)


def _network(lab: str) -> ET.Element:
    conn = libvirt.open("qemu:///system")
    try:
        return ET.fromstring(conn.networkLookupByName(f"k0slab-{lab}").XMLDesc(0))
    finally:
        conn.close()


def _gateway(lab: str) -> str:
    return _network(lab).find("ip").get("address")


def _bundle(path: Path, *args: str) -> Path:
    subprocess.run([sys.executable, str(MAKE_BUNDLE), str(path), *args], check=True, capture_output=True, text=True)
    return path


def _assert_route_and_resolver(lab: str, nodes: list[str]) -> None:
    gateway = _gateway(lab)
    for node in nodes:
        route = node_exec(lab, node, "ip -4 route show default").stdout
        assert f"default via {gateway} " in route, f"{node}: {route!r}"
        resolv = node_exec(lab, node, "cat /etc/resolv.conf").stdout
        assert f"nameserver {gateway}" in resolv.splitlines(), f"{node}: {resolv!r}"
        assert node_exec(lab, node, "test -s /etc/ssl/certs/ca-certificates.crt", check=False).returncode == 0


def _smoke_nodes_rbac_system(lab: str, tmp: Path, *extra: str) -> None:
    invoke("lab.user", "demo", "--group", "development", "--lab", lab)
    report = tmp / f"{lab}-smoke.json"
    started = time.monotonic()
    invoke("lab.smoke", "--only", "nodes,rbac,system", "--user", "demo", "--json", str(report), "--lab", lab, *extra)
    TIMINGS[f"{lab} lab.smoke s"] = round(time.monotonic() - started, 1)
    verdicts = {r["name"]: r["verdict"] for r in json.loads(report.read_text())["results"]}
    assert verdicts == {"nodes": "passed", "rbac": "passed", "system": "passed"}


# --- refusals, before any VM ---------------------------------------------------------------------

def test_egress_none_without_bundle_is_refused_creating_nothing():
    result = invoke("lab.up", "--egress", "none", "--k0s-binary", str(STANDIN), "--lab", AIRGAP_LAB, check=False)
    assert result.returncode == 1
    assert "--egress none without images" in result.stderr
    assert "--airgap" in result.stderr and "--airgap-bundle PATH" in result.stderr
    assert lab_leftovers(AIRGAP_LAB) == []


def test_bundle_lacking_an_image_is_refused_before_any_vm(tmp_path):
    omitted = next(line for line in subprocess.run(
        [sys.executable, str(STANDIN), "airgap", "list-images"], capture_output=True, text=True, check=True,
    ).stdout.splitlines() if "coredns" in line)
    bundle = _bundle(tmp_path / "partial.tar", "--omit", omitted)
    try:
        result = invoke("lab.up", "--egress", "none", "--airgap-bundle", str(bundle), "--k0s-binary", str(STANDIN),
                        "--lab", AIRGAP_LAB, check=False)
        assert result.returncode == 1
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"lack image {omitted}" in errors[0], result.stderr
        conn = libvirt.open("qemu:///system")
        try:
            assert k0slab_domains(conn, AIRGAP_LAB) == []
        finally:
            conn.close()
    finally:
        invoke("lab.down", "--lab", AIRGAP_LAB, check=False)


# --- the default lab: NAT -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nat_lab():
    try:
        _timed_up(NAT_LAB, "--nodes", "2")
        yield NAT_LAB
    finally:
        invoke("lab.down", "--lab", NAT_LAB, check=False)


def test_default_lab_has_nat_route_resolver_ca_and_is_ready(nat_lab):
    assert _network(nat_lab).find("forward").get("mode") == "nat"
    _assert_route_and_resolver(nat_lab, ["node1", "node2"])
    assert all(ready_of(item) == "True" for item in cluster_nodes(nat_lab).values())
    config = yaml.safe_load(node_exec(nat_lab, "node1", "cat /etc/k0s/k0s.yaml").stdout)
    assert config["spec"]["telemetry"] == {"enabled": False} and "images" not in config["spec"]
    timesync = node_exec(nat_lab, "node1", "systemctl is-enabled systemd-timesyncd", check=False).stdout.strip()
    assert timesync == "enabled"


def test_smoke_passes_on_the_default_lab(nat_lab, tmp_path):
    _smoke_nodes_rbac_system(nat_lab, tmp_path)


# --- the airgap lab: no egress, a bundle ---------------------------------------------------------

@pytest.fixture(scope="module")
def airgap_lab(tmp_path_factory):
    bundle = _bundle(tmp_path_factory.mktemp("bundle") / "k0s-and-busybox.tar", "--image", SMOKE_IMAGE)
    try:
        _timed_up(AIRGAP_LAB, "--nodes", "2", "--egress", "none", "--airgap-bundle", str(bundle))
        yield AIRGAP_LAB, bundle
    finally:
        invoke("lab.down", "--lab", AIRGAP_LAB, check=False)


def test_airgap_lab_is_ready_with_the_bundle_on_every_node(airgap_lab):
    lab, bundle = airgap_lab
    assert _network(lab).find("forward") is None  # nothing leaves the lab bridge
    _assert_route_and_resolver(lab, ["node1", "node2"])  # kube-router still needs the route (§9)
    assert all(ready_of(item) == "True" for item in cluster_nodes(lab).values())
    expected = hashlib.sha256(bundle.read_bytes()).hexdigest()
    for node in ("node1", "node2"):
        held = node_exec(lab, node, f"sha256sum /var/lib/k0s/images/{bundle.name}").stdout.split()[0]
        assert held == expected, node
        masked = node_exec(lab, node, "systemctl is-enabled systemd-timesyncd", check=False).stdout.strip()
        assert masked == "masked-runtime", node  # systemd.mask= on the kernel command line
    config = yaml.safe_load(node_exec(lab, "node1", "cat /etc/k0s/k0s.yaml").stdout)
    assert config["spec"]["images"] == {"default_pull_policy": "Never"}
    # The binary and bundle disks are root's (lent to QEMU's user by libvirt), like everything else.
    home = data_home()
    assert {"k0s-amd64.img", "airgap-amd64.img"} <= {p.name for p in LabDir(lab).disks_dir.iterdir()}
    assert [str(p) for p in [home, *home.rglob("*")] if readable_by_nobody(p)] == []


def test_smoke_passes_on_the_airgap_lab(airgap_lab, tmp_path):
    _smoke_nodes_rbac_system(airgap_lab[0], tmp_path, "--image", SMOKE_IMAGE)


# --- a lab whose images cannot be had fails fast ---------------------------------------------------

def test_a_node_without_route_fails_within_three_minutes_naming_why():
    """A pre-start hook: node2's default route is deleted as soon as it answers SSH, before k0s
    starts there, so it can pull nothing; lab.up must say so long before its 900 s timeout."""
    proc = subprocess.Popen([*INVOKE, "lab.up", "--nodes", "2", "--k0s-binary", str(STANDIN), "--lab", FAIL_LAB],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), line) for line in proc.stdout))
    reader.start()
    try:
        deadline = time.monotonic() + 600
        while invoke("vm.exec", "node2", "--lab", FAIL_LAB, "--", "ip", "route", "del", "default",
                     check=False, timeout=60).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "node2 never answered before k0s"
            time.sleep(1)
        stderr = proc.stderr.read()
        proc.wait(timeout=1200)
        reader.join()
        started = next(t for t, line in lines if "node2: k0s worker started" in line)
        failed_after = time.monotonic() - started
        TIMINGS[f"{FAIL_LAB} failure after k0s start s"] = round(failed_after, 1)
        assert proc.returncode == 1
        assert failed_after < FAIL_FAST_S, f"failed only after {failed_after:.0f}s"
        error = next(line for line in stderr.splitlines() if line.startswith("error:"))
        assert "node node2 cannot become Ready" in error, error
        assert "default route" in error and "logs" in error, error
        logs = LabDir(FAIL_LAB).logs_dir
        assert str(logs) in error
        assert (logs / "pods-wide.txt").read_text().startswith("NAMESPACE"), "kubectl get pods -A -o wide not saved"
        assert (logs / "node2.k0s.log").is_file()
    finally:
        if proc.poll() is None:
            proc.kill()
        invoke("lab.down", "--lab", FAIL_LAB, check=False)
