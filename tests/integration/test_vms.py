"""Issue 2, end to end: launch amd64 and arm64 VMs, list, exec, transfer, delete with nothing left."""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirt
import pytest

from k0slab.core.state import LabDir
from k0slab.vms.remote import RemoteCommandTimeout
from k0slab.vms.ssh import SSHNode

from .conftest import invoke, k0slab_domains, k0slab_networks

pytestmark = pytest.mark.vm
LAB = "itvm"


@pytest.fixture(scope="module")
def vms():
    """Two amd64 VMs and one arm64 VM, launched at once through the CLI (as three users would)."""
    launches = [
        ("node1", "amd64"), ("node2", "amd64"), ("arm1", "arm64"),
    ]
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(
                lambda nv: invoke("vm.launch", nv[0], "--arch", nv[1], "--memory", "1G", "--lab", LAB),
                launches,
            ))
        yield {name: result for (name, _), result in zip(launches, results, strict=True)}
    finally:
        for name, _ in launches:
            invoke("vm.delete", name, "--purge", "--lab", LAB, check=False)


def test_list_shows_both_running_with_reserved_ips(vms):
    rows = json.loads(invoke("vm.list", "--json", "--lab", LAB).stdout)
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {"node1", "node2", "arm1"}
    for row in rows:
        assert row["state"] == "Running"
        assert {"name", "state", "ipv4", "image", "arch"} <= set(row)
    addresses = [row["ipv4"] for row in rows]
    assert len(set(addresses)) == 3
    assert len({address.rsplit(".", 1)[0] for address in addresses}) == 1
    # The address each guest really took is the one reserved for it before it booted.
    for name in ("node1", "node2"):
        seen = invoke("vm.exec", name, "--lab", LAB, "--", "ip", "-4", "-o", "addr", "show", "scope", "global").stdout
        assert by_name[name]["ipv4"] + "/24" in seen


def test_exec_reaches_a_tcp_port_on_the_other_vm(vms):
    node2 = json.loads(invoke("vm.info", "node2", "--json", "--lab", LAB).stdout)["ipv4"]
    result = invoke("vm.exec", "node1", "--lab", LAB, "--", "sh", "-c", f"nc -w 5 {node2} 22 </dev/null | head -n1")
    assert result.stdout.startswith("SSH-2.0-OpenSSH")


def test_exec_propagates_the_exit_code(vms):
    result = invoke("vm.exec", "node1", "--lab", LAB, "--", "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert result.returncode == 7
    assert result.stdout.strip() == "out" and result.stderr.strip() == "err"


def test_a_hanging_command_fails_within_its_bound_and_the_next_one_works(vms):
    """A silent command is its own error (not a dropped connection to retry), and within its bound."""
    lab = LabDir(LAB)
    node = lab.load().nodes["node1"]
    ssh = SSHNode("node1", node.ip, lab.ssh_key, lab.known_hosts)
    try:
        started = time.monotonic()
        with pytest.raises(RemoteCommandTimeout) as timed_out:
            ssh.run("sleep 60", timeout=3)
        assert time.monotonic() - started < 15
        assert "node1: `sleep 60` gave no answer for 3s" in str(timed_out.value)
        assert "node1.console.log" in timed_out.value.hint
        assert ssh.run("echo still here").stdout.strip() == "still here"
    finally:
        ssh.close()


def test_transfer_round_trips_a_file(vms, tmp_path: Path):
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(3 << 20))
    back = tmp_path / "back.bin"
    invoke("vm.transfer", str(source), "node1:/tmp/payload.bin", "--lab", LAB)
    remote_sum = invoke("vm.exec", "node1", "--lab", LAB, "--", "sha256sum", "/tmp/payload.bin").stdout.split()[0]
    invoke("vm.transfer", "node1:/tmp/payload.bin", str(back), "--lab", LAB)
    expected = hashlib.sha256(source.read_bytes()).hexdigest()
    assert remote_sum == expected
    assert hashlib.sha256(back.read_bytes()).hexdigest() == expected


def test_arm64_guest_reports_aarch64(vms):
    assert invoke("vm.exec", "arm1", "--lab", LAB, "--", "uname", "-m").stdout.strip() == "aarch64"


def test_used_name_is_refused_and_creates_nothing(vms):
    before = json.loads(invoke("vm.list", "--json", "--lab", LAB).stdout)
    result = invoke("vm.launch", "node1", "--lab", LAB, check=False)
    assert result.returncode == 1
    assert "'node1' is already used" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert json.loads(invoke("vm.list", "--json", "--lab", LAB).stdout) == before


def test_delete_leaves_nothing_behind(vms):
    conn = libvirt.open("qemu:///system")
    lab = LabDir(LAB)
    assert k0slab_domains(conn, LAB) and k0slab_networks(conn, LAB)
    for name in ("node1", "node2", "arm1"):
        invoke("vm.delete", name, "--purge", "--lab", LAB)
    assert k0slab_domains(conn, LAB) == []
    assert k0slab_networks(conn, LAB) == []
    assert not lab.path.exists()
    assert not lab.disks_dir.exists()
    assert not lab.lock_file.exists()
