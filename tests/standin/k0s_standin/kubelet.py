"""What a node's kubelet can run: its images (airgap bundle or pulls over egress) and its pods' states.

Contract §9: kube-router, kube-proxy, coredns, konnectivity-agent, metrics-server and the pause image come
from registries; a node is Ready only once its CNI (kube-router) runs. The stand-in runs no containers: it
judges, on the node itself, whether each container could start and reports what the kubelet would.
- Images: those of the bundles in /var/lib/k0s/images/ when k0s started (k0s imports them into containerd
  before the kubelet starts, `pkg/component/worker/ocibundle.go`), or pulls, which need egress: a default
  route (/proc/net/route), a `nameserver` in /etc/resolv.conf and CA certificates
  (/etc/ssl/certs/ca-certificates.crt). These three are re-read every sync, so a test can take them away.
- kube-router (hostNetwork) needs a default route to reach the service address 10.96.0.1 (kubernetes
  issue 57534); coredns forwards to /etc/resolv.conf and exits "no nameservers found" without one
  (`pkg/component/controller/coredns.go`: `forward . /etc/resolv.conf`).
- Restarts back off 10 s, 20 s, 40 s ... up to 5 minutes, as the kubelet's CrashLoopBackOff does.
"""
from __future__ import annotations

import os
import time

from .common import host_path, now_utc, rfc3339
from .images import bundled_images, normalize

ROUTE_FILE = "/proc/net/route"
RESOLV_CONF = "/etc/resolv.conf"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
SERVICE_HOST = "10.96.0.1"
CNI_COMPONENT = "kube-router"
NOT_READY_MESSAGE = ("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
                     "message:Network plugin returns error: cni plugin not initialized")


def has_default_route() -> bool:
    """A line of /proc/net/route whose destination is 00000000 (under K0S_STANDIN_ROOT in host tests)."""
    try:
        with open(host_path(ROUTE_FILE), encoding="ascii") as routes:
            return any(len(fields) > 1 and fields[1] == "00000000" for fields in (line.split() for line in routes))
    except OSError:
        return False


def has_nameserver() -> bool:
    try:
        with open(host_path(RESOLV_CONF), encoding="utf-8") as resolv:
            return any(line.split()[:1] == ["nameserver"] and len(line.split()) > 1 for line in resolv)
    except OSError:
        return False


def has_ca_certificates() -> bool:
    try:
        return os.path.getsize(host_path(CA_BUNDLE)) > 0
    except OSError:
        return False


class NodeFacts:
    """The node's containerd image store (fixed when k0s starts) and its egress (judged live)."""

    def __init__(self):
        self.images = bundled_images()
        self.crash_started: dict[str, float] = {}

    def egress_missing(self) -> str | None:
        if not has_default_route():
            return "dial tcp: connect: network is unreachable"
        if not has_nameserver():
            return "dial tcp: lookup quay.io: no such host (no nameserver in /etc/resolv.conf)"
        if not has_ca_certificates():
            return "tls: failed to verify certificate: x509: certificate signed by unknown authority"
        return None

    def image_problem(self, image: str, policy: str) -> tuple[str, str] | None:
        """(reason, message) when the image can be neither found locally nor pulled, as the kubelet words it."""
        if normalize(image) in self.images:
            return None
        if policy == "Never":
            return "ErrImageNeverPull", f'Container image "{image}" is not present with pull policy of Never'
        failure = self.egress_missing()
        if failure is None:
            return None
        # The kubelet alternates ErrImagePull and ImagePullBackOff; after the first attempt it is mostly back-off.
        return "ImagePullBackOff", (f'Back-off pulling image "{image}": failed to pull and unpack image '
                                    f'"{normalize(image)}": {failure}')

    def crash(self, component: str) -> list[str] | None:
        """The log of a container that exits right after start on this node, or None if it would run."""
        if component == CNI_COMPONENT and not has_default_route():
            return [f"Failed to get node object: Get \"https://{SERVICE_HOST}:443/api/v1/nodes\": "
                    f"dial tcp {SERVICE_HOST}:443: connect: network is unreachable"]
        if component == "coredns" and not has_nameserver():
            return ["[INFO] plugin/reload: Running configuration SHA512 = 0", "Listen: no nameservers found"]
        return None

    def restarts(self, key: str) -> int:
        """Restarts so far under CrashLoopBackOff (back-off 10 s doubling, capped at 300 s)."""
        started = self.crash_started.setdefault(key, time.monotonic())
        elapsed, delay, count = time.monotonic() - started, 10.0, 0
        while elapsed >= delay:
            elapsed -= delay
            delay = min(delay * 2, 300.0)
            count += 1
        return count


def container_status(facts: NodeFacts, pod_key: str, container: dict, component: str, sandbox: str | None,
                     started: str) -> tuple[dict, bool]:
    """(containerStatus, running) for one container of a pod bound to this node."""
    image = container["image"]
    status = {"name": container["name"], "image": image, "imageID": "", "ready": False, "restartCount": 0,
              "started": False}
    problem = facts.image_problem(image, container.get("imagePullPolicy", "IfNotPresent"))
    if sandbox is not None:
        status["state"] = {"waiting": {"reason": "PodInitializing" if sandbox == "PodInitializing"
                                       else "ContainerCreating"}}
        return status, False
    if problem is not None:
        status["state"] = {"waiting": {"reason": problem[0], "message": problem[1]}}
        return status, False
    status["imageID"] = normalize(image)
    log_lines = facts.crash(component)
    if log_lines is not None:
        restarts = facts.restarts(pod_key)
        status.update(restartCount=restarts, containerID="containerd://standin")
        status["state"] = {"waiting": {"reason": "CrashLoopBackOff",
                                       "message": f"back-off 10s restarting failed container={container['name']}"}}
        status["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "message": "\n".join(log_lines),
                                              "startedAt": started, "finishedAt": started}}
        return status, False
    facts.crash_started.pop(pod_key, None)
    status.update(ready=True, started=True, containerID="containerd://standin",
                  state={"running": {"startedAt": started}})
    return status, True


def sandbox_image_failure(facts: NodeFacts, pause_image: str) -> str | None:
    """containerd's error when no pod sandbox can be made because the pause image can be neither found
    nor pulled (containerd's CRI sandbox_run.go: "failed to get sandbox image"); hostNetwork pods too."""
    problem = facts.image_problem(pause_image, "IfNotPresent")
    if problem is None:
        return None
    return f'failed to get sandbox image "{pause_image}": {problem[1]}'


def pod_status(facts: NodeFacts, pod: dict, pause_image: str, cni_running: bool) -> dict:
    """The status the kubelet posts for a pod bound to this node."""
    spec = pod.get("spec", {})
    metadata = pod["metadata"]
    component = metadata.get("labels", {}).get("k8s-app", "")
    started = pod.get("status", {}).get("startTime") or rfc3339(now_utc())
    sandbox = sandbox_image_failure(facts, pause_image)
    if sandbox is None and not spec.get("hostNetwork") and not cni_running:
        sandbox = "network is not ready: " + NOT_READY_MESSAGE
    init_statuses = []
    for container in spec.get("initContainers", []):
        status = {"name": container["name"], "image": container["image"], "imageID": "", "ready": False,
                  "restartCount": 0}
        problem = None if sandbox else facts.image_problem(container["image"],
                                                           container.get("imagePullPolicy", "IfNotPresent"))
        if sandbox or problem:
            reason, message = problem or ("PodInitializing", "")
            status["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
            sandbox = sandbox or "PodInitializing"
        else:
            status.update(ready=True, imageID=normalize(container["image"]),
                          state={"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started,
                                                "finishedAt": started}})
        init_statuses.append(status)
    statuses, running = [], []
    for container in spec.get("containers", []):
        status, ok = container_status(facts, f"{metadata.get('namespace')}/{metadata['name']}/{container['name']}",
                                      container, component, sandbox, started)
        statuses.append(status)
        running.append(ok)
    all_running = bool(running) and all(running)
    stamp = rfc3339(now_utc())
    ready = "True" if all_running else "False"
    created = any(s.get("state", {}).get("running") or s.get("lastState") for s in statuses)
    return {"phase": "Running" if created else "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
                           {"type": "Initialized", "status": "True", "lastTransitionTime": started},
                           {"type": "ContainersReady", "status": ready, "lastTransitionTime": stamp},
                           {"type": "Ready", "status": ready, "lastTransitionTime": stamp}],
            "hostIP": pod.get("status", {}).get("hostIP", ""), "podIP": pod.get("status", {}).get("podIP", ""),
            "startTime": started, "containerStatuses": statuses, "qosClass": "BestEffort",
            **({"initContainerStatuses": init_statuses} if init_statuses else {})}
