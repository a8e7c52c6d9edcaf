"""A node's identity: name, addresses, labels, arch, OS image."""
from __future__ import annotations

import os
import re
import shlex
import socket

from .common import CONTAINER_RUNTIME, CliError, host_path, kube_version, now_utc, rfc3339
from .config import first_ipv4
from .kubelet import NOT_READY_MESSAGE


def node_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def os_image() -> str:
    """PRETTY_NAME of the machine's os-release (the real file also in host tests: it is not k0s's)."""
    for path in (host_path("/etc/os-release"), "/etc/os-release"):
        try:
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    if line.startswith("PRETTY_NAME="):
                        return line.split("=", 1)[1].strip().strip('"')
        except OSError:
            continue
    return "Linux"


def kubelet_arg(extra_args: str, name: str) -> str | None:
    words = shlex.split(extra_args or "")
    for index, word in enumerate(words):
        if word.startswith(f"--{name}="):
            return word.split("=", 1)[1]
        if word == f"--{name}" and index + 1 < len(words):
            return words[index + 1]
    return None


LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


def parse_labels(text: str) -> dict[str, str]:
    labels = {}
    for pair in filter(None, (text or "").split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f'invalid argument "{text}" for "--labels" flag: {pair} must be formatted as key=value')
        if not LABEL_KEY.match(key) or not LABEL_VALUE.match(value):
            raise CliError(f'invalid node label "{pair}": keys and values must be valid Kubernetes label names')
        labels[key] = value
    return labels


class NodeIdentity:
    def __init__(self, extra_args: str, labels: str, control_plane: bool, taint: bool):
        hostname = kubelet_arg(extra_args, "hostname-override") or socket.gethostname()
        self.name = hostname.lower()
        self.ip = kubelet_arg(extra_args, "node-ip") or first_ipv4()
        self.labels = {"beta.kubernetes.io/arch": node_arch(), "beta.kubernetes.io/os": "linux",
                       "kubernetes.io/arch": node_arch(), "kubernetes.io/hostname": self.name,
                       "kubernetes.io/os": "linux"}
        if control_plane:
            self.labels["node-role.kubernetes.io/control-plane"] = "true"
            self.labels["node.k0sproject.io/role"] = "control-plane"
        self.labels.update(parse_labels(labels))
        self.taints = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}] if taint else []

    def node_object(self) -> dict:
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.name, "labels": self.labels},
                "spec": {"taints": self.taints} if self.taints else {},
                "status": self.status(False)}

    def status(self, network_ready: bool) -> dict:
        stamp = rfc3339(now_utc())

        def condition(kind, status, reason, message):
            return {"type": kind, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}

        uname = os.uname()
        return {
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                          "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status") if network_ready
                else condition("Ready", "False", "KubeletNotReady", NOT_READY_MESSAGE),
            ],
            "addresses": [{"type": "InternalIP", "address": self.ip}, {"type": "Hostname", "address": self.name}],
            "nodeInfo": {"architecture": node_arch(), "operatingSystem": "linux", "osImage": os_image(),
                         "kernelVersion": uname.release, "containerRuntimeVersion": CONTAINER_RUNTIME,
                         "kubeletVersion": kube_version(), "kubeProxyVersion": kube_version(),
                         "machineID": "", "systemUUID": "", "bootID": ""},
        }


