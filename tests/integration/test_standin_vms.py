"""Issue 3: the k0s stand-in in two real VMs, driven by hand through its k0s command line
(contract sections 2, 4, 7): a controller+worker on one VM, a worker joined from the other
over the lab network, both Ready with their lab IPs; stopping the worker VM makes it NotReady."""
from __future__ import annotations

import json
import time

import pytest

from .conftest import STANDIN, cluster_nodes, invoke, node_exec, ready_of, set_knobs

pytestmark = pytest.mark.vm
LAB = "itstandin"


@pytest.fixture(scope="module")
def two_vms():
    try:
        for name in ("cp", "wk"):
            invoke("vm.launch", name, "--memory", "1G", "--lab", LAB)
        ips = {row["name"]: row["ipv4"] for row in json.loads(invoke("vm.list", "--json", "--lab", LAB).stdout)}
        for name in ips:
            invoke("vm.transfer", str(STANDIN), f"{name}:/usr/local/bin/k0s", "--lab", LAB)
        yield ips
    finally:
        for name in ("cp", "wk"):
            invoke("vm.delete", name, "--purge", "--lab", LAB, check=False)


def test_controller_and_worker_join_over_the_lab_network(two_vms):
    cp, wk = two_vms["cp"], two_vms["wk"]
    set_knobs(LAB, "cp", {"node_grace_seconds": 25})  # longer than the 10 s heartbeat
    node_exec(LAB, "cp", f"mkdir -p /etc/k0s && k0s config create > /etc/k0s/k0s.yaml && "
              f"sed -i 's/address: .*/address: {cp}/' /etc/k0s/k0s.yaml && "
              "k0s config validate --config /etc/k0s/k0s.yaml")
    node_exec(LAB, "cp", f"k0s install controller --enable-worker --no-taints -c /etc/k0s/k0s.yaml "
              f"--kubelet-extra-args=--node-ip={cp} && k0s start")
    deadline = time.monotonic() + 120
    while node_exec(LAB, "cp", "k0s kubectl get --raw=/readyz", check=False).stdout.strip() != "ok":
        assert time.monotonic() < deadline, "controller never became ready"
        time.sleep(2)
    token = node_exec(LAB, "cp", "k0s token create --role=worker --expiry 10m").stdout.strip()
    node_exec(LAB, "wk", f"mkdir -p /etc/k0s && echo {token} > /etc/k0s/k0stoken && "
              f"k0s install worker --token-file /etc/k0s/k0stoken --kubelet-extra-args=--node-ip={wk} && k0s start")
    deadline = time.monotonic() + 120
    while True:
        nodes = cluster_nodes(LAB, "cp")
        if set(nodes) == {"cp", "wk"} and all(ready_of(n) == "True" for n in nodes.values()):
            break
        assert time.monotonic() < deadline, f"nodes never Ready: {nodes}"
        time.sleep(2)
    for name, ip in (("cp", cp), ("wk", wk)):
        addresses = {a["type"]: a["address"] for a in nodes[name]["status"]["addresses"]}
        assert addresses["InternalIP"] == ip
    assert "Role: worker" in node_exec(LAB, "wk", "k0s status").stdout


def test_stopping_the_worker_vm_makes_it_notready_of(two_vms):
    invoke("vm.stop", "wk", "--force", "--lab", LAB)
    deadline = time.monotonic() + 60
    while ready_of(cluster_nodes(LAB, "cp")["wk"]) == "True":
        assert time.monotonic() < deadline, "wk stayed Ready after its VM stopped"
        time.sleep(2)
    assert ready_of(cluster_nodes(LAB, "cp")["wk"]) == "Unknown"
    assert ready_of(cluster_nodes(LAB, "cp")["cp"]) == "True"
