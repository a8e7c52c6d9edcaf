"""Secrets at rest (issue 15): what k0slab writes for a lab is closed to every other local user.

The VM test (tests/integration/test_security_vm.py) proves it with a real VM and a read attempt as
`nobody`; this checks the modes k0slab sets, with libvirt's test driver standing in for QEMU.
"""
from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from k0slab.core.state import LabDir
from k0slab.vms import vm as vmmod
from k0slab.vms.backend import BootSpec
from k0slab.vms.libvirt_backend import LibvirtBackend
from k0slab.vms.network import node_ip, node_mac


@pytest.fixture
def made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, LabDir]:
    """A lab as vm.launch leaves it: folder, key, state, lock, and a VM's overlay disk."""
    home = tmp_path / "home"
    monkeypatch.setenv("K0SLAB_HOME", str(home))
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "test:///default")
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    lab = LabDir("private")
    backend = LibvirtBackend()
    with lab.locked():
        state = vmmod.open_or_create_lab(lab, backend)
    node = vmmod.NodeState(name="node1", index=1, arch="amd64", cpus=1, memory_mib=512, disk_bytes=1 << 30,
                           image="debian-12", mac=node_mac(state.subnet_index, 1), ip=node_ip(state.subnet_index, 1))
    boot = BootSpec(base_disk=str(base), kernel=str(base), initrd=str(base), accel="tcg",
                    ssh_public_key=lab.ssh_key.with_suffix(".pub").read_text())
    backend.create_vm(lab, state, node, boot)
    return home, lab


def test_nothing_k0slab_made_is_readable_or_listable_by_others(made: tuple[Path, LabDir]) -> None:
    home, lab = made
    paths = [home, *home.rglob("*")]
    assert lab.disk("node1") in paths and lab.ssh_key in paths and lab.lock_file in paths
    # The lab's SSH public key is public by nature (and inside the 0700 lab folder).
    open_to_others = [f"{p} {stat.filemode(p.stat().st_mode)}" for p in paths
                      if p.stat().st_mode & (stat.S_IROTH | stat.S_IRGRP) and p != lab.ssh_key.with_suffix(".pub")]
    assert open_to_others == []
    assert stat.S_IMODE(lab.disk("node1").stat().st_mode) == 0o600
    assert stat.S_IMODE(lab.path.stat().st_mode) == 0o700 and stat.S_IMODE(lab.lock_file.parent.stat().st_mode) == 0o700
