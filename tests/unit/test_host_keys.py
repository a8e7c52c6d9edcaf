"""Pinned SSH host keys (issue 15): the pin file, first-contact policy, and OpenSSH's options."""
from __future__ import annotations

import base64
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from k0slab.core.errors import K0slabError
from k0slab.core.state import LabState, NodeState
from k0slab.core.waits import NotYet
from k0slab.vms import ssh as sshmod
from k0slab.vms import vm as vmmod
from k0slab.vms.backend import NoAgentChannel


def _key_line() -> str:
    """A fresh host public key line, as the guest's ssh_host_ed25519_key.pub holds it."""
    public = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode() + " root@node1"


def test_pin_forget_and_refuse_a_second_key(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    first, second = _key_line(), _key_line()
    sshmod.pin_host_key(known, "10.213.7.11", first)
    sshmod.pin_host_key(known, "10.213.7.11", first)  # the same key again is a no-op
    assert sshmod.pinned_key(known, "10.213.7.11") == first.split()[1]
    assert known.stat().st_mode & 0o077 == 0
    with pytest.raises(K0slabError, match="already has another pinned host key"):
        sshmod.pin_host_key(known, "10.213.7.11", second)
    sshmod.forget_host_key(known, "10.213.7.11")
    assert sshmod.pinned_key(known, "10.213.7.11") is None


@pytest.mark.parametrize("line", ["ssh-rsa AAAA", "ssh-ed25519 not-base64!", "garbage"])
def test_malformed_or_foreign_keys_are_not_pinned(tmp_path: Path, line: str) -> None:
    with pytest.raises(K0slabError):
        sshmod.pin_host_key(tmp_path / "known_hosts", "10.213.7.11", line)
    assert not (tmp_path / "known_hosts").exists()


def test_first_contact_is_refused_unless_the_backend_has_no_agent(tmp_path: Path) -> None:
    public = paramiko.Ed25519Key(data=base64.b64decode(_key_line().split()[1]))
    refusing = sshmod._PinOnFirstContact("node1", tmp_path / "known_hosts", allowed=False)
    with pytest.raises(K0slabError, match="node1 .* has no pinned host key"):
        refusing.missing_host_key(None, "10.213.7.11", public)
    sshmod._PinOnFirstContact("node1", tmp_path / "known_hosts", allowed=True).missing_host_key(
        None, "10.213.7.11", public)
    assert sshmod.pinned_key(tmp_path / "known_hosts", "10.213.7.11") == public.get_base64()


def test_openssh_checks_the_same_pins(tmp_path: Path) -> None:
    argv = sshmod.interactive_argv("10.213.7.11", tmp_path / "id", tmp_path / "known_hosts", [])
    assert "StrictHostKeyChecking=yes" in argv and f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in argv
    assert "StrictHostKeyChecking=no" not in argv and "UserKnownHostsFile=/dev/null" not in argv


class _Lab:
    def __init__(self, root: Path) -> None:
        self.known_hosts = root / "known_hosts"


class _Agent:
    def __init__(self, answers: list[object]) -> None:
        self.answers = answers

    def guest_host_key(self, state: LabState, node: NodeState) -> str | None:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


NODE = NodeState(name="node1", index=1, arch="amd64", cpus=1, memory_mib=1024, disk_bytes=5 << 30,
                 image="debian-12", mac="52:54:00:d5:07:01", ip="10.213.7.11")
STATE = LabState(name="t", subnet_index=7, network="k0slab-t", bridge="k0slab7")


def test_the_guest_agents_key_is_pinned_before_ssh(tmp_path: Path) -> None:
    lab, line = _Lab(tmp_path), _key_line()
    ssh = sshmod.SSHNode("node1", NODE.ip, tmp_path / "id", lab.known_hosts)
    backend = _Agent([None, "ssh-ed25519", line])
    for _ in range(2):  # no key yet, then half a key: the wait goes on
        with pytest.raises(NotYet):
            vmmod.pin_from_guest(lab, STATE, NODE, backend, ssh)
    vmmod.pin_from_guest(lab, STATE, NODE, backend, ssh)
    assert sshmod.pinned_key(lab.known_hosts, NODE.ip) == line.split()[1] and not ssh.pin_on_first_contact


def test_a_backend_without_agent_pins_on_first_contact(tmp_path: Path) -> None:
    lab = _Lab(tmp_path)
    ssh = sshmod.SSHNode("node1", NODE.ip, tmp_path / "id", lab.known_hosts)
    vmmod.pin_from_guest(lab, STATE, NODE, _Agent([NoAgentChannel("node1")]), ssh)
    assert ssh.pin_on_first_contact and not lab.known_hosts.exists()
