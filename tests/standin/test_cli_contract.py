"""Commands that need no running cluster: version, config, install, start/stop/status/reset (contract §2, §3, §5)."""
from __future__ import annotations

import json
import os
import re

import pytest
import yaml
from conftest import STANDIN, load_standin, start_controller, wait_for


def test_version_prints_bare_version__contract_2(make_node):
    node = make_node("v")
    assert node.ok("version") == "v1.31.1+k0s.0\n"
    assert node.ok("version", env=node.env(K0S_STANDIN_VERSION="v1.30.5+k0s.0")) == "v1.30.5+k0s.0\n"


def test_standin_is_an_executable_python_script__contract_3():
    assert os.stat(STANDIN).st_mode & 0o777 == 0o755
    assert STANDIN.read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_unknown_command_fails_like_cobra__contract_2(make_node):
    result = make_node("u").k0s("frobnicate")
    assert result.returncode == 1
    assert result.stderr.startswith('Error: unknown command "frobnicate" for "k0s"')


def test_config_create_prints_a_default_clusterconfig_that_validates__contract_5(make_node):
    node = make_node("cfg")
    text = node.ok("config", "create")
    config = yaml.safe_load(text)
    assert config["apiVersion"] == "k0s.k0sproject.io/v1beta1"
    assert config["kind"] == "ClusterConfig"
    assert config["spec"]["api"]["port"] == 6443 and config["spec"]["api"]["k0sApiPort"] == 9443
    assert config["spec"]["network"] == {**config["spec"]["network"], "provider": "kuberouter",
                                         "podCIDR": "10.244.0.0/16", "serviceCIDR": "10.96.0.0/12"}
    assert config["spec"]["storage"]["type"] == "etcd"
    node.write("/etc/k0s/default.yaml", text)
    node.ok("config", "validate", "--config", "/etc/k0s/default.yaml")


PARTIAL_CONFIG = """\
# k0slab writes block style: nested maps and lists of scalars
apiVersion: k0s.k0sproject.io/v1beta1
kind: ClusterConfig
metadata:
  name: k0s
spec:
  api:
    address: 192.0.2.10   # lab IP
    sans:
      - 192.0.2.10
      - "cp1.lab"
  network:
    provider: calico
  images:
    default_pull_policy: Never
"""


def test_config_validate_accepts_a_partial_block_style_config__contract_5(make_node):
    node = make_node("cfg")
    node.write("/etc/k0s/k0s.yaml", PARTIAL_CONFIG)
    result = node.k0s("config", "validate", "--config", "/etc/k0s/k0s.yaml")
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize("change, expected", [
    (("spec:\n", "spec:\n  bogus: 1\n"), 'json: unknown field "bogus"'),
    (("  api:\n", "  api:\n    adress: 192.0.2.10\n"), 'json: unknown field "adress"'),
    (("kind: ClusterConfig\n", "kind: ClusterConfig\nbogusTop: x\n"), 'json: unknown field "bogusTop"'),
    (("k0s.k0sproject.io/v1beta1", "k0s.k0sproject.io/v1"), 'apiVersion: Unsupported value: "k0s.k0sproject.io/v1"'),
    (("kind: ClusterConfig", "kind: Cluster"), 'kind: Unsupported value: "Cluster"'),
    (("provider: calico", "provider: calico\n    podCIDR: 10.244.0.0/33"),
     'spec: network: podCIDR: Invalid value: "10.244.0.0/33": invalid CIDR address'),
    (("provider: calico", "provider: calico\n    serviceCIDR: banana"),
     'spec: network: serviceCIDR: Invalid value: "banana": invalid CIDR address'),
    (("address: 192.0.2.10", "address: 192.0.2.300"),
     'spec: api: address: Invalid value: "192.0.2.300": invalid IP address'),
    (("      - \"cp1.lab\"", "      - \"not a name!\""),
     'spec: api: sans[1]: Invalid value: "not a name!": invalid IP address / DNS name'),
])
def test_config_validate_is_strict_and_names_the_field__contract_5(make_node, change, expected):
    node = make_node("cfg")
    node.write("/etc/k0s/k0s.yaml", PARTIAL_CONFIG.replace(*change))
    result = node.k0s("config", "validate", "--config", "/etc/k0s/k0s.yaml")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ")
    assert expected in result.stderr


def test_install_controller_writes_unit_with_absolute_paths__contract_2(make_node):
    node = make_node("inst")
    node.write_config()
    node.ok("install", "controller", "-c", "etc/k0s/k0s.yaml", "--enable-worker", "--no-taints",
            "--kubelet-extra-args=--node-ip=192.0.2.10 --hostname-override=cp1", "--labels", "a=b,c=d",
            cwd=str(node.root))
    unit = node.path("/etc/systemd/system/k0scontroller.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start == (f"ExecStart=/usr/local/bin/k0s controller --config={node.root}/etc/k0s/k0s.yaml "
                          "--enable-worker=true --kubelet-extra-args=--node-ip=192.0.2.10\\x20--hostname-override=cp1 "
                          "--labels=a=b,c=d --no-taints=true")
    assert "Restart=always" in unit and "WantedBy=multi-user.target" in unit


def test_install_refuses_to_overwrite_a_unit_without_force__contract_2(make_node):
    node = make_node("inst")
    node.write("/etc/k0s/k0stoken", "x")
    node.ok("install", "worker", "--token-file", "/etc/k0s/k0stoken")
    again = node.k0s("install", "worker", "--token-file", "/etc/k0s/k0stoken", "--labels=x=y")
    assert again.returncode == 1
    assert ("Error: failed to install worker service: Init already exists: /etc/systemd/system/k0sworker.service"
            in again.stderr)
    node.ok("install", "worker", "--token-file", "/etc/k0s/k0stoken", "--labels=x=y", "--force")
    assert "--labels=x=y" in node.path("/etc/systemd/system/k0sworker.service").read_text()


@pytest.mark.parametrize("args, expected", [
    (("install", "controller", "-c", "/etc/k0s/missing.yaml"), "failed to read configuration file"),
    (("install", "controller", "--labels", "novalue"), "must be formatted as key=value"),
    (("install", "controller", "--bogus"), "unknown flag: --bogus"),
    (("install", "worker"), 'required flag(s) "token-file" not set'),
    (("install", "controller", "--start"), "unknown flag: --start"),  # --start only exists from v1.35.1
])
def test_install_validates_flags__contract_2(make_node, args, expected):
    result = make_node("inst").k0s(*args)
    assert result.returncode == 1 and expected in result.stderr


def test_install_validates_the_config_strictly__contract_5(make_node):
    node = make_node("inst")
    node.write("/etc/k0s/k0s.yaml", PARTIAL_CONFIG.replace("provider: calico", "provider: calico\n    mtu: 1450"))
    result = node.k0s("install", "controller", "-c", "/etc/k0s/k0s.yaml")
    assert result.returncode == 1 and 'unknown field "mtu"' in result.stderr
    assert not node.path("/etc/systemd/system/k0scontroller.service").exists()


@pytest.mark.parametrize("command", [["install", "controller"], ["start"], ["stop"], ["reset"]])
def test_privileged_commands_refuse_non_root__contract_2(make_node, monkeypatch, capsys, command):
    # In-process with a faked uid: the interpreter under test may not be executable by an unprivileged user.
    standin = load_standin(make_node("nonroot"), monkeypatch)
    monkeypatch.delenv("K0S_STANDIN_ALLOW_NONROOT")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert standin.main(command) == 1
    assert capsys.readouterr().err == "Error: this command must be run as root\n"


def test_start_without_installed_service_fails__contract_2(make_node):
    result = make_node("svc").k0s("start")
    assert (result.returncode, result.stderr.strip()) == (1, "Error: k0s has not been installed as a service")


def test_status_when_down_says_not_running__contract_2(make_node):
    result = make_node("svc").k0s("status")
    assert (result.returncode, result.stderr.strip()) == (1, "Error: k0s is not running")


def test_start_stop_status_reset_lifecycle__contract_2(make_node):
    node = start_controller(make_node("life"))
    again = node.k0s("start")
    assert (again.returncode, again.stderr.strip()) == (1, "Error: already running")

    status = node.ok("status")
    pid = node.pids()[0]
    assert status == ("Version: v1.31.1+k0s.0\n"
                      f"Process ID: {pid}\n"
                      "Role: controller\n"
                      "Workloads: false\n"
                      "SingleNode: false\n"
                      "Init System: linux-systemd\n"
                      "Service file: /etc/systemd/system/k0scontroller.service\n")
    as_json = json.loads(node.ok("status", "-o", "json"))
    assert (as_json["Pid"], as_json["Role"], as_json["Workloads"]) == (pid, "controller", False)
    assert yaml.safe_load(node.ok("status", "-o", "yaml"))["Role"] == "controller"

    refused = node.k0s("reset")
    assert refused.returncode == 1
    assert "another k0s process is still running, please stop k0s before reset" in refused.stderr

    node.ok("stop")
    assert node.k0s("status").returncode == 1
    stopped = node.k0s("stop")
    assert (stopped.returncode, stopped.stderr.strip()) == (1, "Error: already stopped")

    node.ok("reset")
    assert not node.path("/var/lib/k0s").exists()
    assert not node.path("/etc/systemd/system/k0scontroller.service").exists()
    assert node.path("/etc/k0s/k0s.yaml").exists()


def test_single_node_status_and_no_join_tokens__contract_2(make_node):
    node = start_controller(make_node("single"), "--single",
                            "--kubelet-extra-args=--hostname-override=solo --node-ip=127.0.0.1")
    status = node.ok("status")
    assert "Role: controller+worker\n" in status and "SingleNode: true\n" in status
    assert "Workloads: true\n" in status
    wait_for(lambda: "Kube-api probing successful: true\n" in node.ok("status"), 10, "embedded worker probe")
    refused = node.k0s("token", "create", "--role=worker")
    assert refused.returncode == 1
    assert "refusing to create token: cannot join into a single node cluster" in refused.stderr
    solo = node.nodes()["solo"]
    assert "taints" not in solo["spec"]  # --single implies no taints


def test_crash_at_start_knob_makes_the_process_exit_1(make_node):
    node = make_node("crash")
    node.write_config()
    node.knobs(crash_at_start=True)
    result = node.k0s("controller", "-c", "/etc/k0s/k0s.yaml")
    assert result.returncode == 1
    assert re.search(r'level=error msg="crash_at_start is set in /etc/k0s-standin.yaml', result.stdout)
