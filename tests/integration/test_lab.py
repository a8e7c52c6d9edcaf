"""Issue 4 end to end with the k0s stand-in: `lab.up --nodes 3`, a fast re-run, status, kubeconfig,
a killed worker reported and repaired, and `lab.down` leaving nothing behind."""
from __future__ import annotations

import json
import time

import pytest
import yaml

from .conftest import STANDIN, invoke, lab_leftovers, node_exec, set_knobs

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


def _nodes_json() -> dict[str, dict]:
    out = node_exec(LAB, "node1", "k0s kubectl get nodes -o json").stdout
    return {item["metadata"]["name"]: item for item in json.loads(out)["items"]}


def _ready(item: dict) -> str:
    return next(c["status"] for c in item["status"]["conditions"] if c["type"] == "Ready")


def test_three_nodes_ready_with_lab_ips(lab):
    status = json.loads(invoke("lab.status", "--json", "--lab", LAB).stdout)
    ips = {n["name"]: n["ip"] for n in status["nodes"]}
    nodes = _nodes_json()
    assert sorted(nodes) == ["node1", "node2", "node3"]
    for name, item in nodes.items():
        assert _ready(item) == "True"
        internal = [a["address"] for a in item["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal == [ips[name]]
    for phase in ("resolve k0s binary", "create network and VMs", "wait for SSH", "install and start workers",
                  "wait for /readyz and every node Ready", "fetch the admin kubeconfig"):
        assert f"{phase}: done in" in lab["output"]


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


def test_a_killed_worker_is_reported_then_repaired_by_up(lab):
    set_knobs(LAB, "node1", {"node_grace_seconds": 8})
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
    assert _ready(_nodes_json()["node2"]) == "True"


def test_down_leaves_nothing_behind(lab):
    assert lab_leftovers(LAB)
    started = time.monotonic()
    invoke("lab.down", "--lab", LAB)
    assert time.monotonic() - started < 30
    assert lab_leftovers(LAB) == []
