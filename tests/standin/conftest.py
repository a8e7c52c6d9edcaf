"""Harness for the k0s stand-in: nodes are temporary roots on the host, talking over 127.0.0.1 only."""
from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from standin_build import standin_binary

STANDIN = standin_binary()
# The VMs run the stand-in under Debian's python3 with cryptography 38; point this at such an interpreter
# to check compatibility (default: the interpreter running the tests).
STANDIN_PYTHON = os.environ.get("K0S_STANDIN_TEST_PYTHON", sys.executable)
UNITS = ("k0scontroller", "k0sworker")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Node:
    """One machine: a K0S_STANDIN_ROOT directory in which the stand-in keeps /etc, /var/lib/k0s, /run/k0s."""

    def __init__(self, name: str):
        # Short path: the status socket lives under it and unix socket paths are limited to 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix=f"k0s-{name}-", dir="/tmp"))
        self.name = name
        self.api_port = free_port()
        self.join_port = free_port()
        self.version: str | None = None  # the k0s version the stand-in reports on this node (default: its own)
        self.give_egress()

    def env(self, **extra) -> dict:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("K0S_", "KUBECONFIG"))}
        env.update(K0S_STANDIN_ROOT=str(self.root), K0S_STANDIN_ALLOW_NONROOT="1")
        if self.version:
            env["K0S_STANDIN_VERSION"] = self.version
        env.update(extra)
        return env

    def k0s(self, *args: str, stdin: str | None = None, env: dict | None = None, timeout: float = 60,
            **popen) -> subprocess.CompletedProcess:
        return subprocess.run([STANDIN_PYTHON, str(STANDIN), *args], input=stdin, capture_output=True, text=True,
                              env=env or self.env(), timeout=timeout, check=False, **popen)

    def ok(self, *args: str, **kwargs) -> str:
        result = self.k0s(*args, **kwargs)
        assert result.returncode == 0, f"k0s {' '.join(args)} failed: {result.stderr}"
        return result.stdout

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def write(self, absolute: str, text: str) -> Path:
        target = self.path(absolute)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target

    # Egress as the stand-in judges it on a node (contract §9): a default route, a nameserver, CA certificates.
    DEFAULT_ROUTE = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
                     "eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
                     "eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")

    def give_egress(self) -> None:
        self.write("/proc/net/route", self.DEFAULT_ROUTE)
        self.write("/etc/resolv.conf", "nameserver 192.168.0.1\n")
        self.write("/etc/ssl/certs/ca-certificates.crt", "-----BEGIN CERTIFICATE-----\n")

    def remove_default_route(self) -> None:
        self.write("/proc/net/route", "".join(line + "\n" for line in self.DEFAULT_ROUTE.splitlines()
                                              if "\t00000000\t0100A8C0" not in line))

    def remove_ca_certificates(self) -> None:
        """No registry TLS: the one egress condition an airgap lab lacks (it keeps its route and resolver)."""
        self.path("/etc/ssl/certs/ca-certificates.crt").unlink()

    def remove_egress(self) -> None:
        self.remove_default_route()
        self.write("/etc/resolv.conf", "")
        self.remove_ca_certificates()

    def knobs(self, **values) -> None:
        self.write("/etc/k0s-standin.yaml", "".join(f"{key}: {json.dumps(value)}\n" for key, value in values.items()))

    def write_config(self, extra_api: str = "") -> None:
        self.write("/etc/k0s/k0s.yaml", f"""\
apiVersion: k0s.k0sproject.io/v1beta1
kind: ClusterConfig
metadata:
  name: k0s
spec:
  api:
    address: 127.0.0.1
    port: {self.api_port}
    k0sApiPort: {self.join_port}
    sans:
      - 127.0.0.1
{extra_api}""")

    def log(self) -> str:
        log_file = self.path("/var/log/k0s.log")
        return log_file.read_text() if log_file.exists() else ""

    def ca_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.path("/var/lib/k0s/pki/ca.crt")))

    def readyz(self) -> tuple[int, str]:
        import http.client
        connection = http.client.HTTPSConnection("127.0.0.1", self.api_port, context=self.ca_context(), timeout=5)
        try:
            connection.request("GET", "/readyz")
            response = connection.getresponse()
            return response.status, response.read().decode()
        except OSError:
            return 0, ""
        finally:
            connection.close()

    def wait_ready(self, timeout: float = 20) -> None:
        wait_for(lambda: self.path("/var/lib/k0s/pki/ca.crt").exists() and self.readyz() == (200, "ok"),
                 timeout, f"{self.name} API /readyz ok")

    def nodes(self) -> dict[str, dict]:
        listing = json.loads(self.ok("kubectl", "get", "nodes", "-o", "json"))
        return {item["metadata"]["name"]: item for item in listing["items"]}

    def ready_condition(self, node: str) -> str | None:
        item = self.nodes().get(node)
        if item is None:
            return None
        return next(c["status"] for c in item["status"]["conditions"] if c["type"] == "Ready")

    def pids(self) -> list[int]:
        found = []
        for unit in UNITS:
            pid_file = self.path(f"/run/k0s/{unit}.pid")
            if pid_file.exists():
                found.append(int(pid_file.read_text()))
        return found

    def cleanup(self) -> None:
        for pid in self.pids():
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def load_standin(node: Node, monkeypatch, module: str = "cli"):
    """A module of the stand-in's package, imported afresh and bound to the node's root (its paths are read
    from the environment at import)."""
    for key, value in node.env().items():
        monkeypatch.setenv(key, value)
    for loaded in [name for name in sys.modules if name == "k0s_standin" or name.startswith("k0s_standin.")]:
        monkeypatch.delitem(sys.modules, loaded)
    return importlib.import_module(f"k0s_standin.{module}")


def start_controller(node: Node, *install_flags: str, **knobs) -> Node:
    node.knobs(**{"ready_delay_seconds": 0.3, "heartbeat_seconds": 0.5, **knobs})
    node.write_config()
    node.ok("install", "controller", "-c", "/etc/k0s/k0s.yaml", *install_flags)
    node.ok("start")
    node.wait_ready()
    return node


def start_worker(node: Node, token: str, *install_flags: str, **knobs) -> Node:
    node.knobs(**{"heartbeat_seconds": 0.5, **knobs})
    node.write("/etc/k0s/k0stoken", token)
    node.ok("install", "worker", "--token-file", "/etc/k0s/k0stoken", *install_flags)
    node.ok("start")
    return node


@pytest.fixture
def make_node():
    """Factory of nodes; every process they started is killed and every root removed afterwards."""
    created: list[Node] = []

    def factory(name: str) -> Node:
        node = Node(name)
        created.append(node)
        return node

    yield factory
    for node in created:
        node.cleanup()


@pytest.fixture(scope="module")
def cluster():
    """A controller+worker (`cp1`) and a joined worker (`w1`), shared by the read-mostly tests of a module."""
    controller, worker = Node("cp1"), Node("w1")
    try:
        start_controller(controller, "--enable-worker",
                         "--kubelet-extra-args=--node-ip=127.0.0.1 --hostname-override=CP1")
        token = controller.ok("token", "create", "--role=worker").strip()
        start_worker(worker, token, "--kubelet-extra-args=--node-ip=127.0.0.1 --hostname-override=w1",
                     "--labels=lab.k0slab.dev/pool=blue,tier=edge")
        wait_for(lambda: controller.ready_condition("w1") == "True", 20, "w1 Ready")
        yield controller, worker
    finally:
        worker.cleanup()
        controller.cleanup()
