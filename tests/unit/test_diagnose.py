"""The early-failure diagnosis on Pod and Node JSON shaped as the Kubernetes API returns it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from k0slab.checks import diagnose

FIXTURES = Path(__file__).parent / "fixtures" / "diagnose"


def _load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def _no_logs(namespace: str, pod: str, container: str) -> str:
    return ""


def test_image_pull_failure_names_node_pod_image_and_egress_fix():
    cause = diagnose.definite_cause(_load("pods-image-pull.json"), "nat", _no_logs)
    assert cause is not None
    assert cause.node == "node2"
    assert cause.subject == "pod kube-system/kube-router-7xk2p, container install-cni-bins"
    assert cause.reason.startswith("ImagePullBackOff: ...")
    assert "lookup quay.io on 10.213.4.1:53" in cause.reason
    assert "default route and /etc/resolv.conf" in cause.fix and "--egress none --airgap" in cause.fix
    assert "invoke lab.ssh node2 -- 'ip route; cat /etc/resolv.conf'" in cause.fix
    assert cause.message.startswith("node node2 cannot become Ready: pod kube-system/kube-router-7xk2p")


def test_image_pull_failure_without_egress_points_at_the_bundle():
    cause = diagnose.definite_cause(_load("pods-image-pull.json"), "none", _no_logs)
    assert cause is not None
    assert "no bundle provides quay.io/k0sproject/cni-node:1.7.1-k0s.0" in cause.fix
    assert "--airgap-bundle PATH" in cause.fix


def test_coredns_without_nameservers_is_named_before_the_crash_limit():
    asked = []

    def logs(namespace: str, pod: str, container: str) -> str:
        asked.append((namespace, pod, container))
        return "[INFO] plugin/reload: Running configuration SHA512 = 1b2c\nplugin/forward: no nameservers found\n"

    cause = diagnose.definite_cause(_load("pods-coredns-no-nameservers.json"), "nat", logs)
    assert asked == [("kube-system", "coredns-6d9f49dcbb-q8m4t", "coredns")]
    assert cause is not None and cause.node == "node1"
    assert cause.reason == "no nameservers found in /etc/resolv.conf (restarted 2 times)"
    assert "k0slab.nameserver=" in cause.fix


def test_a_few_crashes_are_patience_many_are_a_cause():
    pods = _load("pods-crashloop.json")
    unreachable = "E1201 dial tcp 10.96.0.1:443: connect: network is unreachable"
    status = pods["items"][0]["status"]["containerStatuses"][0]
    status["restartCount"] = diagnose.CRASH_RESTARTS_LIMIT
    assert diagnose.definite_cause(pods, "nat", lambda *_: unreachable) is None
    status["restartCount"] = diagnose.CRASH_RESTARTS_LIMIT + 2
    cause = diagnose.definite_cause(pods, "nat", lambda *_: unreachable + "\n")
    assert cause is not None and cause.node == "node3"
    assert cause.reason == ("CrashLoopBackOff after 5 restarts, last log: "
                            "E1201 dial tcp 10.96.0.1:443: connect: network is unreachable")
    assert "logs -n kube-system metrics-server-7cdb99bf49-k5l2m -c metrics-server --previous" in cause.fix
    assert cause.fix.startswith("node node3 likely has no default route")


def test_unscheduled_and_initialising_pods_are_no_cause():
    pods = _load("pods-image-pull.json")
    pods["items"] = pods["items"][:1]  # only the Pending, unscheduled CoreDNS
    assert diagnose.definite_cause(pods, "nat", _no_logs) is None


def test_stall_watch_fires_only_after_the_window_without_change():
    now = [0.0]
    watch = diagnose.StallWatch(100.0, clock=lambda: now[0])
    nodes = _load("nodes-not-ready.json")["items"]
    pods = _load("pods-crashloop.json")
    signature = diagnose.progress_signature(pods, nodes)
    assert watch.stalled_for(signature) is None
    now[0] = 99.0
    assert watch.stalled_for(signature) is None
    # A restart count going up is no progress...
    pods["items"][0]["status"]["containerStatuses"][0]["restartCount"] = 9
    now[0] = 101.0
    assert watch.stalled_for(diagnose.progress_signature(pods, nodes)) == pytest.approx(101.0)
    # ...a container becoming ready is.
    pods["items"][0]["status"]["containerStatuses"][0]["ready"] = True
    assert watch.stalled_for(diagnose.progress_signature(pods, nodes)) is None


def test_stall_window_follows_the_slowest_accelerator():
    assert diagnose.stall_window(["kvm", "kvm"]) == diagnose.STALL_WINDOW_S["kvm"]
    assert diagnose.stall_window(["kvm", "tcg"]) == diagnose.STALL_WINDOW_S["tcg"]
    assert diagnose.stall_window([None]) == diagnose.STALL_WINDOW_S["tcg"]


def test_not_ready_summary_gives_reason_and_message():
    summary = diagnose.not_ready_summary(_load("nodes-not-ready.json")["items"])
    assert summary.startswith("node2 Ready=False (KubeletNotReady: container runtime network not ready")


def _sandbox_event(count: int, message: str) -> dict:
    """A core/v1 Event as the kubelet's recorder posts it (repeats folded into count)."""
    return {"items": [{
        "kind": "Event", "type": "Warning", "reason": "FailedCreatePodSandBox", "count": count,
        "involvedObject": {"kind": "Pod", "namespace": "kube-system", "name": "kube-proxy-9fz2k"},
        "source": {"component": "kubelet", "host": "node3"}, "message": message,
    }]}


PAUSE_PULL_FAILED = (
    'Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox image '
    '"registry.k8s.io/pause:3.9": failed to pull image "registry.k8s.io/pause:3.9": failed to resolve '
    'reference "registry.k8s.io/pause:3.9": dial tcp: lookup registry.k8s.io on 10.213.1.1:53: no such host')


def test_a_pause_image_that_cannot_be_pulled_is_definite_once_repeated():
    # Only ContainerCreating shows in the pods; the event says why.
    assert diagnose.definite_cause({"items": []}, "nat", _no_logs, _sandbox_event(1, PAUSE_PULL_FAILED)) is None
    cause = diagnose.definite_cause({"items": []}, "nat", _no_logs, _sandbox_event(4, PAUSE_PULL_FAILED))
    assert cause is not None and cause.node == "node3"
    assert cause.subject == "pod kube-system/kube-proxy-9fz2k"
    assert cause.reason.startswith("FailedCreatePodSandBox (x4): ") and "no such host" in cause.reason
    assert "cannot pull registry.k8s.io/pause:3.9" in cause.fix
    offline = diagnose.definite_cause({"items": []}, "none", _no_logs, _sandbox_event(4, PAUSE_PULL_FAILED))
    assert offline is not None and "--airgap-bundle PATH" in offline.fix


def test_a_sandbox_waiting_for_the_cni_is_normal():
    network = ("Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for "
               "sandbox: plugin type=\"bridge\" failed (add): cni plugin not initialized")
    assert diagnose.definite_cause({"items": []}, "nat", _no_logs, _sandbox_event(9, network)) is None
