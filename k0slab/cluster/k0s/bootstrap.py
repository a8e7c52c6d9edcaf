"""What k0slab does on the nodes, step by step, through the k0s command line only.

Everything here uses commands, paths and outputs listed in shared/k0s-contract.md, so the
same code drives the real k0s and the test stand-in. Each step checks first whether it is
already done, which makes `lab.up` safe to repeat.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

import yaml

from k0slab.vms.remote import Runner
from k0slab.core.waits import NotYet
from k0slab.cluster.k0s.config import CONFIG_PATH, node_ip_args
from k0slab.cluster.k0s.token import secret_manifest_path

K0S_BINARY = "/usr/local/bin/k0s"  # contract section 3
TOKEN_FILE = "/etc/k0s/k0stoken"  # k0sctl's path; it must stay after the join (k0s issue 7202)
PKI_DIR = "/var/lib/k0s/pki"
ADMIN_KUBECONFIG = f"{PKI_DIR}/admin.conf"
KUBECTL = f"KUBECONFIG={ADMIN_KUBECONFIG} {K0S_BINARY} kubectl"
# The read-only disk that carries the k0s binary into every VM (see lab.binary_disk).
BINARY_DISK_DEVICE = "/dev/vdb"


@dataclass(frozen=True)
class BinaryPayload:
    sha256: str
    size: int


def install_binary_from_disk(node: Runner, payload: BinaryPayload) -> str:
    """Copy k0s from the attached binary disk; 'current' if already there, 'stale' if the disk differs."""
    script = f"""
set -e
sum() {{ sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }}
if [ "$(sum {K0S_BINARY})" = {payload.sha256} ]; then echo current; exit 0; fi
if [ -b {BINARY_DISK_DEVICE} ]; then
  head -c {payload.size} {BINARY_DISK_DEVICE} > {K0S_BINARY}.new
  if [ "$(sum {K0S_BINARY}.new)" = {payload.sha256} ]; then
    chmod 755 {K0S_BINARY}.new && mv {K0S_BINARY}.new {K0S_BINARY} && echo disk && exit 0
  fi
  rm -f {K0S_BINARY}.new
fi
echo stale
"""
    return node.run(script).stdout.strip()


def k0s_version(node: Runner) -> str:
    return node.run(f"{K0S_BINARY} version").stdout.strip()


@dataclass(frozen=True)
class NodeVersions:
    """A node's k0s version is two facts: the binary on its disk and the process that runs."""

    on_disk: str | None  # None: no k0s binary
    running: str | None  # None: k0s not running

    @property
    def state(self) -> str:
        if self.running:
            return "running"
        return "not installed" if self.on_disk is None else "not running"


def node_versions(node: Runner, timeout: float = 20) -> NodeVersions:
    """`k0s version` of the binary and the `Version:` line of `k0s status` (contract section 2)."""
    script = (
        f"{K0S_BINARY} version 2>/dev/null; echo '|'; "
        f"{K0S_BINARY} status 2>/dev/null | sed -n 's/^Version: *//p'"
    )
    on_disk, _, running = node.run(script, check=False, timeout=timeout).stdout.partition("|")
    return NodeVersions(on_disk.strip() or None, running.strip() or None)


def place_config(controller: Runner, text: str) -> None:
    controller.put_text(text, CONFIG_PATH, mode=0o644)
    # Strict validation by k0s itself: unknown fields in the profile's k0s section fail here, early.
    controller.run(f"{K0S_BINARY} config validate --config {CONFIG_PATH}")


def place_ca(controller: Runner, ca_cert_pem: bytes, ca_key_pem: bytes) -> None:
    """A CA placed before the first start is used by k0s instead of making its own (docs/custom-ca.md)."""
    controller.put_text(ca_cert_pem.decode(), f"{PKI_DIR}/ca.crt", mode=0o644)
    controller.put_text(ca_key_pem.decode(), f"{PKI_DIR}/ca.key", mode=0o600)


def place_join_secret(controller: Runner, token_id: str, manifest: str) -> None:
    """The controller applies its manifests folder at start: the token works as soon as the API does."""
    controller.put_text(manifest, secret_manifest_path(token_id), mode=0o600)


def remove_join_secret(controller: Runner, token_id: str) -> None:
    """Remove the manifest first (or k0s would re-apply it), then invalidate the token in the API."""
    controller.run(f"rm -f {secret_manifest_path(token_id)}")
    controller.run(f"{K0S_BINARY} token invalidate {shlex.quote(token_id)}", check=False)


def service_state(node: Runner, role: str) -> str:
    """'running', 'installed' (unit written, not active) or 'absent', in one cheap round trip:
    `k0s status` would start a k0s process, which costs seconds under emulation."""
    unit = "k0sworker" if role == "worker" else "k0scontroller"  # the units `k0s install` writes
    script = (
        f"if [ -f /etc/systemd/system/{unit}.service ]; then "
        f"systemctl is-active --quiet {unit} && echo running || echo installed; else echo absent; fi"
    )
    return node.run(script).stdout.strip()


def install_controller(controller: Runner, role: str, ip: str) -> None:
    flags = ["-c", CONFIG_PATH]
    if role == "controller+worker":
        # --no-taints: the controller also runs workloads, like the seed's --enable-worker setup.
        flags = ["--enable-worker", "--no-taints", *flags, node_ip_args(ip)]
    controller.run(f"{K0S_BINARY} install controller {shlex.join(flags)}")


def install_worker(worker: Runner, token: str, ip: str) -> None:
    worker.put_text(token, TOKEN_FILE, mode=0o600)
    worker.run(f"{K0S_BINARY} install worker --token-file {TOKEN_FILE} {shlex.quote(node_ip_args(ip))}")


def start(node: Runner) -> None:
    node.run(f"{K0S_BINARY} start")


def readyz(controller: Runner) -> None:
    """k0sctl's readiness test: /readyz prints exactly `ok` (contract section 7)."""
    result = controller.run(f"{KUBECTL} get --raw=/readyz", check=False, timeout=30)
    if result.stdout.strip() != "ok":
        raise NotYet(f"/readyz: {result.last_error_line() if not result.ok else result.stdout.strip()[:200]}")


def nodes(controller: Runner) -> list[dict[str, Any]]:
    result = controller.run(f"{KUBECTL} get nodes -o json", check=False, timeout=30)
    if not result.ok:
        raise NotYet(f"get nodes: {result.last_error_line()}")
    return json.loads(result.stdout).get("items", [])


def node_ready(item: dict[str, Any]) -> tuple[bool, str]:
    """(ready, 'Ready=False (Reason: message)')."""
    for condition in item.get("status", {}).get("conditions", []):
        if condition.get("type") == "Ready":
            text = f"Ready={condition.get('status')}"
            if condition.get("reason"):
                text += f" ({condition['reason']})"
            return condition.get("status") == "True", text
    return False, "no Ready condition yet"


def internal_ip(item: dict[str, Any]) -> str | None:
    for address in item.get("status", {}).get("addresses", []):
        if address.get("type") == "InternalIP":
            return address.get("address")
    return None


def wait_nodes_ready(controller: Runner, expected: list[str]) -> dict[str, dict[str, Any]]:
    """Raise NotYet naming each node that is missing or not Ready."""
    return check_nodes_ready(nodes(controller), expected)


def check_nodes_ready(items: list[dict[str, Any]], expected: list[str]) -> dict[str, dict[str, Any]]:
    """The listed nodes by name when every expected one is Ready, else NotYet naming the others."""
    listed = {item["metadata"]["name"]: item for item in items}
    problems = []
    for name in expected:
        if name not in listed:
            problems.append(f"{name} not registered yet")
            continue
        ready, text = node_ready(listed[name])
        if not ready:
            problems.append(f"{name} {text}")
    if problems:
        raise NotYet("; ".join(problems))
    return listed


def pods(controller: Runner) -> dict[str, Any]:
    """`kubectl get pods -A -o json`: the pod list the diagnosis of a slow bring-up reads."""
    result = controller.run(f"{KUBECTL} get pods -A -o json", check=False, timeout=30)
    if not result.ok:
        raise NotYet(f"get pods: {result.last_error_line()}")
    return json.loads(result.stdout)


def events(controller: Runner) -> dict[str, Any]:
    """`kubectl get events -A -o json`: where the kubelet says why a pod's sandbox cannot be made.
    Empty when the listing fails: the events only sharpen a diagnosis the pods already allow."""
    result = controller.run(f"{KUBECTL} get events -A -o json", check=False, timeout=30)
    try:
        return json.loads(result.stdout) if result.ok else {}
    except json.JSONDecodeError:
        return {}


def previous_log(controller: Runner, namespace: str, pod: str, container: str) -> str:
    """The log of a container's previous run ("" when it has none)."""
    args = shlex.join(["logs", "-n", namespace, pod, "-c", container, "--previous", "--tail=50"])
    return controller.run(f"{KUBECTL} {args}", check=False, timeout=30).stdout


def pods_wide(controller: Runner) -> str:
    result = controller.run(f"{KUBECTL} get pods -A -o wide 2>&1", check=False, timeout=30)
    return result.stdout


def admin_kubeconfig(controller: Runner, server_ip: str, lab: str) -> str:
    """admin.conf points at localhost (contract section 2): point it at the controller's lab IP
    and give it lab-specific names, so it merges with other labs' kubeconfigs."""
    config = yaml.safe_load(controller.run(f"cat {ADMIN_KUBECONFIG}").stdout)
    cluster = config["clusters"][0]
    cluster["cluster"]["server"] = f"https://{server_ip}:6443"
    cluster["name"] = lab
    user = config["users"][0]
    user["name"] = f"{lab}-admin"
    config["contexts"] = [{"name": f"{lab}-admin", "context": {"cluster": lab, "user": f"{lab}-admin"}}]
    config["current-context"] = f"{lab}-admin"
    return yaml.safe_dump(config, default_flow_style=False, sort_keys=False)


def journal(node: Runner, lines: int = 2000) -> str:
    result = node.run(
        f"journalctl --no-pager -n {lines} -u k0scontroller -u k0sworker 2>&1", check=False, timeout=60
    )
    return result.stdout
