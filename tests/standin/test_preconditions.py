"""A node is Ready only when its images can be had, and kube-system says why not (contract §9, issue 13 §6)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import load_standin, start_controller, wait_for

from k0slab.checks import diagnose

HERE = Path(__file__).resolve().parent
V131_IMAGES = ["quay.io/k0sproject/calico-cni:v3.28.1-0", "quay.io/k0sproject/calico-kube-controllers:v3.28.1-0",
               "quay.io/k0sproject/calico-node:v3.28.1-0", "quay.io/k0sproject/coredns:1.11.3",
               "quay.io/k0sproject/apiserver-network-proxy-agent:v0.30.3", "quay.io/k0sproject/kube-proxy:v1.31.1",
               "quay.io/k0sproject/kube-router:v2.2.1-iptables1.8.9-0", "quay.io/k0sproject/cni-node:1.3.0-k0s.0",
               "registry.k8s.io/metrics-server/metrics-server:v0.7.2", "registry.k8s.io/pause:3.9"]
NETWORK_NOT_READY = "NetworkPluginNotReady"


def make_bundle(out: Path, *args: str) -> Path:
    subprocess.run([sys.executable, str(HERE / "make-airgap-bundle"), str(out), *args], check=True,
                   capture_output=True, text=True)
    return out


def pods(node) -> dict[str, dict]:
    listing = json.loads(node.ok("kubectl", "get", "pods", "-A", "-o", "json"))
    return {pod["metadata"]["labels"].get("k8s-app", pod["metadata"]["name"]): pod for pod in listing["items"]}


def waiting_reason(pod: dict) -> str | None:
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    return statuses[0].get("state", {}).get("waiting", {}).get("reason")


def ready_reason(node, name: str) -> tuple[str, str, str]:
    item = node.nodes()[name]
    ready = next(c for c in item["status"]["conditions"] if c["type"] == "Ready")
    return ready["status"], ready["reason"], ready["message"]


def single_node(make_node, name: str, prepare=None):
    node = make_node(name)
    if prepare:
        prepare(node)
    start_controller(node, "--single", f"--kubelet-extra-args=--hostname-override={name}")
    wait_for(lambda: name in node.nodes(), 20, f"node {name} registered")
    return node


def test_list_images_names_the_release_images__contract_9(make_node):
    node = make_node("li")
    assert node.ok("airgap", "list-images").split() == V131_IMAGES
    assert node.ok("airgap", "list-images", "--all").split() == V131_IMAGES + [
        "quay.io/k0sproject/envoy-distroless:v1.31.1"]
    v133 = node.ok("airgap", "list-images", "--all", env=node.env(K0S_STANDIN_VERSION="v1.33.4+k0s.0")).split()
    assert "quay.io/k0sproject/kube-proxy:v1.33.4" in v133 and "quay.io/k0sproject/pushgateway-ttl:1.4.0-k0s.0" in v133
    # lab.upgrade's drill goes v1.33 -> v1.34: the upgraded stand-in must know v1.34's images too.
    v134 = node.ok("airgap", "list-images", env=node.env(K0S_STANDIN_VERSION="v1.34.1+k0s.0")).split()
    assert "quay.io/k0sproject/coredns:1.13.1" in v134 and "quay.io/k0sproject/kube-proxy:v1.34.1" in v134
    unknown = node.k0s("airgap", "list-images", env=node.env(K0S_STANDIN_VERSION="v1.36.1+k0s.0"))
    assert unknown.returncode == 1 and "no image list for v1.36.1+k0s.0" in unknown.stderr


def test_egress_node_is_ready_with_the_kube_system_stack__contract_9(make_node):
    node = single_node(make_node, "eg")
    wait_for(lambda: node.ready_condition("eg") == "True", 20, "eg Ready")
    stack = pods(node)
    assert set(stack) == {"kube-router", "kube-proxy", "coredns", "konnectivity-agent", "metrics-server"}
    assert all(pod["status"]["phase"] == "Running" for pod in stack.values())
    table = node.ok("kubectl", "get", "pods", "-n", "kube-system", "-o", "wide").splitlines()
    assert table[0].split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] and "NODE" in table[0]
    assert all(" Running " in line and " eg " in line for line in table[1:])
    events = json.loads(node.ok("kubectl", "get", "events", "-n", "kube-system", "-o", "json"))
    assert events["items"] == []  # a node that can have its images fails no sandbox


def test_no_images_and_no_egress_means_no_pod_sandbox__contract_9(make_node):
    # Without the pause image containerd creates no sandbox: every pod stays ContainerCreating, and the
    # kubelet says why only in a FailedCreatePodSandBox event, whose count climbs with each attempt.
    node = single_node(make_node, "noeg", lambda n: n.remove_egress())
    wait_for(lambda: len(pods(node)) == 5, 20, "the kube-system stack")
    wait_for(lambda: {waiting_reason(pod) for pod in pods(node).values()} == {"ContainerCreating"}, 20, "no sandbox")
    status, reason, message = ready_reason(node, "noeg")
    assert (status, reason) == ("False", "KubeletNotReady") and NETWORK_NOT_READY in message

    def sandbox_events() -> list[dict]:
        listing = json.loads(node.ok("kubectl", "get", "events", "-A", "-o", "json"))
        return [e for e in listing["items"] if e["reason"] == "FailedCreatePodSandBox"]

    wait_for(lambda: len(sandbox_events()) == 5 and min(e["count"] for e in sandbox_events()) >= 2, 30,
             "a repeated FailedCreatePodSandBox event for every pod")
    event = sandbox_events()[0]
    assert event["type"] == "Warning" and event["source"] == {"component": "kubelet", "host": "noeg"}
    assert event["involvedObject"]["kind"] == "Pod" and event["involvedObject"]["name"] in {
        pod["metadata"]["name"] for pod in pods(node).values()}
    assert 'failed to get sandbox image "registry.k8s.io/pause:3.9"' in event["message"]
    assert "network is unreachable" in event["message"]
    # What k0slab reads from this: a definite cause, naming the node and the pause image.
    cause = diagnose.definite_cause({"items": []}, "nat", lambda *_: "",
                                    json.loads(node.ok("kubectl", "get", "events", "-A", "-o", "json")))
    assert cause is not None and cause.node == "noeg" and "registry.k8s.io/pause:3.9" in cause.fix


def test_pull_policy_never_and_an_image_missing_is_err_image_never_pull__contract_9(make_node, tmp_path):
    bundle = make_bundle(tmp_path / "bundle.tar", "--omit", "quay.io/k0sproject/kube-proxy:v1.31.1")
    node = make_node("never")
    node.remove_ca_certificates()
    node.path("/var/lib/k0s/images").mkdir(parents=True)
    node.path("/var/lib/k0s/images/bundle.tar").write_bytes(bundle.read_bytes())
    node.knobs(ready_delay_seconds=0.3, heartbeat_seconds=0.5)
    node.write_config()
    config = node.path("/etc/k0s/k0s.yaml")
    config.write_text(config.read_text() + "  images:\n    default_pull_policy: Never\n")
    node.ok("install", "controller", "--single", "--kubelet-extra-args=--hostname-override=never")
    node.ok("start")
    node.wait_ready()
    wait_for(lambda: waiting_reason(pods(node).get("kube-proxy", {})) == "ErrImageNeverPull", 20, "ErrImageNeverPull")
    message = pods(node)["kube-proxy"]["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert message == 'Container image "quay.io/k0sproject/kube-proxy:v1.31.1" is not present with pull policy of Never'


def test_complete_bundle_without_egress_is_ready__contract_9(make_node, tmp_path):
    bundle = make_bundle(tmp_path / "bundle.tar")

    def prepare(node):
        node.remove_ca_certificates()
        target = node.path("/var/lib/k0s/images/bundle.tar")
        target.parent.mkdir(parents=True)
        target.write_bytes(bundle.read_bytes())
    node = single_node(make_node, "gap", prepare)
    wait_for(lambda: node.ready_condition("gap") == "True", 20, "gap Ready from the bundle")
    assert all(pod["status"]["phase"] == "Running" for pod in pods(node).values())


def test_bundle_missing_the_cni_image_keeps_the_node_not_ready__contract_9(make_node, tmp_path):
    bundle = make_bundle(tmp_path / "partial.tar", "--omit", "quay.io/k0sproject/kube-router:v2.2.1-iptables1.8.9-0")

    def prepare(node):
        node.remove_ca_certificates()
        target = node.path("/var/lib/k0s/images/partial.tar")
        target.parent.mkdir(parents=True)
        target.write_bytes(bundle.read_bytes())
    node = single_node(make_node, "part", prepare)
    wait_for(lambda: waiting_reason(pods(node).get("kube-router", {})) == "ImagePullBackOff", 20, "kube-router pull")
    assert pods(node)["kube-proxy"]["status"]["phase"] == "Running"
    assert ready_reason(node, "part")[0] == "False"


def test_no_nameserver_crash_loops_coredns_with_its_log__contract_9(make_node, tmp_path):
    bundle = make_bundle(tmp_path / "bundle.tar")

    def prepare(node):
        node.write("/etc/resolv.conf", "search lab\n")
        target = node.path("/var/lib/k0s/images/bundle.tar")
        target.parent.mkdir(parents=True)
        target.write_bytes(bundle.read_bytes())
    node = single_node(make_node, "nodns", prepare)
    wait_for(lambda: waiting_reason(pods(node).get("coredns", {})) == "CrashLoopBackOff", 20, "coredns crash loop")
    coredns = pods(node)["coredns"]["metadata"]["name"]
    log = node.ok("kubectl", "logs", "-n", "kube-system", coredns, "--previous", "--tail", "1")
    assert log == "Listen: no nameservers found\n"
    assert node.ready_condition("nodns") == "True"  # the CNI runs; only DNS is broken


def test_no_default_route_crash_loops_kube_router__contract_9(make_node, tmp_path):
    bundle = make_bundle(tmp_path / "bundle.tar")

    def prepare(node):
        node.remove_default_route()
        target = node.path("/var/lib/k0s/images/bundle.tar")
        target.parent.mkdir(parents=True)
        target.write_bytes(bundle.read_bytes())
    node = single_node(make_node, "noroute", prepare)
    wait_for(lambda: waiting_reason(pods(node).get("kube-router", {})) == "CrashLoopBackOff", 20, "kube-router loop")
    router = pods(node)["kube-router"]["metadata"]["name"]
    assert "connect: network is unreachable" in node.ok("kubectl", "logs", "-n", "kube-system", router, "-p")
    status, reason, message = ready_reason(node, "noroute")
    assert (status, reason) == ("False", "KubeletNotReady") and NETWORK_NOT_READY in message


@pytest.mark.parametrize("in_bundle", [True, False])
def test_workload_pod_runs_only_if_its_image_can_be_had__contract_9(make_node, tmp_path, in_bundle):
    bundle = make_bundle(tmp_path / "bundle.tar", *(["--image", "busybox:1.36"] if in_bundle else []))

    def prepare(node):
        node.remove_ca_certificates()
        target = node.path("/var/lib/k0s/images/bundle.tar")
        target.parent.mkdir(parents=True)
        target.write_bytes(bundle.read_bytes())
    node = single_node(make_node, "wl" + str(int(in_bundle)), prepare)
    node.write("/tmp/pod.yaml", """\
apiVersion: v1
kind: Pod
metadata: {name: probe, namespace: default}
spec:
  containers:
    - {name: probe, image: "busybox:1.36", imagePullPolicy: IfNotPresent}
""")
    node.ok("kubectl", "apply", "-f", "/tmp/pod.yaml")
    expected = "Running" if in_bundle else "ImagePullBackOff"
    wait_for(lambda: expected in node.ok("kubectl", "get", "pods"), 20, f"probe {expected}")


def test_docker_save_archives_count_by_their_repo_tags__contract_9(make_node, monkeypatch, tmp_path):
    images = load_standin(make_node("ds"), monkeypatch, "images")
    archive = tmp_path / "saved.tar"
    manifest = json.dumps([{"Config": "c.json", "RepoTags": ["busybox:1.36", "quay.io/k0sproject/coredns:1.11.3"],
                            "Layers": []}]).encode()
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    assert images.archive_images(str(archive)) == {"docker.io/library/busybox:1.36",
                                                   "quay.io/k0sproject/coredns:1.11.3"}
    (tmp_path / "junk").write_text("not an archive")
    assert images.archive_images(str(tmp_path / "junk")) == set()
