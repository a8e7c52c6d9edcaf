"""The pods the controller's components create: k0s's kube-system stack and the scheduling of other pods.

Real k0s applies DaemonSets (kube-proxy, kube-router or calico-node, konnectivity-agent) and Deployments
(coredns, metrics-server) from `pkg/component/controller/{kubeproxy,kuberouter,calico,konnectivity,coredns,
metricserver}.go`, with the images of `k0s airgap list-images` and `spec.images.default_pull_policy`. The
stand-in has no DaemonSet or Deployment controller: it creates those pods itself, one per node for the
DaemonSets and one replica of each Deployment on the first schedulable node, and binds every other pod
without a node to a schedulable node, the way the scheduler would. The kubelets report the pods' status.
"""
from __future__ import annotations

import hashlib

from .common import now_utc, rfc3339
from .images import release_images

POD_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated name suffixes


def suffix(seed: str, length: int = 5) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "".join(POD_NAME_ALPHABET[byte % len(POD_NAME_ALPHABET)] for byte in digest[:length])


def daemonset_components(provider: str) -> list[tuple[str, list[str], bool]]:
    """(k8s-app, image components (init first), hostNetwork) per node."""
    cni = [("kube-router", ["cni-node", "kube-router"], True)] if provider == "kuberouter" else \
        [("calico-node", ["calico-cni", "calico-node"], True)]
    return [*cni, ("kube-proxy", ["kube-proxy"], True), ("konnectivity-agent", ["konnectivity-agent"], False)]


DEPLOYMENTS = [("coredns", ["coredns"]), ("metrics-server", ["metrics-server"])]


def schedulable(node: dict) -> bool:
    """Neither cordoned nor tainted NoSchedule."""
    if node.get("spec", {}).get("unschedulable"):
        return False
    return not any(t.get("effect") == "NoSchedule" for t in node.get("spec", {}).get("taints") or [])


def system_pod(app: str, image_components: list[str], host_network: bool, node: str | None, name: str,
               pull_policy: str, owner: tuple[str, str]) -> dict:
    images = release_images()
    containers = [{"name": component, "image": images[component], "imagePullPolicy": pull_policy}
                  for component in image_components]
    spec = {"containers": containers[-1:], "hostNetwork": host_network, "priorityClassName": "system-node-critical"}
    if len(containers) > 1:
        spec["initContainers"] = containers[:-1]
    if app == "coredns":
        spec["dnsPolicy"] = "Default"
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "kube-system", "labels": {"k8s-app": app},
                         "creationTimestamp": rfc3339(now_utc()),
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                              "controller": True}]},
            "spec": spec, "status": {"phase": "Pending"}}


def missing_system_pods(nodes: list[dict], pods: list[dict], provider: str, pull_policy: str) -> list[dict]:
    """The kube-system pods that should exist but do not yet, for the current nodes."""
    present = {(pod["metadata"].get("labels", {}).get("k8s-app"), pod.get("spec", {}).get("nodeName"))
               for pod in pods if pod["metadata"].get("namespace") == "kube-system"}
    apps_present = {app for app, _ in present}
    wanted = []
    for node in nodes:
        name = node["metadata"]["name"]
        for app, components, host_network in daemonset_components(provider):
            if (app, name) not in present:
                wanted.append(system_pod(app, components, host_network, name, f"{app}-{suffix(app + name)}",
                                         pull_policy, ("DaemonSet", app)))
    targets = [node["metadata"]["name"] for node in nodes if schedulable(node)]
    for app, components in DEPLOYMENTS:
        if app not in apps_present:
            # A Deployment replaces an evicted replica under a new name, like its ReplicaSet would.
            replica_set = f"{app}-{suffix(app, 10)[:9]}"
            wanted.append(system_pod(app, components, False, targets[0] if targets else None,
                                     f"{replica_set}-{suffix(app + str(now_utc()))}", pull_policy,
                                     ("ReplicaSet", replica_set)))
    return wanted


def bind_target(nodes: list[dict], index: int) -> str | None:
    """The node for the index-th unbound pod: round robin over the schedulable nodes."""
    targets = sorted(node["metadata"]["name"] for node in nodes if schedulable(node))
    return targets[index % len(targets)] if targets else None
