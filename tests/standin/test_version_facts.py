"""Behaviour that changed between k0s releases (contract §2, §4), for the version the stand-in reports."""
from __future__ import annotations

import os
import time

import yaml
from conftest import start_controller, start_worker, wait_for

BOOTSTRAP_ATTEMPTS = 10  # retry-go's default attempts, which k0s's worker bootstrap uses


def test_admin_conf_points_at_the_address_up_to_v1_31_and_localhost_from_v1_32__contract_2(make_node):
    servers = {}
    for version in ("v1.31.1+k0s.0", "v1.32.1+k0s.0"):
        node = make_node("ac" + version[3:5])
        node.version = version
        start_controller(node)
        conf = yaml.safe_load(node.path("/var/lib/k0s/pki/admin.conf").read_text())
        servers[version] = conf["clusters"][0]["cluster"]["server"].rsplit(":", 1)[0]
        node.ok("stop")
    assert servers == {"v1.31.1+k0s.0": "https://127.0.0.1", "v1.32.1+k0s.0": "https://localhost"}


def test_controller_token_secret_shape_per_version__contract_4(make_node):
    usages = {}
    for version in ("v1.31.1+k0s.0", "v1.33.4+k0s.0"):
        node = make_node("ts" + version[3:5])
        node.version = version
        node.write("/ca.crt", "-----BEGIN CERTIFICATE-----\n")
        out = node.path("/out")
        node.ok("token", "pre-shared", "--role", "controller", "--cert", "/ca.crt", "--url", "https://192.0.2.10:9443",
                "--out", "/out")
        secret = yaml.safe_load(next(out.glob("bootstrap-token-*.yaml")).read_text())
        usages[version] = sorted(key for key in secret["stringData"] if key.startswith("usage-"))
    assert usages == {"v1.31.1+k0s.0": ["usage-controller-join"],
                      "v1.33.4+k0s.0": ["usage-bootstrap-controller-join", "usage-controller-join"]}


def worker_exit(worker, timeout: float = 30) -> str:
    """Wait for the worker process to give up (host mode has no systemd to start it again); its log."""
    def exited():
        pid = worker.pids()[0]
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie of the detached child counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] == "Z"
    wait_for(exited, timeout, "the worker to give up")
    return worker.log()


def test_worker_gives_up_when_the_api_never_answers__contract_9(make_node):
    controller = start_controller(make_node("down"))
    token = controller.ok("token", "create", "--role=worker").strip()
    controller.ok("stop")
    worker = start_worker(make_node("wdown"), token, retry_delay_scale=0.005)
    log = worker_exit(worker)
    assert log.count("retrying") == BOOTSTRAP_ATTEMPTS - 1 and "giving up after 10 attempts" in log


def test_worker_with_an_expired_token_is_refused__contract_4(make_node):
    controller = start_controller(make_node("exp"))
    token = controller.ok("token", "create", "--role=worker", "--expiry", "1s").strip()
    time.sleep(2)
    worker = start_worker(make_node("wexp"), token, retry_delay_scale=0.005)
    assert "Unauthorized" in worker_exit(worker)
    assert "wexp" not in controller.nodes()


def test_worker_of_another_minor_finds_no_worker_profile__contract_10(make_node):
    controller = start_controller(make_node("skew"))
    token = controller.ok("token", "create", "--role=worker").strip()
    worker = make_node("wskew")
    worker.version = "v1.32.1+k0s.0"
    start_worker(worker, token, "--kubelet-extra-args=--hostname-override=wskew", retry_delay_scale=0.005)
    assert 'configmaps \\"worker-config-default-1.32\\" not found' in worker_exit(worker)
    assert "wskew" not in controller.nodes()
