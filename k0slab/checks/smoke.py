"""`lab.smoke`: does the cluster really work, and if not, why not.

Every check talks to the API through `k0s kubectl ... -o json` on the controller (the contract's admin
kubeconfig), so it sees exactly what a user would, with no HTTP client of our own. Each check gives a
verdict with the evidence it saw: a failed smoke run must say which node, pod or container is wrong
without the user having to run kubectl themselves. Objects a check creates live in a namespace of
their own that is deleted afterwards, whatever the verdict.
"""
from __future__ import annotations

import json
import re
import secrets
import shlex
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from tenacity import Retrying, retry_if_exception_type, retry_if_result, stop_after_delay, wait_fixed

from k0slab.core import cancel
from k0slab.core.errors import K0slabError
from k0slab.cluster.k0s.bootstrap import ADMIN_KUBECONFIG
from k0slab.vms.remote import CommandResult, Runner
from k0slab.core.state import LabState

SUITE_NAME = "k0slab-smoke"
JUNIT_CLASSNAME = "k0slab.smoke"
DNS_NAME = "kubernetes.default.svc.cluster.local"
SONOBUOY_REMOTE_PATH = "/usr/local/bin/sonobuoy"
# Roles whose node runs a kubelet and so registers a Node object; a plain controller does not.
KUBELET_ROLES = frozenset({"worker", "controller+worker"})
DEFAULT_SYSTEM_COMPONENTS = ("coredns", "kube-proxy", "konnectivity-agent", "kube-router", "metrics-server")
CNI_POD_PREFIX = {"kuberouter": "kube-router", "calico": "calico-node"}
MANAGED_LABELS = {"app.kubernetes.io/managed-by": "k0slab", "app.kubernetes.io/part-of": SUITE_NAME}
_K0S_VERSION_RE = re.compile(r"(v\d+\.\d+\.\d+(?:-[0-9A-Za-z.]+)?)\+k0s\.\d+")
_FORBIDDEN_RE = re.compile(r'Error from server \(Forbidden\): nodes is forbidden: User "(?P<user>[^"]*)" cannot list')
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------
# What the cluster should look like, how long to wait, and what came out
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExpectedNode:
    name: str
    ip: str  # lab IP, which must be the node's INTERNAL-IP (k0s issue 1669 shows what goes wrong otherwise)
    arch: str  # k0s / Kubernetes arch name: amd64, arm64
    role: str  # controller, controller+worker, worker

    @property
    def runs_kubelet(self) -> bool:
        return self.role in KUBELET_ROLES


@dataclass(frozen=True)
class ClusterExpectation:
    nodes: tuple[ExpectedNode, ...]
    k0s_version: str  # e.g. v1.31.1+k0s.0
    # Name prefixes of the kube-system pods that must exist; the CNI entry depends on the network provider.
    system_components: tuple[str, ...] = DEFAULT_SYSTEM_COMPONENTS

    @property
    def kubelet_version(self) -> str:
        return kubelet_version_for(self.k0s_version)

    @property
    def kubelet_nodes(self) -> tuple[ExpectedNode, ...]:
        return tuple(node for node in self.nodes if node.runs_kubelet)

    @classmethod
    def from_lab(cls, state: LabState, cni: str = "kuberouter") -> ClusterExpectation:
        """The expectation for a lab brought up by lab.up: its k0s nodes and version, and its CNI's pods."""
        if not state.k0s_version:
            raise K0slabError(f"lab {state.name!r} has no k0s version recorded", "run invoke lab.up first")
        nodes = tuple(
            ExpectedNode(name=node.name, ip=node.ip, arch=node.arch, role=node.role)
            for node in sorted(state.nodes.values(), key=lambda n: n.index)
            if node.role != "none"
        )
        cni_pod = CNI_POD_PREFIX.get(cni)
        components = tuple(c for c in DEFAULT_SYSTEM_COMPONENTS if c != "kube-router") + ((cni_pod,) if cni_pod else ())
        return cls(nodes=nodes, k0s_version=state.k0s_version, system_components=components)


def kubelet_version_for(k0s_version: str) -> str:
    """The kubelet version a k0s release reports: `v1.31.1+k0s.0` runs kubelet `v1.31.1+k0s`."""
    match = _K0S_VERSION_RE.fullmatch(k0s_version)
    if not match:
        raise K0slabError(
            f"k0s version {k0s_version!r} is not of the form vX.Y.Z+k0s.N", "use a k0s release tag like v1.31.1+k0s.0"
        )
    return f"{match.group(1)}+k0s"


# Longest wait `lab.smoke --timeout` accepts per check: an hour is far beyond any healthy check.
MAX_CHECK_TIMEOUT_S = 3600.0
DEFAULT_PROBE_IMAGE = "docker.io/library/busybox:1.36.1"


def check_probe_image(image: str) -> str:
    """A workload image pinned by tag or digest: `latest` or no tag would pull on every node."""
    last = image.rsplit("/", 1)[-1]
    if "@" not in image and (":" not in last or last.endswith(":latest")):
        raise K0slabError(f"smoke image {image!r} is not pinned by tag",
                          f"give a tagged image such as {DEFAULT_PROBE_IMAGE}")
    return image


@dataclass(frozen=True)
class SmokeSettings:
    check_timeout_s: float = 180.0  # total bound on the waits of one check
    timeouts: dict[str, float] = field(default_factory=dict)  # per-check overrides, e.g. {"workload": 300}
    poll_interval_s: float = 2.0
    restart_sample_s: float = 5.0  # gap between the two kube-system samples that detect climbing restarts
    request_timeout_s: float = 30.0  # kubectl --request-timeout
    # Needs sh, nslookup, wget and httpd. Pinned by tag and used with imagePullPolicy IfNotPresent,
    # so an airgap bundle holding it (README: "Smoke tests offline") serves a lab without egress:
    # spec.images.default_pull_policy covers only k0s's own pods (k0s-facts §5).
    probe_image: str = DEFAULT_PROBE_IMAGE
    sonobuoy_wait_min: int = 60

    def timeout_for(self, check: str) -> float:
        return self.timeouts.get(check, self.check_timeout_s)


class Verdict(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"  # the check itself broke (unexpected exception), so the cluster's state is unknown
    NOT_RUN = "not_run"


@dataclass
class CheckResult:
    name: str
    description: str
    hint: str
    verdict: Verdict
    message: str
    duration_s: float
    evidence: list[str] = field(default_factory=list)
    cleanup_errors: list[str] = field(default_factory=list)


@dataclass
class SmokeReport:
    started_at: str  # ISO 8601, UTC
    duration_s: float
    results: list[CheckResult]
    k0s_version: str = ""  # what the cluster was expected to run: reports name it (after an upgrade, the new one)

    def count(self, verdict: Verdict) -> int:
        return sum(1 for result in self.results if result.verdict is verdict)

    @property
    def ok(self) -> bool:
        """No check failed or broke; checks that did not run leave it true but are never counted as passed."""
        return not any(result.verdict in (Verdict.FAILED, Verdict.ERROR) for result in self.results)


# ---------------------------------------------------------------------------------------------------
# kubectl on the controller
# ---------------------------------------------------------------------------------------------------

class KubectlFailed(K0slabError):
    """kubectl exited non-zero: the API refused or could not be reached. For a check that is a failure."""

    def __init__(self, args: Sequence[str], result: CommandResult) -> None:
        super().__init__(f"`kubectl {shlex.join(args)}` failed: {result.last_error_line()}")
        self.result = result


class Kubectl:
    """`k0s kubectl` run on a controller with one kubeconfig (the admin's unless told otherwise)."""

    def __init__(self, runner: Runner, kubeconfig: str = ADMIN_KUBECONFIG, request_timeout_s: float = 30.0) -> None:
        self.runner = runner
        self.kubeconfig = kubeconfig
        self.request_timeout_s = request_timeout_s

    def run(self, args: Sequence[str], *, stdin: str | None = None, timeout: float | None = None) -> CommandResult:
        """Run kubectl; `timeout` is for commands that wait longer than one request (delete --timeout)."""
        command = (
            f"KUBECONFIG={shlex.quote(self.kubeconfig)} k0s kubectl "
            f"--request-timeout={self.request_timeout_s:g}s {shlex.join(args)}"
        )
        # The SSH bound is looser than kubectl's own, so kubectl gets to report its timeout itself.
        return self.runner.run(command, stdin=stdin, check=False, timeout=(timeout or self.request_timeout_s) + 30)

    def text(self, args: Sequence[str], *, stdin: str | None = None, timeout: float | None = None) -> str:
        result = self.run(args, stdin=stdin, timeout=timeout)
        if not result.ok:
            raise KubectlFailed(args, result)
        return result.stdout

    def json(self, args: Sequence[str]) -> dict[str, Any]:
        return json.loads(self.text([*args, "-o", "json"]))

    def raw(self, path: str) -> dict[str, Any]:
        return json.loads(self.text(["get", "--raw", path]))

    def create(self, *objects: dict[str, Any]) -> None:
        self.text(["create", "-f", "-"], stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


@runtime_checkable
class FilePusher(Protocol):
    """A Runner that can also copy a host file (the SSH node can); needed only to push sonobuoy."""

    def put_file(self, local: Path, path: str, mode: int | None = None) -> None: ...


# ---------------------------------------------------------------------------------------------------
# Check machinery
# ---------------------------------------------------------------------------------------------------

class CheckFailed(K0slabError):
    """The cluster is not as expected; the message names what and where."""


class CheckNotRun(K0slabError):
    """A prerequisite the user can supply is missing; never counted as passed."""


@dataclass
class _Context:
    check: str
    controller: Runner
    kubectl: Kubectl
    expectation: ClusterExpectation
    settings: SmokeSettings
    user_kubeconfig: str | None
    sonobuoy: Path | None
    deadline: float
    evidence: list[str] = field(default_factory=list)
    cleanups: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def see(self, *lines: str) -> None:
        self.evidence.extend(lines)

    def poll(self, sample: Callable[[], T], done: Callable[[T], bool]) -> T:
        """Sample until done(value) or the check's time is up; the last value comes back either way.

        A kubectl failure is retried too (the API may be restarting); if the last sample still failed,
        that KubectlFailed is raised.
        """
        retrying = Retrying(
            stop=stop_after_delay(max(0.0, self.deadline - time.monotonic())),
            wait=wait_fixed(self.settings.poll_interval_s),
            retry=retry_if_exception_type(KubectlFailed) | retry_if_result(lambda value: not done(value)),
            retry_error_callback=lambda state: state.outcome.result(),
        )
        return retrying(sample)

    def waited(self) -> str:
        return f"{self.settings.timeout_for(self.check):g}s"

    def namespace(self) -> str:
        """A fresh namespace for this check, registered for deletion before it exists."""
        name = f"k0slab-smoke-{self.check}-{secrets.token_hex(3)}"
        bound = self.settings.check_timeout_s
        self.on_cleanup(
            f"delete namespace {name}",
            lambda: self.kubectl.text(
                ["delete", "namespace", name, "--ignore-not-found", f"--timeout={bound:g}s"], timeout=bound
            ),
        )
        labels = {**MANAGED_LABELS, "k0slab.io/smoke-check": self.check}
        self.kubectl.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
        return name

    def on_cleanup(self, description: str, action: Callable[[], object]) -> None:
        self.cleanups.append((description, action))

    def clean_up(self) -> list[str]:
        errors = []
        for description, action in reversed(self.cleanups):
            try:
                action()
            except Exception as exc:  # reported next to the verdict, never raised over it
                errors.append(f"{description}: {exc}")
        return errors


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    hint: str
    run: Callable[[_Context], str]  # returns the pass message; raises CheckFailed / CheckNotRun otherwise


# ---------------------------------------------------------------------------------------------------
# Reading Kubernetes objects
# ---------------------------------------------------------------------------------------------------

def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c.get("type") == kind), {})


def _internal_ips(node: dict[str, Any]) -> list[str]:
    return [a["address"] for a in node.get("status", {}).get("addresses", []) if a.get("type") == "InternalIP"]


def _node_is_ready(node: dict[str, Any]) -> bool:
    return _condition(node, "Ready").get("status") == "True"


def _schedulable(node: dict[str, Any]) -> bool:
    spec = node.get("spec", {})
    blocking = [t for t in spec.get("taints", []) if t.get("effect") in ("NoSchedule", "NoExecute")]
    return _node_is_ready(node) and not spec.get("unschedulable") and not blocking


def _state_text(state: dict[str, Any]) -> str:
    """One container state as `waiting CrashLoopBackOff (back-off ...)`, `running`, `terminated Error (exit 1)`."""
    for kind in ("waiting", "terminated"):
        if kind in state:
            detail = state[kind]
            text = f"{kind} {detail.get('reason', '')}".rstrip()
            if kind == "terminated":
                text += f" (exit {detail.get('exitCode')})"
            if detail.get("message"):
                text += f": {detail['message'].strip()}"
            return text
    return "running" if "running" in state else "unknown"


def _container_problems(pod: dict[str, Any]) -> dict[str, str]:
    """Container name -> what is wrong with it, for containers not ready (init containers not done)."""
    status = pod.get("status", {})
    problems = {}
    for cs in status.get("initContainerStatuses", []):
        if "terminated" not in cs.get("state", {}) or cs["state"]["terminated"].get("exitCode") != 0:
            problems[cs["name"]] = f"init container {_state_text(cs.get('state', {}))}"
    for cs in status.get("containerStatuses", []):
        if not cs.get("ready") and status.get("phase") != "Succeeded":
            problems[cs["name"]] = _state_text(cs.get("state", {}))
    return problems


def _restarts(pods: Iterable[dict[str, Any]]) -> dict[tuple[str, str], int]:
    return {
        (pod["metadata"]["uid"], cs["name"]): cs.get("restartCount", 0)
        for pod in pods
        for cs in pod.get("status", {}).get("containerStatuses", [])
    }


def _pod_summary(pod: dict[str, Any]) -> str:
    status = pod.get("status", {})
    containers = status.get("containerStatuses", [])
    ready = sum(1 for cs in containers if cs.get("ready"))
    restarts = sum(cs.get("restartCount", 0) for cs in containers)
    node = pod.get("spec", {}).get("nodeName") or "(unscheduled)"
    return (
        f"{pod['metadata']['name']} on {node}: {status.get('phase', 'Unknown')}, "
        f"{ready}/{len(containers)} ready, {restarts} restarts"
    )


def _describe_pod(pod: dict[str, Any]) -> list[str]:
    """What `kubectl describe pod` would show first: phase, conditions, container states."""
    lines = [f"pod {_pod_summary(pod)}"]
    for cond in pod.get("status", {}).get("conditions", []):
        why = ": ".join(part for part in (cond.get("reason"), cond.get("message")) if part)
        lines.append(f"  condition {cond.get('type')}={cond.get('status')}" + (f" ({why})" if why else ""))
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in pod.get("status", {}).get(key, []):
            lines.append(f"  container {cs['name']}: {_state_text(cs.get('state', {}))}")
    return lines


def _event_lines(events: dict[str, Any], pod_names: set[str] | None = None, limit: int = 10) -> list[str]:
    """Recent events, oldest first, optionally only those about the named pods."""
    def when(event: dict[str, Any]) -> str:
        return event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get("creationTimestamp", "")

    chosen = [
        e for e in events.get("items", [])
        if pod_names is None or (e.get("involvedObject", {}).get("kind") == "Pod"
                                 and e["involvedObject"].get("name") in pod_names)
    ]
    lines = []
    for event in sorted(chosen, key=when)[-limit:]:
        target = event.get("involvedObject", {})
        count = f" (x{event['count']})" if event.get("count", 1) > 1 else ""
        lines.append(
            f"  event {when(event)} {event.get('type')} {event.get('reason')} "
            f"{target.get('kind', '').lower()}/{target.get('name')}: {event.get('message', '').strip()}{count}"
        )
    return lines or ["  (no events)"]


def _probe_pod(name: str, namespace: str, image: str, command: list[str], node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,  # nothing to drain: keep namespace deletion quick
        "containers": [{"name": "probe", "image": image, "imagePullPolicy": "IfNotPresent", "command": command}],
    }
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_LABELS)},
        "spec": spec,
    }


def _run_probe_pod(ctx: _Context, namespace: str, pod: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Create a run-once pod, wait for it to finish, and return it with its logs.

    A pod still pending or running when the check's time is up fails the check with its phase,
    conditions, events and logs as evidence.
    """
    name = pod["metadata"]["name"]
    ctx.kubectl.create(pod)
    final = ctx.poll(
        lambda: ctx.kubectl.json(["get", "pod", name, "-n", namespace]),
        lambda seen: seen.get("status", {}).get("phase") in ("Succeeded", "Failed"),
    )
    fetched = ctx.kubectl.run(["logs", name, "-n", namespace])
    logs = fetched.stdout.strip()
    phase = final.get("status", {}).get("phase", "Unknown")
    shown = logs or fetched.stderr.strip() or "(none)"
    ctx.see(*_describe_pod(final), f"  logs of {name}:", *(f"    {line}" for line in shown.splitlines()))
    if phase not in ("Succeeded", "Failed"):
        ctx.see(*_event_lines(ctx.kubectl.json(["get", "events", "-n", namespace])))
        waiting = "; ".join(f"{c}: {p}" for c, p in _container_problems(final).items())
        raise CheckFailed(
            f"pod {namespace}/{name} still {phase} after {ctx.waited()}" + (f" ({waiting})" if waiting else "")
        )
    return final, logs


# ---------------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------------

def _node_problems(items: list[dict[str, Any]], expectation: ClusterExpectation) -> list[str]:
    expected = {node.name: node for node in expectation.kubelet_nodes}
    seen = {node["metadata"]["name"]: node for node in items}
    problems = []
    if len(seen) != len(expected):
        problems.append(
            f"expected {len(expected)} nodes ({', '.join(expected) or 'none'}), "
            f"the API lists {len(seen)} ({', '.join(seen) or 'none'})"
        )
    problems += [f"{name} is missing (no Node object; its kubelet never registered)" for name in expected
                 if name not in seen]
    problems += [f"{name} is not a lab node" for name in seen if name not in expected]
    for name, node in seen.items():
        want = expected.get(name)
        if want is None:
            continue
        ready = _condition(node, "Ready")
        if ready.get("status") != "True":
            problems.append(
                f"{name} is NotReady (Ready={ready.get('status', 'missing')}, "
                f"{ready.get('reason', '')}: {ready.get('message', '')})"
            )
        arch = node["metadata"].get("labels", {}).get("kubernetes.io/arch")
        if arch != want.arch:
            problems.append(f"{name} has kubernetes.io/arch={arch}, expected {want.arch}")
        ips = _internal_ips(node)
        if ips != [want.ip]:
            problems.append(
                f"{name} INTERNAL-IP is {', '.join(ips) or 'missing'}, expected the lab IP {want.ip}"
            )
        kubelet = node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion")
        if kubelet != expectation.kubelet_version:
            problems.append(f"{name} runs kubelet {kubelet}, expected {expectation.kubelet_version}")
    return problems


def _check_nodes(ctx: _Context) -> str:
    expectation = ctx.expectation
    nodes = ctx.poll(
        lambda: ctx.kubectl.json(["get", "nodes"])["items"],
        lambda items: not _node_problems(items, expectation),
    )
    for node in nodes:
        ready = _condition(node, "Ready").get("status", "missing")
        arch = node["metadata"].get("labels", {}).get("kubernetes.io/arch")
        ctx.see(
            f"{node['metadata']['name']}: Ready={ready} arch={arch} "
            f"internal-ip={','.join(_internal_ips(node))} "
            f"kubelet={node.get('status', {}).get('nodeInfo', {}).get('kubeletVersion')}"
        )
    problems = _node_problems(nodes, expectation)
    if problems:
        raise CheckFailed("; ".join(problems))
    return (
        f"{len(nodes)} nodes Ready with the lab IPs, expected arches and kubelet {expectation.kubelet_version}"
    )


def _system_problems(pods: list[dict[str, Any]], components: Sequence[str]) -> dict[str, str]:
    """Pod name -> what is wrong; a missing component is keyed by its name prefix."""
    problems = {
        component: f"no {component} pod in kube-system"
        for component in components
        if not any(pod["metadata"]["name"].startswith(f"{component}-") for pod in pods)
    }
    for pod in pods:
        phase = pod.get("status", {}).get("phase")
        containers = _container_problems(pod)
        if phase in ("Running", "Succeeded") and not containers:
            continue
        where = pod.get("spec", {}).get("nodeName") or "no node"
        details = "; ".join(f"container {name} {what}" for name, what in containers.items())
        problems[pod["metadata"]["name"]] = (
            f"kube-system/{pod['metadata']['name']} on {where} is {phase}" + (f": {details}" if details else "")
        )
    return problems


def _check_system(ctx: _Context) -> str:
    def sample() -> list[dict[str, Any]]:
        return ctx.kubectl.json(["get", "pods", "-n", "kube-system"])["items"]

    components = ctx.expectation.system_components
    first_at = time.monotonic()
    first = sample()
    last = ctx.poll(sample, lambda pods: not _system_problems(pods, components))
    # Restarts are only visible as a difference between two samples some seconds apart.
    remaining = ctx.settings.restart_sample_s - (time.monotonic() - first_at)
    if remaining > 0:
        cancel.sleep(remaining)
        last = sample()
    problems = _system_problems(last, components)
    before = _restarts(first)
    for pod in last:
        for cs in pod.get("status", {}).get("containerStatuses", []):
            was = before.get((pod["metadata"]["uid"], cs["name"]))
            now = cs.get("restartCount", 0)
            if was is None or now <= was:
                continue
            name = pod["metadata"]["name"]
            last_run = _state_text(cs.get("lastState", {}))
            climbing = f"container {cs['name']} restarts climbing {was}->{now} (last: {last_run})"
            problems[name] = f"{problems[name]}; {climbing}" if name in problems else f"kube-system/{name}: {climbing}"
    ctx.see(*(f"pod {_pod_summary(pod)}" for pod in last))
    if not problems:
        return f"{len(last)} kube-system pods Running and Ready, no restarts; found {', '.join(components)}"
    broken = {pod["metadata"]["name"]: pod for pod in last if pod["metadata"]["name"] in problems}
    ctx.see(f"recent kube-system events for {', '.join(sorted(broken)) or 'the missing components'}:")
    ctx.see(*_event_lines(ctx.kubectl.json(["get", "events", "-n", "kube-system"]), set(broken) or None))
    for name, pod in broken.items():
        for container in pod.get("status", {}).get("containerStatuses", []):
            if container.get("restartCount", 0) == 0:
                continue
            # The previous run's output usually says why it crashed (e.g. CoreDNS's plugin errors).
            previous = ctx.kubectl.run(
                ["logs", name, "-n", "kube-system", "-c", container["name"], "--previous", "--tail=10"]
            )
            ctx.see(f"last log lines of {name}/{container['name']} before its restart:",
                    *(f"    {line}" for line in (previous.stdout or previous.stderr).strip().splitlines()))
    raise CheckFailed("; ".join(problems.values()))


def _check_dns(ctx: _Context) -> str:
    namespace = ctx.namespace()
    service_ip = ctx.kubectl.json(["get", "service", "kubernetes", "-n", "default"])["spec"]["clusterIP"]
    pod, logs = _run_probe_pod(
        ctx, namespace, _probe_pod("dns-probe", namespace, ctx.settings.probe_image, ["nslookup", DNS_NAME])
    )
    node = pod.get("spec", {}).get("nodeName")
    if pod["status"]["phase"] == "Failed":
        last_line = logs.splitlines()[-1] if logs else "no output"
        raise CheckFailed(f"nslookup {DNS_NAME} failed in a pod on {node}: {last_line}")
    if service_ip not in logs:
        raise CheckFailed(f"{DNS_NAME} did not resolve to the kubernetes service IP {service_ip} (pod on {node})")
    return f"a pod on {node} resolved {DNS_NAME} to {service_ip}"


_WEB_LABELS = {**MANAGED_LABELS, "app": "k0slab-smoke-web"}
# Serves the name of the node the replica runs on, so an answer proves which replica was reached.
_WEB_SCRIPT = 'mkdir -p /www && echo "$NODE_NAME" > /www/index.html && exec httpd -f -p 8080 -h /www'
# Fetches every URL given (three tries each) and prints `ok URL BODY` or `fail URL`; exits 1 on any fail.
_FETCH_SCRIPT = (
    'status=0; for url in "$@"; do '
    'for try in 1 2 3; do if body=$(wget -q -T 5 -O - "$url"); then echo "ok $url $body"; continue 2; fi; '
    "sleep 1; done; "
    'echo "fail $url"; status=1; done; exit $status'
)


def _web_objects(namespace: str, replicas: int, image: str) -> list[dict[str, Any]]:
    selector = {"app": _WEB_LABELS["app"]}
    container = {
        "name": "web",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", _WEB_SCRIPT],
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 2},
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace, "labels": _WEB_LABELS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": _WEB_LABELS},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [container],
                    # One replica per node, so the replicas exercise every node's pod network.
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": selector},
                    }],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": namespace, "labels": _WEB_LABELS},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    return [deployment, service]


def _rolled_out(deployment: dict[str, Any]) -> bool:
    """What `kubectl rollout status` waits for: the current generation fully updated and available."""
    spec, status = deployment["spec"], deployment.get("status", {})
    want = spec.get("replicas", 1)
    return (
        status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 1)
        and status.get("updatedReplicas", 0) == want
        and status.get("availableReplicas", 0) == want
    )


def _check_workload(ctx: _Context) -> str:
    nodes = ctx.kubectl.json(["get", "nodes"])["items"]
    workers = sorted(node["metadata"]["name"] for node in nodes if _schedulable(node))
    if not workers:
        raise CheckFailed("no schedulable worker node (all are NotReady, cordoned or tainted NoSchedule)")
    namespace = ctx.namespace()
    ctx.kubectl.create(*_web_objects(namespace, len(workers), ctx.settings.probe_image))
    deployment = ctx.poll(lambda: ctx.kubectl.json(["get", "deployment", "web", "-n", namespace]), _rolled_out)
    pods = ctx.kubectl.json(["get", "pods", "-n", namespace, "-l", f"app={_WEB_LABELS['app']}"])["items"]
    ctx.see(*(f"pod {_pod_summary(pod)}" for pod in pods))
    if not _rolled_out(deployment):
        status = deployment.get("status", {})
        unready = [pod for pod in pods if pod.get("status", {}).get("phase") != "Running" or _container_problems(pod)]
        ctx.see(*(line for pod in unready for line in _describe_pod(pod)))
        ctx.see(*_event_lines(ctx.kubectl.json(["get", "events", "-n", namespace])))
        raise CheckFailed(
            f"deployment {namespace}/web has {status.get('availableReplicas', 0)}/{len(workers)} replicas available "
            f"after {ctx.waited()} (schedulable nodes: {', '.join(workers)})"
        )

    service_ip = ctx.kubectl.json(["get", "service", "web", "-n", namespace])["spec"]["clusterIP"]
    client_node = workers[0]
    targets = {f"http://{service_ip}:80/": f"service web ({service_ip}:80)"}
    expected_body = {}
    for pod in pods:
        node, ip = pod["spec"].get("nodeName"), pod["status"].get("podIP")
        if node != client_node:
            url = f"http://{ip}:8080/"
            targets[url] = f"pod {pod['metadata']['name']} on {node} ({ip}:8080)"
            expected_body[url] = node
    if len(workers) == 1:
        ctx.see("only one schedulable node: the cross-node pod network is not exercised")
    client = _probe_pod("client", namespace, ctx.settings.probe_image, ["sh", "-c", _FETCH_SCRIPT, "fetch", *targets],
                        node=client_node)
    _, logs = _run_probe_pod(ctx, namespace, client)
    answered = {}
    for line in logs.splitlines():
        word, _, rest = line.partition(" ")
        url, _, body = rest.partition(" ")
        if word == "ok":
            answered[url] = body.strip()
    failed = [targets[url] for url in targets if url not in answered]
    wrong = [f"{targets[url]} answered as {answered[url]!r}" for url, node in expected_body.items()
             if url in answered and answered[url] != node]
    if failed or wrong:
        raise CheckFailed(f"from a pod on {client_node}: " + "; ".join(
            [f"{target} did not answer" for target in failed] + wrong))
    remote = sorted(set(expected_body.values()))
    return (
        f"{len(workers)} replicas rolled out on {', '.join(workers)}; from a pod on {client_node} the service"
        + (f" and the pods on {', '.join(remote)} answered" if remote else " answered")
    )


def _check_rbac(ctx: _Context) -> str:
    if ctx.user_kubeconfig is None:
        raise CheckNotRun("not run: no lab user; create one with invoke lab.user NAME --group G")
    admin = ctx.kubectl.run(["get", "nodes"])
    ctx.see(f"admin: exit {admin.exit_code} {admin.stderr.strip()}".rstrip())
    if not admin.ok:
        raise CheckFailed(f"the admin may not list nodes: {admin.last_error_line()}")
    user = Kubectl(ctx.controller, ctx.user_kubeconfig, ctx.settings.request_timeout_s).run(["get", "nodes"])
    ctx.see(f"user ({ctx.user_kubeconfig}): exit {user.exit_code} {user.stderr.strip()}".rstrip())
    if user.ok:
        raise CheckFailed(
            f"the user of {ctx.user_kubeconfig} listed nodes; expected Forbidden (its group must not grant node access)"
        )
    forbidden = _FORBIDDEN_RE.search(user.stderr)
    if not forbidden:
        raise CheckFailed(f"the user of {ctx.user_kubeconfig} failed, but not with Forbidden: {user.last_error_line()}")
    return f'user "{forbidden.group("user")}" is Forbidden from listing nodes; the admin may'


def _cpu_millicores(quantity: str) -> int:
    units = {"n": 1e-6, "u": 1e-3, "m": 1.0}
    factor = units.get(quantity[-1:])
    return round(float(quantity[:-1]) * factor) if factor else round(float(quantity) * 1000)


def _memory_mib(quantity: str) -> int:
    units = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0}
    factor = units.get(quantity[-2:])
    return round(float(quantity[:-2]) * factor) if factor else round(float(quantity) / 2**20)


def _check_metrics(ctx: _Context) -> str:
    wanted = [node.name for node in ctx.expectation.kubelet_nodes]

    def missing(items: list[dict[str, Any]]) -> list[str]:
        served = {item["metadata"]["name"] for item in items}
        return [name for name in wanted if name not in served]

    items = ctx.poll(lambda: ctx.kubectl.raw("/apis/metrics.k8s.io/v1beta1/nodes")["items"], lambda i: not missing(i))
    for item in items:
        usage = item.get("usage", {})
        ctx.see(f"{item['metadata']['name']}: cpu {_cpu_millicores(usage.get('cpu', '0'))}m, "
                f"memory {_memory_mib(usage.get('memory', '0'))}Mi (window {item.get('window')})")
    absent = missing(items)
    if absent:
        served = sorted(item["metadata"]["name"] for item in items)
        raise CheckFailed(
            f"no metrics for {', '.join(absent)} after {ctx.waited()} "
            f"(metrics-server serves {', '.join(served) or 'none'})"
        )
    return f"metrics-server serves node metrics for {', '.join(wanted)}"


def _check_sonobuoy(ctx: _Context) -> str:
    if ctx.sonobuoy is None or not isinstance(ctx.controller, FilePusher):
        raise CheckNotRun("not run: needs a sonobuoy binary and a controller reachable over SSH")
    ctx.controller.put_file(ctx.sonobuoy, SONOBUOY_REMOTE_PATH, 0o755)
    namespace = f"k0slab-smoke-sonobuoy-{secrets.token_hex(3)}"
    common = f"--namespace {namespace} --kubeconfig {ADMIN_KUBECONFIG}"

    def sonobuoy(args: str, timeout: float) -> CommandResult:
        return ctx.controller.run(f"{SONOBUOY_REMOTE_PATH} {args} {common}", check=False, timeout=timeout)

    # sonobuoy owns its namespace and cluster-wide RBAC; its own delete removes both.
    ctx.on_cleanup(f"sonobuoy delete {namespace}", lambda: _raise_unless_ok(sonobuoy("delete --wait", 3600)))
    minutes = ctx.settings.sonobuoy_wait_min
    run = sonobuoy(f"run --mode quick --wait={minutes}", minutes * 60 + 120)
    ctx.see(*(f"  {line}" for line in (run.stdout + run.stderr).strip().splitlines()[-10:]))
    if not run.ok:
        raise CheckFailed(f"sonobuoy run failed: {run.last_error_line()}")
    status = json.loads(_raise_unless_ok(sonobuoy("status --json", 120)).stdout)
    for plugin in status.get("plugins", []):
        ctx.see(f"plugin {plugin.get('plugin')} on {plugin.get('node')}: {plugin.get('status')}, "
                f"result {plugin.get('result-status')} {plugin.get('result-counts')}")
    results = ctx.controller.run(
        f'tarball=$({SONOBUOY_REMOTE_PATH} retrieve /tmp {common}) && {SONOBUOY_REMOTE_PATH} results "$tarball"; '
        'rm -f "$tarball"',
        check=False, timeout=300,
    )
    ctx.see(*(f"  {line}" for line in (results.stdout or results.stderr).strip().splitlines()))
    failing = [p.get("plugin") for p in status.get("plugins", []) if p.get("result-status") != "passed"]
    if status.get("status") != "complete" or failing:
        raise CheckFailed(f"sonobuoy run is {status.get('status')}; plugins not passed: {', '.join(failing) or 'none'}")
    return f"sonobuoy quick mode passed ({', '.join(p.get('plugin', '?') for p in status.get('plugins', []))})"


def _raise_unless_ok(result: CommandResult) -> CommandResult:
    if not result.ok:
        raise CheckFailed(f"`{result.command}` failed: {result.last_error_line()}")
    return result


CHECKS: dict[str, Check] = {
    check.name: check
    for check in (
        Check("nodes", "every lab node is registered, Ready, with its lab IP, arch and the k0s kubelet version",
              "on the node: journalctl -u k0sworker (or k0scontroller); k0s kubectl describe node NAME", _check_nodes),
        Check("system", "every kube-system pod is Running with all containers Ready and restarts not climbing",
              "k0s kubectl -n kube-system describe pod POD; "
              "k0s kubectl -n kube-system logs POD -c CONTAINER --previous",
              _check_system),
        Check("dns", f"a pod in a fresh namespace resolves {DNS_NAME}",
              "check the coredns pods and the probe image (SmokeSettings.probe_image must be pullable)", _check_dns),
        Check("workload", "a Deployment spread over the schedulable nodes rolls out and its Service and pods answer "
              "HTTP from a pod on another node",
              "cross-node failures point at the CNI (kube-router/calico pods) or blocked ports between nodes",
              _check_workload),
        Check("rbac", "a lab user is Forbidden from listing nodes while the admin is allowed",
              "invoke lab.user NAME --group G; k0s kubectl auth can-i list nodes --as NAME", _check_rbac),
        Check("metrics", "metrics-server serves metrics for every node",
              "k0s kubectl -n kube-system logs deploy/metrics-server; "
              "k0s kubectl get apiservice v1beta1.metrics.k8s.io",
              _check_metrics),
        Check("sonobuoy", "sonobuoy's quick conformance run passes (opt-in)",
              "sonobuoy logs / sonobuoy results on the controller; the binary must match the controller's arch",
              _check_sonobuoy),
    )
}


# ---------------------------------------------------------------------------------------------------
# Running the suite
# ---------------------------------------------------------------------------------------------------

def select_checks(only: Sequence[str] | None, *, sonobuoy: bool = False) -> list[str]:
    """The checks to run, in suite order; `only` items may be comma-separated lists ("nodes,rbac")."""
    if only is None:
        return [name for name in CHECKS if name != "sonobuoy" or sonobuoy]
    asked = [part.strip() for item in only for part in item.split(",") if part.strip()]
    valid = ", ".join(CHECKS)
    for name in asked:
        if name not in CHECKS:
            raise K0slabError(f"unknown smoke check {name!r}", f"valid checks: {valid}")
    if not asked:
        raise K0slabError("--only names no check", f"valid checks: {valid}")
    if "sonobuoy" in asked and not sonobuoy:
        raise K0slabError("the sonobuoy check needs a sonobuoy binary", "pass --sonobuoy PATH")
    return [name for name in CHECKS if name in asked]


def run_smoke(
    controller: Runner,
    expectation: ClusterExpectation,
    only: Sequence[str] | None = None,
    user_kubeconfig: str | None = None,
    *,
    sonobuoy: Path | None = None,
    settings: SmokeSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> SmokeReport:
    """Run the selected checks against the cluster behind `controller`; every check gets a verdict.

    `user_kubeconfig` is a lab user's kubeconfig on the controller (None: rbac is not run).
    `sonobuoy` is a host path to a sonobuoy binary for the controller's architecture (opt-in).
    """
    settings = settings or SmokeSettings()
    names = select_checks(only, sonobuoy=sonobuoy is not None)
    if sonobuoy is not None:
        if not sonobuoy.is_file():
            raise K0slabError(f"sonobuoy binary {sonobuoy} does not exist", "pass the path of a sonobuoy executable")
        if not isinstance(controller, FilePusher):
            raise K0slabError(f"cannot copy sonobuoy to {controller.name}", "the controller runner has no put_file")
    kubectl = Kubectl(controller, ADMIN_KUBECONFIG, settings.request_timeout_s)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    suite_started = time.monotonic()
    results = []
    for name in names:
        check = CHECKS[name]
        if progress:
            progress(f"smoke {name}: {check.description}")
        ctx = _Context(
            check=name, controller=controller, kubectl=kubectl, expectation=expectation, settings=settings,
            user_kubeconfig=user_kubeconfig, sonobuoy=sonobuoy,
            deadline=time.monotonic() + settings.timeout_for(name),
        )
        result = _run_one(check, ctx)
        results.append(result)
        if progress:
            progress(f"smoke {name}: {result.verdict} in {result.duration_s:.1f}s: {result.message}")
    return SmokeReport(started_at=started_at, duration_s=time.monotonic() - suite_started, results=results,
                       k0s_version=expectation.k0s_version)


def _run_one(check: Check, ctx: _Context) -> CheckResult:
    started = time.monotonic()
    try:
        verdict, message = Verdict.PASSED, check.run(ctx)
    except CheckNotRun as exc:
        verdict, message = Verdict.NOT_RUN, exc.message
    except (CheckFailed, KubectlFailed) as exc:
        verdict, message = Verdict.FAILED, exc.message
    except Exception as exc:  # a broken check must not stop the suite: it becomes an `error` verdict
        verdict, message = Verdict.ERROR, f"{type(exc).__name__}: {exc}"
    finally:
        cleanup_errors = ctx.clean_up()
    return CheckResult(
        name=check.name, description=check.description, hint=check.hint, verdict=verdict, message=message,
        duration_s=time.monotonic() - started, evidence=ctx.evidence,
        cleanup_errors=[f"cleanup failed: {error}" for error in cleanup_errors],
    )


# ---------------------------------------------------------------------------------------------------
# Reports: JUnit XML for CI, JSON for scripts, a table for people
# ---------------------------------------------------------------------------------------------------

def _details(result: CheckResult) -> str:
    return "\n".join([*result.evidence, *result.cleanup_errors, f"hint: {result.hint}"])


def to_junit_xml(report: SmokeReport) -> str:
    counts = {
        "tests": str(len(report.results)),
        "failures": str(report.count(Verdict.FAILED)),
        "errors": str(report.count(Verdict.ERROR)),
        "skipped": str(report.count(Verdict.NOT_RUN)),
        "time": f"{report.duration_s:.3f}",
    }
    suites = ET.Element("testsuites", {"name": SUITE_NAME, **counts})
    suite = ET.SubElement(suites, "testsuite", {"name": SUITE_NAME, **counts, "timestamp": report.started_at})
    if report.k0s_version:
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", {"name": "k0s.version", "value": report.k0s_version})
    for result in report.results:
        case = ET.SubElement(
            suite, "testcase", {"classname": JUNIT_CLASSNAME, "name": result.name, "time": f"{result.duration_s:.3f}"}
        )
        if result.verdict is Verdict.FAILED:
            ET.SubElement(case, "failure", {"message": result.message, "type": "failed"}).text = _details(result)
        elif result.verdict is Verdict.ERROR:
            ET.SubElement(case, "error", {"message": result.message, "type": "error"}).text = _details(result)
        elif result.verdict is Verdict.NOT_RUN:
            ET.SubElement(case, "skipped", {"message": result.message})
        else:
            ET.SubElement(case, "system-out").text = "\n".join([result.message, *result.evidence])
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def to_json(report: SmokeReport) -> str:
    data = {
        "suite": SUITE_NAME,
        "started_at": report.started_at,
        "duration_s": round(report.duration_s, 3),
        "ok": report.ok,
        "k0s_version": report.k0s_version,
        "counts": {"tests": len(report.results), **{v.value: report.count(v) for v in Verdict}},
        "results": [{**asdict(result), "duration_s": round(result.duration_s, 3)} for result in report.results],
    }
    return json.dumps(data, indent=2) + "\n"


_VERDICT_STYLE = {Verdict.PASSED: "green", Verdict.FAILED: "red", Verdict.ERROR: "magenta", Verdict.NOT_RUN: "yellow"}


def render_table(report: SmokeReport) -> RenderableType:
    """A table of verdicts, then the evidence and hint of every check that did not pass."""
    table = Table(title=f"{SUITE_NAME} ({report.duration_s:.1f}s)", box=None, header_style="bold", pad_edge=False)
    for column in ("CHECK", "RESULT", "TIME", "DETAIL"):
        table.add_column(column)
    for result in report.results:
        table.add_row(
            result.name, Text(result.verdict.replace("_", " "), style=_VERDICT_STYLE[result.verdict]),
            f"{result.duration_s:.1f}s", Text(result.message),
        )
    parts: list[RenderableType] = [table]
    for result in report.results:
        if result.verdict in (Verdict.FAILED, Verdict.ERROR) or result.cleanup_errors:
            parts.append(Text(f"\n{result.name}: {result.message}", style=_VERDICT_STYLE[result.verdict]))
            parts.append(Text(_details(result), style="dim"))
    return Group(*parts)
