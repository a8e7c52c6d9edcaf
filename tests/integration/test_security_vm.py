"""Issue 15 on a real VM: the host key pinned from the guest agent before the first SSH, refused when it
changes (paramiko and OpenSSH alike), and no file k0slab creates readable by another local user."""
from __future__ import annotations

import os
import stat

import pytest

from k0slab.core.paths import data_home
from k0slab.core.state import LabDir
from k0slab.vms.ssh import pinned_key

from .conftest import invoke, readable_by_nobody

pytestmark = pytest.mark.vm
LAB = "secvm"
# Any ed25519 public key that is not the node's.
OTHER_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C7okWi0dh2l9GKJl"


@pytest.fixture(scope="module")
def node():
    try:
        invoke("vm.launch", "node1", "--memory", "1G", "--lab", LAB)
        lab = LabDir(LAB)
        yield lab, lab.load().nodes["node1"]
    finally:
        invoke("lab.down", "--lab", LAB, check=False)


def test_host_key_is_the_guests_own_pinned_before_ssh(node):
    lab, vm = node
    pinned = pinned_key(lab.known_hosts, vm.ip)
    on_guest = invoke("vm.exec", "node1", "--lab", LAB, "--", "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout
    assert pinned is not None and on_guest.split()[1] == pinned
    # OpenSSH reads the same pins with StrictHostKeyChecking=yes.
    shell = invoke("vm.shell", "node1", "--lab", LAB, "--", "hostname")
    assert shell.stdout.strip() == "node1"


def test_a_changed_host_key_is_refused_naming_the_node(node):
    lab, vm = node
    original = lab.known_hosts.read_text()
    try:
        lab.known_hosts.write_text(original.replace(pinned_key(lab.known_hosts, vm.ip), OTHER_KEY))
        refused = invoke("vm.exec", "node1", "--lab", LAB, "--", "true", check=False)
        lines = refused.stderr.splitlines()
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert len(lines) == 1 and lines[0].startswith("error: host key of node1") and "ssh-keygen" in lines[0]
        openssh = invoke("vm.shell", "node1", "--lab", LAB, "--", "true", check=False)
        assert openssh.returncode == 255, openssh.stderr
    finally:
        lab.known_hosts.write_text(original)


def test_no_other_user_can_read_anything_k0slab_made(node):
    lab, vm = node
    home = data_home()
    made = [home, *home.rglob("*")]
    assert lab.disk("node1") in made and lab.known_hosts in made and lab.ssh_key in made
    readable = [str(p) for p in made if readable_by_nobody(p)]
    assert readable == []
    # The running overlay is QEMU's (libvirt's DAC labelling), still private to that user.
    info = lab.disk("node1").stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid != os.getuid()


def test_deleting_the_vm_forgets_its_pin(node):
    lab, vm = node
    invoke("vm.delete", "node1", "--lab", LAB)
    assert pinned_key(lab.known_hosts, vm.ip) is None
