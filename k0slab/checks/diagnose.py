"""Why a lab's nodes are not Ready yet, and whether waiting longer can help.

Every bring-up passes through `Ready=False (KubeletNotReady: NetworkPluginNotReady)` until
kube-router runs (k0s-facts §9), so "not Ready" alone proves nothing. What does prove that waiting
is useless is in the kube-system pods: an image that cannot be pulled, a container that keeps
crashing, CoreDNS finding no nameserver in the node's /etc/resolv.conf, or nothing changing at all
for longer than a slow emulated bring-up needs; and in the kubelet's events, when not even the
pause image can be had (k0s-facts §9). This module reads real `kubectl get pods -o json`,
`get nodes -o json` and `get events -o json` output and names the node, the pod and the likely fix.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull")
# Crashes a container may have while its dependencies come up (the API, the CNI) before the
# crash loop counts as a cause rather than a symptom of a slow start.
CRASH_RESTARTS_LIMIT = 3
# CoreDNS's own words when /etc/resolv.conf has no nameserver (k0s-facts §9, coredns forward plugin).
NO_NAMESERVERS = "no nameservers found"
# connect() without a route (ENETUNREACH), as Go prints it.
UNREACHABLE = "network is unreachable"
# The kubelet's event when a pod's sandbox cannot be made (kubernetes pkg/kubelet/events/event.go), and
# containerd's words when the reason is the pause image itself (containerd's CRI sandbox_run.go): no
# pod of the node can start then, hostNetwork ones included.
SANDBOX_EVENT = "FailedCreatePodSandBox"
SANDBOX_IMAGE_FAILURE = "failed to get sandbox image"
# Sandbox attempts that may fail before the cause counts as definite: the kubelet retries each pod
# on its sync, so with a pull that cannot work the count climbs within seconds.
SANDBOX_FAILURES_LIMIT = 2
# How long nothing may change before waiting is given up: a TCG bring-up pulls and starts the
# same pods several times slower than one under KVM.
STALL_WINDOW_S = {"kvm": 180.0, "tcg": 420.0}

# (namespace, pod, container) -> that container's previous log ("" when there is none).
PreviousLogs = Callable[[str, str, str], str]


@dataclass(frozen=True)
class Cause:
    node: str
    subject: str  # "pod kube-system/coredns-6d9f49dcbb-x2x7v, container coredns"
    reason: str  # "ImagePullBackOff: Back-off pulling image ..."
    fix: str

    @property
    def message(self) -> str:
        return f"node {self.node} cannot become Ready: {self.subject}: {self.reason}"


def _statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status", {})
    return [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]


def _pod_name(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata", {})
    return f"{meta.get('namespace', 'default')}/{meta.get('name', '?')}"


def _short(text: str, limit: int = 240, *, keep_end: bool = False) -> str:
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    return "..." + line[-(limit - 3):] if keep_end else line[: limit - 3] + "..."


def _pull_fix(node: str, image: str, egress: str) -> str:
    if egress == "none":
        return (f"the lab has no egress and no bundle provides {image}: add an archive holding it with "
                "--airgap-bundle PATH, or use --airgap for k0s's own images")
    return (f"the node cannot pull {image}: check its default route and /etc/resolv.conf "
            f"(invoke lab.ssh {node} -- 'ip route; cat /etc/resolv.conf') and the host's NAT, "
            "or bring the lab up offline with --egress none --airgap")


def sandbox_cause(events: dict[str, Any], egress: str) -> Cause | None:
    """A pod whose sandbox keeps failing because the pause image cannot be had, from
    `kubectl get events -A -o json`: its containers only ever show ContainerCreating."""
    for event in events.get("items", []):
        message = event.get("message", "")
        if (event.get("reason") != SANDBOX_EVENT or SANDBOX_IMAGE_FAILURE not in message
                or int(event.get("count") or 1) < SANDBOX_FAILURES_LIMIT):
            continue
        involved = event.get("involvedObject", {})
        node = event.get("source", {}).get("host") or "?"
        image = message.split(SANDBOX_IMAGE_FAILURE, 1)[1].split('"')[1:2] or ["the pause image"]
        subject = f"pod {involved.get('namespace', 'default')}/{involved.get('name', '?')}"
        reason = f"{SANDBOX_EVENT} (x{event.get('count') or 1}): {_short(message, keep_end=True)}"
        return Cause(node, subject, reason, _pull_fix(node, image[0], egress))
    return None


def definite_cause(pods: dict[str, Any], egress: str, previous_logs: PreviousLogs,
                   events: dict[str, Any] | None = None) -> Cause | None:
    """The first reason in `kubectl get pods -A -o json` (and the kubelet's events) that waiting
    cannot cure, or None."""
    sandbox = sandbox_cause(events or {}, egress)
    if sandbox is not None:
        return sandbox
    for pod in pods.get("items", []):
        node = pod.get("spec", {}).get("nodeName")
        if not node:
            continue  # not scheduled yet: normal while nodes are NotReady
        namespace = pod.get("metadata", {}).get("namespace", "default")
        for status in _statuses(pod):
            waiting = status.get("state", {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            container = status.get("name", "?")
            subject = f"pod {_pod_name(pod)}, container {container}"
            image = status.get("image", "?")
            if reason in PULL_FAILURES:
                # containerd nests its errors: the root cause (DNS, route, TLS) is at the end.
                detail = _short(waiting.get("message", ""), keep_end=True) or f"cannot pull {image}"
                return Cause(node, subject, f"{reason}: {detail}", _pull_fix(node, image, egress))
            restarts = int(status.get("restartCount", 0))
            if restarts == 0:
                continue
            log = previous_logs(namespace, pod["metadata"]["name"], container)
            if NO_NAMESERVERS in log:
                return Cause(
                    node, subject, f"{NO_NAMESERVERS} in /etc/resolv.conf (restarted {restarts} times)",
                    f"node {node} has no nameserver: CoreDNS forwards to its /etc/resolv.conf, which "
                    "k0slab-identity writes from k0slab.nameserver= on the kernel command line; check "
                    f"both (invoke lab.ssh {node} -- 'cat /proc/cmdline /etc/resolv.conf')",
                )
            if reason == "CrashLoopBackOff" and restarts > CRASH_RESTARTS_LIMIT:
                last = next((line for line in reversed(log.splitlines()) if line.strip()), "no previous log")
                fix = (f"read its log: k0s kubectl logs -n {namespace} {pod['metadata']['name']} -c {container} "
                       "--previous (on the controller)")
                if UNREACHABLE in log:
                    # Host-network pods reach the service address only through a default route
                    # (k0s-facts §9, kubernetes issue 57534).
                    fix = (f"node {node} likely has no default route: check it with "
                           f"invoke lab.ssh {node} -- ip route; then {fix}")
                return Cause(node, subject, f"CrashLoopBackOff after {restarts} restarts, last log: {_short(last)}",
                             fix)
    return None


def progress_signature(pods: dict[str, Any], nodes: list[dict[str, Any]]) -> tuple[Any, ...]:
    """What changes while a bring-up makes progress: node conditions, pods and container states.
    Restart counts are left out: a container crashing over and over is no progress."""
    node_part = sorted(
        (n.get("metadata", {}).get("name", "?"),
         tuple(sorted((c.get("type"), c.get("status"), c.get("reason")) for c in n.get("status", {}).get(
             "conditions", []))))
        for n in nodes
    )
    pod_part = sorted(
        (_pod_name(p), p.get("spec", {}).get("nodeName"), p.get("status", {}).get("phase"),
         tuple(sorted((s.get("name"), s.get("ready"), next(iter(s.get("state", {})), None),
                       (s.get("state", {}).get("waiting") or {}).get("reason")) for s in _statuses(p))))
        for p in pods.get("items", [])
    )
    return tuple(node_part), tuple(pod_part)


class StallWatch:
    """Tracks how long the progress signature has stayed the same."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._last: tuple[Any, ...] | None = None
        self._since = clock()

    def stalled_for(self, signature: tuple[Any, ...]) -> float | None:
        """Seconds without change once the window is exceeded, else None."""
        now = self._clock()
        if signature != self._last:
            self._last, self._since = signature, now
            return None
        quiet = now - self._since
        return quiet if quiet >= self.window_s else None


def stall_window(accels: list[str | None]) -> float:
    """The window for the slowest accelerator of the lab (unknown counts as TCG)."""
    return max(STALL_WINDOW_S.get(a or "tcg", STALL_WINDOW_S["tcg"]) for a in accels or [None])


def not_ready_summary(nodes: list[dict[str, Any]]) -> str:
    """'node2 Ready=False (KubeletNotReady: container runtime network not ready...)' for each node."""
    parts = []
    for node in nodes:
        for condition in node.get("status", {}).get("conditions", []):
            if condition.get("type") == "Ready" and condition.get("status") != "True":
                why = ": ".join(x for x in (condition.get("reason"), _short(condition.get("message", ""), 120)) if x)
                parts.append(f"{node['metadata']['name']} Ready={condition.get('status')} ({why})")
    return "; ".join(parts) or "no node reports a Ready condition"
