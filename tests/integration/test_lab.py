"""Issue 4 end to end with the k0s stand-in: `lab.up --nodes 3`, a fast re-run, status, kubeconfig,
a killed worker reported and repaired, and `lab.down` leaving nothing behind."""
from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET

import pytest
import yaml

from k0slab.core.state import LabDir

from .conftest import STANDIN, cluster_nodes, invoke, lab_leftovers, node_exec, ready_of, set_knobs

pytestmark = pytest.mark.vm
LAB = "itlab"


@pytest.fixture(scope="module")
def lab():
    try:
        started = time.monotonic()
        result = invoke("lab.up", "--nodes", "3", "--k0s-binary", str(STANDIN), "--lab", LAB)
        yield {"output": result.stdout + result.stderr, "seconds": time.monotonic() - started}
    finally:
        invoke("lab.down", "--lab", LAB, check=False)


def test_three_nodes_ready_with_lab_ips(lab):
    status = json.loads(invoke("lab.status", "--json", "--lab", LAB).stdout)
    ips = {n["name"]: n["ip"] for n in status["nodes"]}
    nodes = cluster_nodes(LAB)
    assert sorted(nodes) == ["node1", "node2", "node3"]
    for name, item in nodes.items():
        assert ready_of(item) == "True"
        internal = [a["address"] for a in item["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal == [ips[name]]
    # The node image has no Python (k0s needs none): the stand-in runs on the one it brings along.
    assert node_exec(LAB, "node1", "ls /usr/bin/python3* 2>/dev/null || echo none").stdout.strip() == "none"
    for phase in ("resolve k0s binary", "create network and VMs", "wait for SSH", "install and start k0s on every node",
                  "wait for /readyz and every node Ready", "fetch the admin kubeconfig"):
        assert f"{phase}: done in" in lab["output"]
    # What each node cost in SSH, per phase (the benchmark reports the busiest node).
    remote = json.loads((LabDir(LAB).logs_dir / "up-timings.json").read_text())["remote"]
    print(f"SSH per node: { {name: phases['total'] for name, phases in remote.items()} }")
    for name in ("node1", "node2", "node3"):
        for phase in ("wait for SSH", "push k0s binary and config", "install and start k0s on every node"):
            assert remote[name][phase]["connections"] >= 1 and remote[name][phase]["commands"] >= 1, (name, phase)
    # Where the time went, per node, as a picture beside up-timings.json.
    picture = ET.fromstring((LabDir(LAB).logs_dir / "up-timeline.svg").read_text())
    lanes = {t.text for t in picture.iter("{http://www.w3.org/2000/svg}text")}
    assert {"phases", "node1", "node2", "node3", "wait for SSH", "push k0s binary and config"} <= lanes


def test_status_json_describes_every_node(lab):
    status = json.loads(invoke("lab.status", "--json", "--lab", LAB).stdout)
    assert status["lab"] == LAB and status["kubeconfig"].endswith("/kubeconfig")
    roles = {n["name"]: n["role"] for n in status["nodes"]}
    assert roles == {"node1": "controller+worker", "node2": "worker", "node3": "worker"}
    for node in status["nodes"]:
        assert {"name", "role", "arch", "ip", "vm_state", "k0s_state", "ready"} <= set(node)
        observed = (node["vm_state"], node["k0s_state"], node["ready"], node["arch"])
        assert observed == ("Running", "running", True, "amd64")


def test_kubeconfig_points_at_the_controller_and_is_private(lab):
    path = invoke("lab.kubeconfig", "--lab", LAB).stdout.strip()
    status = json.loads(invoke("lab.status", "--json", "--lab", LAB).stdout)
    controller_ip = next(n["ip"] for n in status["nodes"] if n["name"] == "node1")
    config = yaml.safe_load(open(path).read())
    assert config["clusters"][0]["cluster"]["server"] == f"https://{controller_ip}:6443"
    import os
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
    # It works from another machine of the lab: the API answers with that kubeconfig over the network.
    invoke("vm.transfer", path, "node2:/tmp/admin.kubeconfig", "--lab", LAB)
    out = node_exec(LAB, "node2", "k0s kubectl --kubeconfig /tmp/admin.kubeconfig get --raw=/readyz").stdout
    assert out.strip() == "ok"


def test_join_token_is_invalidated_after_the_join(lab):
    listed = node_exec(LAB, "node1", "k0s token list --role worker 2>&1; ls /var/lib/k0s/manifests/k0slab/").stdout
    assert "bootstrap-token" not in listed


def test_second_up_is_a_fast_no_op(lab):
    started = time.monotonic()
    result = invoke("lab.up", "--nodes", "3", "--k0s-binary", str(STANDIN), "--lab", LAB)
    seconds = time.monotonic() - started
    assert "is up and unchanged" in result.stdout
    assert seconds < lab["seconds"] / 5


def test_user_demo_is_forbidden_from_listing_nodes(lab, tmp_path):
    """Issue 5: the seed's user, with the proof built in."""
    output = tmp_path / "demo.kubeconfig"
    result = invoke("lab.user", "demo", "--group", "development", "--output", str(output), "--check", "--lab", LAB)
    assert re.search(r"issuer:\s+CN=kubernetes-ca", result.stdout)
    assert re.search(r"subject:\s+O=development, CN=demo", result.stdout)
    assert "Forbidden" in result.stdout
    assert oct(output.stat().st_mode & 0o777) == "0o600"
    config = yaml.safe_load(output.read_text())
    import base64
    import subprocess

    cert = base64.b64decode(config["users"][0]["user"]["client-certificate-data"])
    shown = subprocess.run(["openssl", "x509", "-noout", "-subject", "-issuer"], input=cert, capture_output=True,
                           check=True).stdout.decode()
    assert "subject=O = development, CN = demo" in shown and "issuer=CN = kubernetes-ca" in shown
    status = json.loads(invoke("lab.status", "--json", "--lab", LAB).stdout)
    controller_ip = next(n["ip"] for n in status["nodes"] if n["name"] == "node1")
    assert config["clusters"][0]["cluster"]["server"] == f"https://{controller_ip}:6443"
    # The real API (over the network, from node2) says Forbidden to this certificate.
    invoke("vm.transfer", str(output), "node2:/tmp/demo.kubeconfig", "--lab", LAB)
    denied = node_exec(LAB, "node2", "k0s kubectl --kubeconfig /tmp/demo.kubeconfig get nodes", check=False)
    assert denied.returncode == 1
    assert ('Error from server (Forbidden): nodes is forbidden: User "demo" cannot list resource "nodes" '
            'in API group "" at the cluster scope') in denied.stderr


def test_user_bound_to_view_is_allowed_what_view_grants(lab):
    result = invoke("lab.user", "viewer", "--group", "development", "--clusterrole", "view", "--check", "--lab", LAB)
    assert "allowed" in result.stdout
    users = json.loads(invoke("lab.users", "--json", "--lab", LAB).stdout)
    assert {u["name"] for u in users} == {"demo", "viewer"}
    invoke("lab.user", "viewer", "--revoke", "--lab", LAB)
    bindings = node_exec(LAB, "node1", "k0s kubectl get clusterrolebindings -o name").stdout
    assert "k0slab-user-viewer" not in bindings


def test_smoke_nodes_and_rbac_pass_with_junit(lab, tmp_path):
    junit = tmp_path / "smoke.xml"
    report = tmp_path / "smoke.json"
    invoke("lab.smoke", "--only", "nodes,rbac", "--user", "demo", "--junit", str(junit), "--json", str(report),
           "--lab", LAB)
    import xml.etree.ElementTree as ET

    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert sorted(c.get("name") for c in cases) == ["nodes", "rbac"]
    assert all(c.find("failure") is None and c.find("error") is None and c.find("skipped") is None for c in cases)
    assert {r["name"]: r["verdict"] for r in json.loads(report.read_text())["results"]} == {
        "nodes": "passed", "rbac": "passed"}


def test_smoke_names_the_node_whose_heartbeats_stopped(lab, tmp_path):
    # The grace must outlast the kubelet's 10 s heartbeat, or healthy nodes flap NotReady between beats.
    set_knobs(LAB, "node1", {"node_grace_seconds": 25})
    set_knobs(LAB, "node3", {"stop_heartbeats": True})
    report = tmp_path / "smoke.json"
    try:
        time.sleep(30)
        result = invoke("lab.smoke", "--only", "nodes", "--timeout", "20", "--json", str(report), "--lab", LAB,
                        check=False)
        assert result.returncode == 1
        nodes = json.loads(report.read_text())["results"][0]
        assert nodes["verdict"] == "failed"
        assert "node3 is NotReady" in nodes["message"] and "node2" not in nodes["message"]
    finally:
        set_knobs(LAB, "node3", {"stop_heartbeats": False})


def test_a_killed_worker_is_reported_then_repaired_by_up(lab):
    conn_name = f"k0slab-{LAB}-node2"
    import libvirt

    libvirt.open("qemu:///system").lookupByName(conn_name).destroy()
    deadline = time.monotonic() + 120
    while True:
        status = json.loads(invoke("lab.status", "--json", "--lab", LAB).stdout)
        node2 = next(n for n in status["nodes"] if n["name"] == "node2")
        if not node2["ready"] or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert (node2["vm_state"], node2["ready"]) == ("Stopped", False)
    assert "NodeStatusUnknown" in node2["condition"]
    result = invoke("lab.up", "--nodes", "3", "--k0s-binary", str(STANDIN), "--lab", LAB)
    assert "node2 was Stopped: starting it" in result.stdout
    assert ready_of(cluster_nodes(LAB)["node2"]) == "True"


def test_more_nodes_adds_a_worker_and_keeps_the_others(lab):
    before = {name: item["metadata"].get("uid") or item["metadata"].get("creationTimestamp")
              for name, item in cluster_nodes(LAB).items()}
    result = invoke("lab.up", "--nodes", "4", "--k0s-binary", str(STANDIN), "--lab", LAB)
    assert "node4: worker, amd64" in result.stdout
    for node in ("node1", "node2", "node3"):
        assert f"{node}: k0s already running" in result.stdout
    nodes = cluster_nodes(LAB)
    assert sorted(nodes) == ["node1", "node2", "node3", "node4"]
    assert all(ready_of(item) == "True" for item in nodes.values())
    assert {name: nodes[name]["metadata"].get("uid") or nodes[name]["metadata"].get("creationTimestamp")
            for name in before} == before


def test_down_leaves_nothing_behind(lab):
    assert lab_leftovers(LAB)
    started = time.monotonic()
    invoke("lab.down", "--lab", LAB)
    assert time.monotonic() - started < 30
    assert lab_leftovers(LAB) == []
