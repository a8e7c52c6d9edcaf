"""lab.smoke checks against canned `k0s kubectl` answers shaped like a real 3-node k0s v1.31 cluster.

node1 is controller+worker (tainted NoSchedule), node2 and node3 are workers; the kube-system pods are
k0s's defaults with kube-router. A fake controller maps kubectl command patterns to answers and
records every command, so each test can also assert what was cleaned up.

Time is simulated (ClusterClock): it moves only when a command runs or smoke sleeps, so how many
samples fit into a check's bound does not depend on how busy the machine running the tests is.
"""
from __future__ import annotations

import copy
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from k0slab.checks import smoke
from k0slab.core.errors import K0slabError
from k0slab.vms.remote import CommandResult
from k0slab.checks.smoke import ClusterExpectation, ExpectedNode, SmokeSettings, Verdict
from k0slab.core.state import LabState, NodeState

FIXTURES = Path(__file__).parent / "fixtures" / "smoke"
USER_KUBECONFIG = "/var/lib/k0slab/users/demo.conf"
FAST = SmokeSettings(check_timeout_s=0.05, poll_interval_s=0, restart_sample_s=0)
EXPECTATION = ClusterExpectation(
    nodes=(
        ExpectedNode("node1", "10.213.1.11", "amd64", "controller+worker"),
        ExpectedNode("node2", "10.213.1.12", "amd64", "worker"),
        ExpectedNode("node3", "10.213.1.13", "amd64", "worker"),
    ),
    k0s_version="v1.31.1+k0s.0",
)
NS = r"k0slab-smoke-\w+-[0-9a-f]{6}"
NSLOOKUP_OK = (
    "Server:\t\t10.96.0.10\nAddress:\t10.96.0.10:53\n\n\n"
    "Name:\tkubernetes.default.svc.cluster.local\nAddress: 10.96.0.1\n\n"
)
USER_FORBIDDEN = (
    'Error from server (Forbidden): nodes is forbidden: User "demo" cannot list resource "nodes" '
    'in API group "" at the cluster scope\n'
)
ADMIN_FORBIDDEN = (
    'Error from server (Forbidden): nodes is forbidden: User "admin" cannot list resource "nodes" '
    'in API group "" at the cluster scope\n'
)


# How long one kubectl answer takes in simulated time: five fit into FAST's bound.
COMMAND_S = 0.01


class ClusterClock:
    """time.monotonic and time.sleep for smoke and tenacity: still except while a command runs or smoke sleeps.

    With the real clock a check's bound and the gap between two kube-system samples were spent by
    the test machine's own slowness: under load the first sample could use up a 0.05 s bound, and
    the poll then looked only once.
    """

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> ClusterClock:
    simulated = ClusterClock()
    monkeypatch.setattr(time, "monotonic", simulated.monotonic)
    monkeypatch.setattr(time, "sleep", simulated.sleep)
    return simulated


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


Answer = CommandResult | dict[str, Any] | str | Callable[[str], CommandResult]


@dataclass
class FakeController:
    """A controller whose commands are answered by the first matching pattern; unmatched commands fail loudly."""

    name: str = "node1"
    routes: list[tuple[re.Pattern[str], list[Answer]]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    stdins: list[str] = field(default_factory=list)

    def on(self, pattern: str, *answers: Answer) -> None:
        """Answer commands matching `pattern` with `answers` in turn; the last one repeats.

        Later registrations win, so a test can override one route of the healthy cluster.
        """
        self.routes.insert(0, (re.compile(pattern), list(answers)))

    def run(self, command: str, *, stdin: str | None = None, check: bool = True,
            timeout: float | None = None) -> CommandResult:
        self.calls.append(command)
        time.sleep(COMMAND_S)
        if stdin is not None:
            self.stdins.append(stdin)
        for pattern, answers in self.routes:
            if pattern.search(command):
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                if callable(answer):
                    return answer(command)
                if isinstance(answer, CommandResult):
                    return CommandResult(command, answer.exit_code, answer.stdout, answer.stderr)
                text = answer if isinstance(answer, str) else json.dumps(answer)
                return CommandResult(command, 0, text, "")
        raise AssertionError(f"unexpected command: {command}")

    def put_text(self, text: str, path: str, mode: int = 0o644) -> None:
        raise AssertionError("smoke never writes files with put_text")

    def commands(self, pattern: str) -> list[str]:
        return [c for c in self.calls if re.search(pattern, c)]


def fail(stderr: str, code: int = 1) -> CommandResult:
    return CommandResult("", code, "", stderr)


def probe_pod(name: str, node: str, phase: str, *, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run-once probe pod as the API reports it."""
    done = phase in ("Succeeded", "Failed")
    if state is None:
        state = {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1,
                                "reason": "Completed" if phase == "Succeeded" else "Error",
                                "startedAt": "2024-10-07T09:40:03Z", "finishedAt": "2024-10-07T09:40:04Z"}}
    ready_reason = {"reason": "PodCompleted"} if done else {"reason": "ContainersNotReady",
                                                            "message": "containers with unready status: [probe]"}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "k0slab-smoke-x-000000", "uid": f"5c1d2e3f-{name}"},
        "spec": {"nodeName": node, "restartPolicy": "Never",
                 "containers": [{"name": "probe", "image": "busybox:1.36"}]},
        "status": {
            "phase": phase, "hostIP": "10.213.1.12", "podIP": "10.244.1.9",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "False", **ready_reason},
                {"type": "ContainersReady", "status": "False", **ready_reason},
            ],
            "containerStatuses": [{"name": "probe", "image": "docker.io/library/busybox:1.36", "ready": False,
                                   "restartCount": 0, "started": not done, "state": state}],
        },
    }


def web_pods() -> dict[str, Any]:
    def pod(suffix: str, node: str, ip: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"web-7f8b9c6d5-{suffix}", "uid": f"9a8b7c6d-{suffix}",
                         "labels": {"app": "k0slab-smoke-web", "pod-template-hash": "7f8b9c6d5"}},
            "spec": {"nodeName": node, "containers": [{"name": "web", "image": "busybox:1.36"}]},
            "status": {"phase": "Running", "podIP": ip, "hostIP": "10.213.1.12",
                       "containerStatuses": [{"name": "web", "ready": True, "restartCount": 0,
                                              "state": {"running": {"startedAt": "2024-10-07T09:41:02Z"}}}]},
        }
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
            "items": [pod("h2kqz", "node2", "10.244.1.7"), pod("p9x4m", "node3", "10.244.2.8")]}


def deployment(available: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "generation": 1},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": available,
                   "availableReplicas": available, "unavailableReplicas": 2 - available},
    }


def service(name: str, cluster_ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "type": "ClusterIP",
                     "ports": [{"port": 443 if name == "kubernetes" else 80, "protocol": "TCP"}]}}


EMPTY_EVENTS = {"apiVersion": "v1", "kind": "List", "items": [], "metadata": {"resourceVersion": ""}}


def healthy_cluster() -> FakeController:
    fake = FakeController()
    fake.on(r"get nodes -o json$", fixture("nodes-healthy.json"))
    fake.on(r"get pods -n kube-system -o json$", fixture("kube-system-pods-healthy.json"))
    fake.on(r"get events -n \S+ -o json$", EMPTY_EVENTS)
    fake.on(r"create -f -$", "created\n")
    fake.on(rf"delete namespace {NS} --ignore-not-found", "namespace deleted\n")
    fake.on(r"get service kubernetes -n default -o json$", service("kubernetes", "10.96.0.1"))
    fake.on(r"get pod dns-probe ", probe_pod("dns-probe", "node3", "Succeeded"))
    fake.on(r"logs dns-probe ", NSLOOKUP_OK)
    fake.on(r"get deployment web ", deployment(2))
    fake.on(r"get pods -n \S+ -l app=k0slab-smoke-web -o json$", web_pods())
    fake.on(r"get service web ", service("web", "10.101.44.7"))
    fake.on(r"get pod client ", probe_pod("client", "node2", "Succeeded"))
    fake.on(r"logs client ", "ok http://10.101.44.7:80/ node3\nok http://10.244.2.8:8080/ node3\n")
    fake.on(r"get --raw /apis/metrics.k8s.io/v1beta1/nodes$", fixture("node-metrics.json"))
    fake.on(r"^KUBECONFIG=/var/lib/k0s/pki/admin.conf k0s kubectl \S+ get nodes$",
            "NAME    STATUS   ROLES           AGE   VERSION\nnode1   Ready    control-plane   31m   v1.31.1+k0s\n")
    fake.on(rf"^KUBECONFIG={USER_KUBECONFIG} k0s kubectl \S+ get nodes$", fail(USER_FORBIDDEN))
    return fake


def run(fake: FakeController, only: list[str] | None = None, user: str | None = USER_KUBECONFIG,
        **kwargs: Any) -> smoke.SmokeReport:
    return smoke.run_smoke(fake, EXPECTATION, only, user, settings=kwargs.pop("settings", FAST), **kwargs)


def single(fake: FakeController, check: str, **kwargs: Any) -> smoke.CheckResult:
    (result,) = run(fake, [check], **kwargs).results
    return result


def expect(result: smoke.CheckResult, verdict: Verdict) -> None:
    assert result.verdict is verdict, f"{result.name}: {result.verdict}: {result.message}\n" + "\n".join(
        result.evidence)


def assert_namespaces_cleaned(fake: FakeController) -> None:
    created = {json.loads(s)["items"][0]["metadata"]["name"] for s in fake.stdins
               if json.loads(s)["items"][0]["kind"] == "Namespace"}
    deleted = {re.search(rf"delete namespace ({NS})", c).group(1) for c in fake.commands("delete namespace")}
    assert created, "the check created no namespace"
    assert created == deleted


def nodes_with(change: Callable[[dict[str, dict[str, Any]]], None]) -> dict[str, Any]:
    nodes = fixture("nodes-healthy.json")
    change({node["metadata"]["name"]: node for node in nodes["items"]})
    return nodes


# ---------------------------------------------------------------------------------------------------
# A healthy cluster
# ---------------------------------------------------------------------------------------------------

def test_healthy_cluster_passes_every_check_and_cleans_up() -> None:
    fake = healthy_cluster()
    report = run(fake)

    assert [r.name for r in report.results] == ["nodes", "system", "dns", "workload", "rbac", "metrics"]
    for result in report.results:
        expect(result, Verdict.PASSED)
        assert not result.cleanup_errors
    assert report.ok
    by_name = {r.name: r for r in report.results}
    assert by_name["nodes"].message == (
        "3 nodes Ready with the lab IPs, expected arches and kubelet v1.31.1+k0s"
    )
    assert by_name["dns"].message == "a pod on node3 resolved kubernetes.default.svc.cluster.local to 10.96.0.1"
    assert by_name["workload"].message == (
        "2 replicas rolled out on node2, node3; from a pod on node2 the service and the pods on node3 answered"
    )
    assert by_name["rbac"].message == 'user "demo" is Forbidden from listing nodes; the admin may'
    assert "node1: cpu 187m, memory 1019Mi (window 20.047s)" in by_name["metrics"].evidence
    assert_namespaces_cleaned(fake)
    # Every kubectl ran on the controller with the contract's admin kubeconfig unless it was the user's.
    for command in fake.calls:
        assert command.startswith(("KUBECONFIG=/var/lib/k0s/pki/admin.conf k0s kubectl --request-timeout=30s ",
                                   f"KUBECONFIG={USER_KUBECONFIG} k0s kubectl "))


def test_workload_spreads_one_replica_per_schedulable_node_and_pins_the_client() -> None:
    fake = healthy_cluster()
    expect(single(fake, "workload"), Verdict.PASSED)

    created = [json.loads(s)["items"] for s in fake.stdins]
    deployment_obj = next(o for items in created for o in items if o["kind"] == "Deployment")
    # node1 is tainted NoSchedule (controller+worker), so only node2 and node3 take replicas.
    assert deployment_obj["spec"]["replicas"] == 2
    spread = deployment_obj["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["whenUnsatisfiable"] == "DoNotSchedule"
    client = next(o for items in created for o in items if o["kind"] == "Pod" and o["metadata"]["name"] == "client")
    assert client["spec"]["nodeName"] == "node2"
    # The client fetches the service and the replica on the other node, not the one beside it.
    assert client["spec"]["containers"][0]["command"][-2:] == ["http://10.101.44.7:80/", "http://10.244.2.8:8080/"]


# ---------------------------------------------------------------------------------------------------
# nodes
# ---------------------------------------------------------------------------------------------------

def _not_ready(nodes: dict[str, dict[str, Any]]) -> None:
    ready = next(c for c in nodes["node3"]["status"]["conditions"] if c["type"] == "Ready")
    ready.update(status="Unknown", reason="NodeStatusUnknown", message="Kubelet stopped posting node status.")


def test_not_ready_node_is_named_with_its_condition() -> None:
    fake = healthy_cluster()
    fake.on(r"get nodes -o json$", nodes_with(_not_ready))
    result = single(fake, "nodes")
    expect(result, Verdict.FAILED)
    assert result.message == (
        "node3 is NotReady (Ready=Unknown, NodeStatusUnknown: Kubelet stopped posting node status.)"
    )
    assert "node3: Ready=Unknown arch=amd64 internal-ip=10.213.1.13 kubelet=v1.31.1+k0s" in result.evidence
    # It kept looking until the check's bound, not just once.
    assert len(fake.commands("get nodes -o json")) > 1


def test_node_that_heals_during_the_wait_passes() -> None:
    fake = healthy_cluster()
    fake.on(r"get nodes -o json$", nodes_with(_not_ready), nodes_with(_not_ready), fixture("nodes-healthy.json"))
    expect(single(fake, "nodes", settings=SmokeSettings(check_timeout_s=5, poll_interval_s=0)), Verdict.PASSED)


def test_missing_node_is_named() -> None:
    fake = healthy_cluster()
    nodes = fixture("nodes-healthy.json")
    nodes["items"] = nodes["items"][:2]
    fake.on(r"get nodes -o json$", nodes)
    result = single(fake, "nodes")
    expect(result, Verdict.FAILED)
    assert result.message == (
        "expected 3 nodes (node1, node2, node3), the API lists 2 (node1, node2); "
        "node3 is missing (no Node object; its kubelet never registered)"
    )


def test_wrong_internal_ip_is_named_with_both_addresses() -> None:
    def nat_address(nodes: dict[str, dict[str, Any]]) -> None:
        nodes["node2"]["status"]["addresses"][0]["address"] = "192.168.122.57"

    fake = healthy_cluster()
    fake.on(r"get nodes -o json$", nodes_with(nat_address))
    result = single(fake, "nodes")
    expect(result, Verdict.FAILED)
    assert result.message == "node2 INTERNAL-IP is 192.168.122.57, expected the lab IP 10.213.1.12"


def test_wrong_arch_label_and_kubelet_version_are_both_reported() -> None:
    def drifted(nodes: dict[str, dict[str, Any]]) -> None:
        nodes["node1"]["metadata"]["labels"]["kubernetes.io/arch"] = "arm64"
        nodes["node3"]["status"]["nodeInfo"]["kubeletVersion"] = "v1.30.4+k0s"

    fake = healthy_cluster()
    fake.on(r"get nodes -o json$", nodes_with(drifted))
    result = single(fake, "nodes")
    expect(result, Verdict.FAILED)
    assert result.message == (
        "node1 has kubernetes.io/arch=arm64, expected amd64; node3 runs kubelet v1.30.4+k0s, expected v1.31.1+k0s"
    )


def test_api_down_is_a_failure_with_kubectls_words() -> None:
    fake = healthy_cluster()
    fake.on(r"get nodes -o json$", fail("The connection to the server localhost:6443 was refused - "
                                        "did you specify the right host or port?"))
    result = single(fake, "nodes")
    expect(result, Verdict.FAILED)
    assert result.message.endswith("failed: The connection to the server localhost:6443 was refused - "
                                   "did you specify the right host or port?")


# ---------------------------------------------------------------------------------------------------
# system
# ---------------------------------------------------------------------------------------------------

def _with_restarts(pods: dict[str, Any], pod_name: str, restarts: int) -> dict[str, Any]:
    pods = copy.deepcopy(pods)
    pod = next(p for p in pods["items"] if p["metadata"]["name"] == pod_name)
    container = pod["status"]["containerStatuses"][0]
    container["restartCount"] = restarts
    # What the kubelet reports once a container has exited and been started again.
    container["lastState"] = container["lastState"] or {"terminated": {
        "exitCode": 1, "reason": "Error", "startedAt": "2024-10-07T09:13:05Z", "finishedAt": "2024-10-07T09:33:40Z"}}
    return pods


def test_crashlooping_coredns_is_named_with_reason_restarts_and_events() -> None:
    crashloop = fixture("kube-system-pods-crashloop.json")
    fake = healthy_cluster()
    fake.on(r"get pods -n kube-system -o json$", crashloop, _with_restarts(crashloop, "coredns-6d9f49dcbb-q7m4t", 6))
    fake.on(r"get events -n kube-system -o json$", fixture("kube-system-events-crashloop.json"))
    fake.on(r"logs coredns-6d9f49dcbb-q7m4t -n kube-system -c coredns --previous",
            "[INFO] plugin/reload: Running configuration SHA512 = 1b226df7\n"
            "[FATAL] plugin/loop: Loop (127.0.0.1:55953 -> :53) detected for zone \".\"\n")
    result = single(fake, "system")

    expect(result, Verdict.FAILED)
    assert result.message.startswith(
        "kube-system/coredns-6d9f49dcbb-q7m4t on node3 is Running: container coredns waiting CrashLoopBackOff: "
        "back-off 2m40s restarting failed container=coredns"
    )
    assert result.message.endswith("; container coredns restarts climbing 5->6 (last: terminated Error (exit 1))")
    events = [line for line in result.evidence if line.startswith("  event ")]
    assert events[-1] == (
        "  event 2024-10-07T09:30:55Z Warning BackOff pod/coredns-6d9f49dcbb-q7m4t: Back-off restarting failed "
        f"container coredns in pod coredns-6d9f49dcbb-q7m4t_kube-system({_uid(crashloop)}) (x27)"
    )
    # Only the broken pod's events: kube-router's Pulled event is left out.
    assert not any("kube-router" in line for line in events)
    assert '    [FATAL] plugin/loop: Loop (127.0.0.1:55953 -> :53) detected for zone "."' in result.evidence


def _uid(pods: dict[str, Any]) -> str:
    return next(p for p in pods["items"] if p["metadata"]["name"] == "coredns-6d9f49dcbb-q7m4t")["metadata"]["uid"]


def test_restarts_climbing_on_a_ready_container_fail() -> None:
    healthy = fixture("kube-system-pods-healthy.json")
    fake = healthy_cluster()
    fake.on(r"get pods -n kube-system -o json$", healthy, _with_restarts(healthy, "kube-proxy-x2c7p", 1))
    fake.on(r"logs kube-proxy-x2c7p ", "")
    result = single(fake, "system")
    expect(result, Verdict.FAILED)
    assert result.message == (
        "kube-system/kube-proxy-x2c7p: container kube-proxy restarts climbing 0->1 (last: terminated Error (exit 1))"
    )


def test_missing_system_component_is_named() -> None:
    pods = fixture("kube-system-pods-healthy.json")
    pods["items"] = [p for p in pods["items"] if not p["metadata"]["name"].startswith("metrics-server-")]
    fake = healthy_cluster()
    fake.on(r"get pods -n kube-system -o json$", pods)
    result = single(fake, "system")
    expect(result, Verdict.FAILED)
    assert result.message == "no metrics-server pod in kube-system"


def test_healthy_system_samples_twice_some_seconds_apart() -> None:
    fake = healthy_cluster()
    settings = SmokeSettings(check_timeout_s=1, poll_interval_s=0, restart_sample_s=0.05)
    result = single(fake, "system", settings=settings)
    expect(result, Verdict.PASSED)
    assert len(fake.commands("get pods -n kube-system")) == 3  # first sample, poll, sample after the gap
    assert result.message.startswith("12 kube-system pods Running and Ready, no restarts; found coredns, kube-proxy")


# ---------------------------------------------------------------------------------------------------
# dns
# ---------------------------------------------------------------------------------------------------

def test_dns_timeout_shows_phase_events_and_logs_and_still_cleans_up() -> None:
    fake = healthy_cluster()
    fake.on(r"get pod dns-probe ", probe_pod("dns-probe", "node2", "Running",
                                             state={"running": {"startedAt": "2024-10-07T09:40:03Z"}}))
    fake.on(r"logs dns-probe ", ";; connection timed out; no servers could be reached\n")
    fake.on(r"get events -n k0slab-smoke-dns-\w+ -o json$", {"kind": "List", "items": [{
        "metadata": {"name": "dns-probe.17fc2a", "creationTimestamp": "2024-10-07T09:40:02Z"},
        "involvedObject": {"kind": "Pod", "name": "dns-probe"}, "type": "Normal", "reason": "Started",
        "message": "Started container probe", "count": 1, "lastTimestamp": "2024-10-07T09:40:03Z"}]})
    result = single(fake, "dns")

    expect(result, Verdict.FAILED)
    assert re.fullmatch(rf"pod {NS}/dns-probe still Running after 0.05s \(probe: running\)", result.message)
    assert "pod dns-probe on node2: Running, 0/1 ready, 0 restarts" in result.evidence
    assert "  condition ContainersReady=False (ContainersNotReady: containers with unready status: [probe])" \
        in result.evidence
    assert "    ;; connection timed out; no servers could be reached" in result.evidence
    assert "  event 2024-10-07T09:40:03Z Normal Started pod/dns-probe: Started container probe" in result.evidence
    assert_namespaces_cleaned(fake)


def test_dns_lookup_that_fails_names_the_node_and_the_error() -> None:
    fake = healthy_cluster()
    fake.on(r"get pod dns-probe ", probe_pod("dns-probe", "node3", "Failed"))
    fake.on(r"logs dns-probe ", "Server:\t\t10.96.0.10\nAddress:\t10.96.0.10:53\n\n"
                                ";; connection timed out; no servers could be reached\n")
    result = single(fake, "dns")
    expect(result, Verdict.FAILED)
    assert result.message == (
        "nslookup kubernetes.default.svc.cluster.local failed in a pod on node3: "
        ";; connection timed out; no servers could be reached"
    )
    assert_namespaces_cleaned(fake)


def test_dns_probe_image_is_configurable() -> None:
    fake = healthy_cluster()
    settings = SmokeSettings(check_timeout_s=0.05, poll_interval_s=0, probe_image="registry.lab:5000/busybox:1.36")
    expect(single(fake, "dns", settings=settings), Verdict.PASSED)
    pod = next(json.loads(s)["items"][0] for s in fake.stdins if "dns-probe" in s)
    assert pod["spec"]["containers"][0]["image"] == "registry.lab:5000/busybox:1.36"
    # Offline labs run it from a bundle: present images are never pulled again.
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert pod["spec"]["containers"][0]["command"] == ["nslookup", "kubernetes.default.svc.cluster.local"]


# ---------------------------------------------------------------------------------------------------
# workload
# ---------------------------------------------------------------------------------------------------

def test_cross_node_pod_network_failure_names_the_unreachable_pod() -> None:
    fake = healthy_cluster()
    fake.on(r"get pod client ", probe_pod("client", "node2", "Failed"))
    fake.on(r"logs client ", "ok http://10.101.44.7:80/ node2\nfail http://10.244.2.8:8080/\n")
    result = single(fake, "workload")
    expect(result, Verdict.FAILED)
    assert result.message == "from a pod on node2: pod web-7f8b9c6d5-p9x4m on node3 (10.244.2.8:8080) did not answer"
    assert_namespaces_cleaned(fake)


def test_rollout_that_never_completes_reports_replicas_and_events() -> None:
    fake = healthy_cluster()
    fake.on(r"get deployment web ", deployment(1))
    result = single(fake, "workload")
    expect(result, Verdict.FAILED)
    assert re.fullmatch(rf"deployment {NS}/web has 1/2 replicas available after 0.05s "
                        r"\(schedulable nodes: node2, node3\)", result.message)
    assert not fake.commands("get pod client")
    assert_namespaces_cleaned(fake)


# ---------------------------------------------------------------------------------------------------
# rbac
# ---------------------------------------------------------------------------------------------------

def test_admin_forbidden_is_a_failure_with_the_text() -> None:
    fake = healthy_cluster()
    fake.on(r"^KUBECONFIG=/var/lib/k0s/pki/admin.conf k0s kubectl \S+ get nodes$", fail(ADMIN_FORBIDDEN))
    result = single(fake, "rbac")
    expect(result, Verdict.FAILED)
    assert result.message == f"the admin may not list nodes: {ADMIN_FORBIDDEN.strip()}"


def test_user_allowed_to_list_nodes_fails() -> None:
    fake = healthy_cluster()
    fake.on(rf"^KUBECONFIG={USER_KUBECONFIG} k0s kubectl \S+ get nodes$", "NAME STATUS\nnode1 Ready\n")
    result = single(fake, "rbac")
    expect(result, Verdict.FAILED)
    assert result.message.startswith(f"the user of {USER_KUBECONFIG} listed nodes; expected Forbidden")


def test_user_rejected_for_another_reason_is_not_mistaken_for_forbidden() -> None:
    fake = healthy_cluster()
    fake.on(rf"^KUBECONFIG={USER_KUBECONFIG} k0s kubectl \S+ get nodes$",
            fail("error: You must be logged in to the server (Unauthorized)\n"))
    result = single(fake, "rbac")
    expect(result, Verdict.FAILED)
    assert result.message.endswith("failed, but not with Forbidden: error: You must be logged in to the server "
                                   "(Unauthorized)")


def test_rbac_without_user_is_not_run_and_not_passed() -> None:
    fake = healthy_cluster()
    report = run(fake, ["rbac"], user=None)
    (result,) = report.results
    expect(result, Verdict.NOT_RUN)
    assert result.message == "not run: no lab user; create one with invoke lab.user NAME --group G"
    assert report.count(Verdict.PASSED) == 0
    assert not fake.calls


# ---------------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------------

def test_node_without_metrics_is_named() -> None:
    metrics = fixture("node-metrics.json")
    metrics["items"] = metrics["items"][:2]
    fake = healthy_cluster()
    fake.on(r"get --raw /apis/metrics.k8s.io/v1beta1/nodes$", metrics)
    result = single(fake, "metrics")
    expect(result, Verdict.FAILED)
    assert result.message == "no metrics for node3 after 0.05s (metrics-server serves node1, node2)"


def test_metrics_api_unavailable_fails_with_the_api_error() -> None:
    fake = healthy_cluster()
    fake.on(r"get --raw /apis/metrics.k8s.io/v1beta1/nodes$",
            fail("Error from server (ServiceUnavailable): the server is currently unable to handle the request\n"))
    result = single(fake, "metrics")
    expect(result, Verdict.FAILED)
    assert result.message.endswith("(ServiceUnavailable): the server is currently unable to handle the request")


# ---------------------------------------------------------------------------------------------------
# Suite behaviour: errors, cleanup, --only, sonobuoy
# ---------------------------------------------------------------------------------------------------

def test_check_that_raises_is_an_error_and_the_suite_goes_on() -> None:
    fake = healthy_cluster()

    def dropped(command: str) -> CommandResult:
        raise ConnectionResetError("SSH connection to node1 dropped")

    fake.on(r"get nodes -o json$", dropped)
    fake.on(r"get --raw /apis/metrics.k8s.io/v1beta1/nodes$", "{not json")
    report = run(fake, ["nodes", "rbac", "metrics"])
    nodes, rbac, metrics = report.results
    expect(nodes, Verdict.ERROR)
    assert nodes.message == "ConnectionResetError: SSH connection to node1 dropped"
    expect(rbac, Verdict.PASSED)
    expect(metrics, Verdict.ERROR)
    assert metrics.message.startswith("JSONDecodeError: ")
    assert not report.ok


def test_cleanup_failure_is_reported_without_changing_the_verdict() -> None:
    fake = healthy_cluster()
    fake.on(r"delete namespace ", fail('Error from server (InternalError): Internal error occurred: '
                                       'failed to delete namespace "x"\n'))
    result = single(fake, "dns")
    expect(result, Verdict.PASSED)
    assert len(result.cleanup_errors) == 1
    assert re.fullmatch(rf"cleanup failed: delete namespace {NS}: `kubectl delete namespace {NS} "
                        r"--ignore-not-found --timeout=0.05s` failed: Error from server \(InternalError\): .*",
                        result.cleanup_errors[0])


def test_namespace_is_deleted_even_when_its_creation_fails() -> None:
    fake = healthy_cluster()
    fake.on(r"create -f -$", fail('Error from server (Forbidden): namespaces "k0slab-smoke-dns-1a2b3c" '
                                  'is forbidden: exceeded quota\n'))
    result = single(fake, "dns")
    expect(result, Verdict.FAILED)
    assert len(fake.commands("delete namespace k0slab-smoke-dns-")) == 1


def test_only_runs_the_named_checks_in_suite_order() -> None:
    assert smoke.select_checks(["rbac,nodes"]) == ["nodes", "rbac"]
    assert smoke.select_checks(["metrics", " dns "]) == ["dns", "metrics"]
    assert smoke.select_checks(None) == ["nodes", "system", "dns", "workload", "rbac", "metrics"]
    assert smoke.select_checks(None, sonobuoy=True)[-1] == "sonobuoy"


def test_only_with_an_unknown_name_names_it_and_lists_the_valid_ones() -> None:
    with pytest.raises(K0slabError) as caught:
        smoke.run_smoke(FakeController(), EXPECTATION, ["nodes", "dnss"])
    assert caught.value.message == "unknown smoke check 'dnss'"
    assert caught.value.hint == "valid checks: nodes, system, dns, workload, rbac, metrics, sonobuoy"


def test_only_sonobuoy_without_a_binary_says_how_to_pass_one() -> None:
    with pytest.raises(K0slabError, match="sonobuoy check needs a sonobuoy binary"):
        smoke.select_checks(["sonobuoy"])
    with pytest.raises(K0slabError, match="names no check"):
        smoke.select_checks([","])


@dataclass
class PushingController(FakeController):
    pushed: list[tuple[Path, str, int | None]] = field(default_factory=list)

    def put_file(self, local: Path, path: str, mode: int | None = None) -> None:
        self.pushed.append((local, path, mode))


def test_sonobuoy_is_pushed_run_judged_and_deleted(tmp_path: Path) -> None:
    binary = tmp_path / "sonobuoy"
    binary.write_bytes(b"\x7fELF")
    fake = PushingController()
    fake.on(r"sonobuoy run --mode quick --wait=60 ", "18:02:11 Sonobuoy has completed. Use `sonobuoy retrieve`\n")
    fake.on(r"sonobuoy status --json ", {
        "plugins": [{"plugin": "e2e", "node": "global", "status": "complete", "result-status": "passed",
                     "result-counts": {"passed": 1}}],
        "status": "complete", "tar-info": {"name": "202410071802_sonobuoy_5e1c.tar.gz", "size": 41231}})
    fake.on(r"sonobuoy retrieve ", "Plugin: e2e\nStatus: passed\nTotal: 7407\nPassed: 1\nFailed: 0\nSkipped: 7406\n")
    fake.on(r"sonobuoy delete --wait ", "deleted\n")
    report = smoke.run_smoke(fake, EXPECTATION, ["sonobuoy"], None, sonobuoy=binary, settings=FAST)

    (result,) = report.results
    expect(result, Verdict.PASSED)
    assert fake.pushed == [(binary, "/usr/local/bin/sonobuoy", 0o755)]
    namespaces = {re.search(r"--namespace (\S+)", c).group(1) for c in fake.calls}
    assert len(namespaces) == 1 and re.fullmatch(r"k0slab-smoke-sonobuoy-[0-9a-f]{6}", namespaces.pop())
    assert fake.calls[-1].startswith("/usr/local/bin/sonobuoy delete --wait ")
    assert all("--kubeconfig /var/lib/k0s/pki/admin.conf" in c for c in fake.calls)
    assert "  Passed: 1" in result.evidence


def test_sonobuoy_binary_must_exist(tmp_path: Path) -> None:
    with pytest.raises(K0slabError, match="does not exist"):
        smoke.run_smoke(PushingController(), EXPECTATION, None, None, sonobuoy=tmp_path / "nope")


# ---------------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------------

def mixed_report() -> smoke.SmokeReport:
    fake = healthy_cluster()
    fake.on(r"get nodes -o json$", nodes_with(_not_ready))
    fake.on(r"get --raw /apis/metrics.k8s.io/v1beta1/nodes$", lambda command: 1 / 0)
    return run(fake, ["nodes", "dns", "rbac", "metrics"], user=None)


def test_junit_parses_with_the_right_counts_and_cases() -> None:
    report = mixed_report()
    root = ET.fromstring(smoke.to_junit_xml(report))

    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    for element in (root, suite):
        assert element.get("name") == "k0slab-smoke"
        assert (element.get("tests"), element.get("failures"), element.get("errors"), element.get("skipped")) == (
            "4", "1", "1", "1")
        assert float(element.get("time")) >= 0
    (version,) = suite.findall("properties/property")
    assert (version.get("name"), version.get("value")) == ("k0s.version", report.k0s_version)
    assert report.k0s_version.startswith("v1.")
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert list(cases) == ["nodes", "dns", "rbac", "metrics"]
    assert {case.get("classname") for case in cases.values()} == {"k0slab.smoke"}
    failure = cases["nodes"].find("failure")
    assert failure.get("message") == (
        "node3 is NotReady (Ready=Unknown, NodeStatusUnknown: Kubelet stopped posting node status.)"
    )
    assert "node3: Ready=Unknown" in failure.text and "hint: on the node: journalctl" in failure.text
    assert cases["metrics"].find("error").get("message") == "ZeroDivisionError: division by zero"
    assert cases["rbac"].find("skipped").get("message").startswith("not run: no lab user")
    assert cases["dns"].find("failure") is None and "resolved" in cases["dns"].find("system-out").text


def test_json_has_the_same_content() -> None:
    report = mixed_report()
    data = json.loads(smoke.to_json(report))
    assert data["suite"] == "k0slab-smoke" and data["ok"] is False
    assert data["counts"] == {"tests": 4, "passed": 1, "failed": 1, "error": 1, "not_run": 1}
    results = {r["name"]: r for r in data["results"]}
    assert results["nodes"]["verdict"] == "failed"
    assert results["nodes"]["message"] == report.results[0].message
    assert results["nodes"]["evidence"] == report.results[0].evidence
    assert results["rbac"]["verdict"] == "not_run"
    assert set(results["dns"]) == {"name", "description", "hint", "verdict", "message", "duration_s", "evidence",
                                   "cleanup_errors"}


def test_table_shows_verdicts_and_the_evidence_of_failures() -> None:
    console = Console(record=True, width=200)
    console.print(smoke.render_table(mixed_report()))
    text = console.export_text()
    assert re.search(r"nodes\s+failed\s+\d+\.\d+s\s+node3 is NotReady", text)
    assert re.search(r"rbac\s+not run", text)
    assert "node3: Ready=Unknown arch=amd64" in text


def test_table_prints_kubernetes_brackets_literally() -> None:
    unready = "containers with unready status: [probe]"
    result = smoke.CheckResult("dns", "d", "h", Verdict.FAILED, unready, 0.1,
                               [f"  condition Ready=False (ContainersNotReady: {unready})"])
    console = Console(record=True, width=200)
    console.print(smoke.render_table(smoke.SmokeReport("2024-10-07T09:40:00+00:00", 0.1, [result])))
    text = console.export_text()
    assert text.count("[probe]") == 3  # table, headline and evidence: rich must not read it as markup


# ---------------------------------------------------------------------------------------------------
# Expectations
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("k0s", "kubelet"), [("v1.31.1+k0s.0", "v1.31.1+k0s"), ("v1.30.4+k0s.1", "v1.30.4+k0s"),
                                              ("v1.33.0-rc.1+k0s.0", "v1.33.0-rc.1+k0s")])
def test_kubelet_version_is_the_kubernetes_part_of_the_k0s_version(k0s: str, kubelet: str) -> None:
    assert smoke.kubelet_version_for(k0s) == kubelet


def test_malformed_k0s_version_is_a_user_error() -> None:
    with pytest.raises(K0slabError, match="'1.31.1' is not of the form"):
        smoke.kubelet_version_for("1.31.1")


def test_expectation_from_lab_state_keeps_k0s_nodes_and_the_cni_pods() -> None:
    def node(name: str, index: int, role: str, arch: str = "amd64") -> NodeState:
        return NodeState(name=name, index=index, arch=arch, cpus=2, memory_mib=2048, disk_bytes=10 << 30,
                         image="debian-12", mac=f"52:54:00:00:01:{index:02x}", ip=f"10.213.1.{index}", role=role)

    state = LabState(name="dev", subnet_index=1, network="k0slab-dev", bridge="k0slab-dev", k0s_version="v1.31.1+k0s.0",
                     nodes={"node3": node("node3", 13, "worker", "arm64"), "node1": node("node1", 11, "controller"),
                            "node2": node("node2", 12, "worker"), "spare": node("spare", 14, "none")})
    expectation = ClusterExpectation.from_lab(state, cni="calico")
    assert [n.name for n in expectation.nodes] == ["node1", "node2", "node3"]
    assert [n.name for n in expectation.kubelet_nodes] == ["node2", "node3"]
    assert expectation.nodes[2] == ExpectedNode("node3", "10.213.1.13", "arm64", "worker")
    assert "calico-node" in expectation.system_components and "kube-router" not in expectation.system_components
