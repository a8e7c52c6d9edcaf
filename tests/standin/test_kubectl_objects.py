"""kubectl create / get / delete of namespaces and objects as the product uses them (issues 17, 18)."""
from __future__ import annotations

import json
import tarfile
import time

from conftest import start_controller, wait_for



def test_namespace_lifecycle_like_kubectl(make_node):
    node = start_controller(make_node("ns"))
    assert node.ok("kubectl", "create", "namespace", "team-a") == "namespace/team-a created\n"
    again = node.k0s("kubectl", "create", "namespace", "team-a")
    assert (again.returncode, again.stderr.strip()) == (1, 'Error from server (AlreadyExists): namespaces "team-a" '
                                                           "already exists")
    assert node.ok("kubectl", "get", "namespace", "team-a").split()[3:5] == ["team-a", "Active"]
    assert node.ok("kubectl", "delete", "namespace", "team-a") == 'namespace "team-a" deleted\n'
    gone = node.k0s("kubectl", "get", "namespace", "team-a")
    assert (gone.returncode, gone.stderr.strip()) == (1, 'Error from server (NotFound): namespaces "team-a" not found')


def test_create_from_a_list_on_stdin(make_node):
    node = start_controller(make_node("cr"))
    objects = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "smoke"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "smoke"}}]}
    assert node.ok("kubectl", "create", "-f", "-", stdin=json.dumps(objects)) == \
        "namespace/smoke created\nconfigmap/c created\n"


def test_cordon_drain_uncordon_like_kubectl(make_node):
    node = start_controller(make_node("dr"), "--enable-worker", "--no-taints",
                            "--kubelet-extra-args=--hostname-override=dr")
    wait_for(lambda: node.ready_condition("dr") == "True", 20, "dr Ready")
    wait_for(lambda: "coredns" in node.ok("kubectl", "get", "pods", "-n", "kube-system"), 20, "coredns")
    refused = node.k0s("kubectl", "drain", "dr", "--timeout=30s")
    assert refused.returncode == 1 and "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets" in refused.stderr
    assert node.ok("kubectl", "get", "nodes").splitlines()[1].split()[1] == "Ready,SchedulingDisabled"
    drained = node.k0s("kubectl", "drain", "dr", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=30s")
    assert drained.returncode == 0, drained.stderr
    assert drained.stdout.startswith("node/dr already cordoned\n") and drained.stdout.endswith("node/dr drained\n")
    assert "evicting pod kube-system/coredns-" in drained.stdout and "kube-proxy" not in drained.stdout
    time.sleep(3)  # the controller's next pass: the evicted coredns replica has no schedulable node
    coredns = [p for p in json.loads(node.ok("kubectl", "get", "pods", "-n", "kube-system", "-o", "json"))["items"]
               if p["metadata"]["labels"]["k8s-app"] == "coredns"]
    assert [p["spec"].get("nodeName") for p in coredns] == [None]
    assert node.ok("kubectl", "uncordon", "dr") == "node/dr uncordoned\n"
    assert node.ok("kubectl", "get", "nodes").splitlines()[1].split()[1] == "Ready"


def test_backup_then_restore_on_a_fresh_node__contract_10(make_node):
    source = start_controller(make_node("bk"))
    source.ok("kubectl", "create", "namespace", "kept")
    missing = source.k0s("backup", "--save-path", "/nope")
    assert missing.returncode == 1 and "the save-path directory (/nope) does not exist" in missing.stderr
    source.path("/backups").mkdir()
    saved = source.ok("backup", "--save-path", "/backups")
    archive = next(source.path("/backups").glob("k0s_backup_*.tar.gz"))
    assert saved.strip() == f"Done! Backup saved to /backups/{archive.name}"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"pki/ca.crt", "pki/ca.key", "k0s.yaml", "etcd-snapshot.db", "manifests"} <= names
    source.ok("stop")
    overlapping = source.k0s("restore", f"/backups/{archive.name}")
    assert overlapping.returncode == 1 and "already exists and is not empty" in overlapping.stderr

    target = make_node("rs")
    target.path("/in").mkdir()
    target.path("/etc/k0s").mkdir(parents=True)
    (target.path("/in") / archive.name).write_bytes(archive.read_bytes())
    target.ok("restore", f"/in/{archive.name}", "--config-out", "/etc/k0s/k0s.yaml")
    assert target.path("/var/lib/k0s/pki/ca.key").read_bytes() == source.path("/var/lib/k0s/pki/ca.key").read_bytes()
    assert "kind: ClusterConfig" in target.path("/etc/k0s/k0s.yaml").read_text()
    target.knobs(ready_delay_seconds=0.3)
    target.ok("install", "controller", "-c", "/etc/k0s/k0s.yaml")
    target.ok("start")
    target.api_port, target.join_port = source.api_port, source.join_port  # the archived k0s.yaml's ports
    target.wait_ready()
    assert target.ok("kubectl", "get", "namespace", "kept").splitlines()[1].split()[:2] == ["kept", "Active"]
