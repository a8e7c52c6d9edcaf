"""Unit tests for the VM foundation: sizes, names, subnets, MACs, domain XML, image cache keys, state."""
from __future__ import annotations

import json
import multiprocessing
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from k0slab.vms import image as imagemod
from k0slab.vms.domain import DomainSpec, domain_xml
from k0slab.core.errors import K0slabError
from k0slab.cluster.k0s.config import cluster_config
from k0slab.vms.network import (
    DNSMASQ_XMLNS, allocate_subnet, bridge_name, network_xml, node_ip, node_kernel_args, node_mac,
)
from k0slab.core.state import LabDir, LabState, NodeState, validate_lab_name, write_private
from k0slab.core.units import parse_size, validate_cpus, validate_hostname


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("K0SLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("K0SLAB_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("text,expected", [
    ("2G", 2 << 30), ("512M", 512 << 20), ("1.5G", 3 << 29), ("2GiB", 2 << 30), ("1024", 1024), ("3g", 3 << 30),
])
def test_sizes_parse(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["2X", "", "G", "-1G", "0", "two"])
def test_bad_sizes_name_the_value(text):
    with pytest.raises(K0slabError) as error:
        parse_size(text, "--memory")
    assert repr(text) in str(error.value) and "--memory" in str(error.value)


@pytest.mark.parametrize("name", ["node1", "a", "worker-2", "x" * 63])
def test_valid_hostnames(name):
    assert validate_hostname(name) == name


@pytest.mark.parametrize("name", ["Node1", "1node", "node_1", "-a", "a-", "x" * 64, "", "a.b"])
def test_invalid_hostnames(name):
    with pytest.raises(K0slabError, match="not a valid hostname"):
        validate_hostname(name)


@pytest.mark.parametrize("cpus", [0, -1, 65])
def test_cpu_bounds(cpus):
    with pytest.raises(K0slabError, match="out of range"):
        validate_cpus(cpus)


@pytest.mark.parametrize("name", ["Default", "a_b", "-x", "x" * 21])
def test_invalid_lab_names(name):
    with pytest.raises(K0slabError, match="lab name"):
        validate_lab_name(name)


def test_subnet_allocation_takes_the_lowest_free_index():
    assert allocate_subnet(set()) == 1
    assert allocate_subnet({1, 2, 4}) == 3
    with pytest.raises(K0slabError, match="in use"):
        allocate_subnet(set(range(1, 255)))


def test_addresses_never_collide_across_labs_and_fit_interface_names():
    macs = {node_mac(s, h) for s in range(1, 255) for h in range(1, 101)}
    ips = {node_ip(s, h) for s in range(1, 255) for h in range(1, 101)}
    assert len(macs) == len(ips) == 254 * 100
    assert all(len(bridge_name(s)) <= 15 for s in range(1, 255))


def _node(name="node1", index=1, arch="amd64") -> NodeState:
    return NodeState(name=name, index=index, arch=arch, cpus=2, memory_mib=2048, disk_bytes=5 << 30,
                     image="debian-12", mac=node_mac(7, index), ip=node_ip(7, index))


def _lab_state(egress: str) -> LabState:
    return LabState(name="lab1", subnet_index=7, network="k0slab-lab1", bridge="k0slab7", egress=egress,
                    nodes={"node1": _node(), "node2": _node("node2", 2)})


def test_network_xml_nat_by_default_with_reservations():
    root = ET.fromstring(network_xml(_lab_state("nat")))
    assert root.find("forward").get("mode") == "nat"
    assert root.find("ip").get("address") == "10.213.7.1"  # libvirt's dnsmasq: router and DNS
    assert root.find("bridge").get("name") == "k0slab7"
    assert root.find(f"{{{DNSMASQ_XMLNS}}}options") is None  # dnsmasq sends the router on NAT networks
    hosts = {h.get("name"): (h.get("mac"), h.get("ip")) for h in root.iter("host")}
    assert hosts == {"node1": ("52:54:00:d5:07:01", "10.213.7.11"), "node2": ("52:54:00:d5:07:02", "10.213.7.12")}
    assert node_kernel_args(_lab_state("nat")) == "k0slab.nameserver=10.213.7.1"


def test_network_xml_without_egress_keeps_the_default_route():
    root = ET.fromstring(network_xml(_lab_state("none")))
    assert root.find("forward") is None  # nothing routed off the lab bridge
    options = [o.get("value") for o in root.iter(f"{{{DNSMASQ_XMLNS}}}option")]
    assert options == ["dhcp-option=option:router,10.213.7.1"]  # kube-router needs a route (§9)
    assert node_kernel_args(_lab_state("none")) == (
        "k0slab.nameserver=10.213.7.1 systemd.mask=systemd-timesyncd.service"
    )


def test_generated_config_turns_telemetry_off_and_pulls_never_without_egress():
    spec = cluster_config("10.213.7.11", {})["spec"]
    assert spec["telemetry"] == {"enabled": False} and "images" not in spec
    spec = cluster_config("10.213.7.11", {}, telemetry=True, pull_never=True)["spec"]
    assert spec["telemetry"] == {"enabled": True}
    assert spec["images"] == {"default_pull_policy": "Never"}
    # The profile's own k0s section still wins.
    assert cluster_config("10.213.7.11", {"spec": {"telemetry": {"enabled": True}}})["spec"]["telemetry"] == {
        "enabled": True}


def _spec(arch: str, accel: str = "tcg") -> DomainSpec:
    return DomainSpec(
        lab="lab1", name="node1", arch=arch, accel=accel, cpus=2, memory_mib=2048, disk=Path("/d/node1.qcow2"),
        base_disk=Path("/c/base.qcow2"), kernel=Path("/c/vmlinuz"), initrd=Path("/c/initrd.img"),
        mac="52:54:00:d5:07:01", network="k0slab-lab1", console_log=Path("/l/node1.console.log"),
        ssh_public_key="ssh-ed25519 AAAAC3Nza k0slab\n", extra_disks=[Path("/d/k0s-amd64.img")],
    )


@pytest.mark.parametrize("arch,machine,libvirt_arch,cpu,console,emulator", [
    ("amd64", "pc", "x86_64", "qemu64", "ttyS0", "/usr/bin/qemu-system-x86_64"),
    ("arm64", "virt", "aarch64", "cortex-a57", "ttyAMA0", "/usr/bin/qemu-system-aarch64"),
])
def test_domain_xml_per_arch(arch, machine, libvirt_arch, cpu, console, emulator):
    root = ET.fromstring(domain_xml(_spec(arch)))
    assert root.get("type") == "qemu"
    os_type = root.find("os/type")
    assert (os_type.get("arch"), os_type.get("machine")) == (libvirt_arch, machine)
    assert root.find("cpu/model").text == cpu
    assert root.find("devices/emulator").text == emulator
    cmdline = root.find("os/cmdline").text
    assert f"console={console}" in cmdline and "systemd.hostname=node1" in cmdline
    assert "k0slab.sshkey=" in cmdline and " " not in cmdline.split("k0slab.sshkey=")[1].split()[0]
    assert root.find("features/tcg/tb-cache").text == "128"
    disks = root.findall("devices/disk")
    assert [d.find("target").get("bus") for d in disks] == ["virtio", "virtio"]
    assert disks[1].find("readonly") is not None and disks[1].find("target").get("dev") == "vdb"
    assert root.find("devices/interface/model").get("type") == "virtio"
    assert root.find("devices/serial/log").get("file") == "/l/node1.console.log"
    assert (root.find("features/acpi") is not None) == (arch == "amd64")
    assert (root.find("features/gic") is not None) == (arch == "arm64")


def test_domain_xml_with_kvm_passes_the_host_cpu_and_no_tcg_cache():
    root = ET.fromstring(domain_xml(_spec("amd64", accel="kvm")))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"
    assert root.find("features/tcg") is None


def test_image_cache_key_is_stable_and_follows_the_recipe():
    recipe = imagemod.load_recipe("debian-12")
    assert recipe.cache_key("amd64") == imagemod.load_recipe("debian-12").cache_key("amd64")
    assert recipe.cache_key("amd64") != recipe.cache_key("arm64")
    changed = recipe.model_copy(update={"packages": [*recipe.packages, "curl"]})
    assert changed.cache_key("amd64") != recipe.cache_key("amd64")


def test_image_recipe_lists_what_k0s_needs_and_no_python():
    recipe = imagemod.load_recipe("debian-12")
    for package in ("iptables", "conntrack", "systemd-sysv", "mount", "openssh-server", "ca-certificates"):
        assert package in recipe.packages
    # The product image carries only what k0s needs; the test stand-in brings its own Python.
    assert not [package for package in recipe.packages if package.startswith("python")]
    assert recipe.architectures == ["amd64", "arm64"]


def test_unknown_image_names_the_choices():
    with pytest.raises(K0slabError,
                       match=r"unknown image 'nope' \(choose one of: debian-12, debian-12-cloudinit, or add nope.yaml"):
        imagemod.load_recipe("nope")


def test_cached_image_is_found_without_building(tmp_path):
    recipe = imagemod.load_recipe("debian-12")
    folder = imagemod.images_cache() / f"debian-12-amd64-{recipe.cache_key('amd64')}"
    folder.mkdir(parents=True)
    (folder / "image.json").write_text(json.dumps({
        "name": "debian-12", "arch": "amd64", "source": "test", "key": recipe.cache_key("amd64"),
        "built_at": "2026-01-01T00:00:00+00:00", "build_seconds": 1.0,
    }))
    found = imagemod.build("debian-12", "amd64", progress=lambda _m: None)
    assert found.path == folder and [i.path for i in imagemod.list_images()] == [folder]


def test_interrupted_build_leaves_no_work_folder(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(imagemod, "require_tool", lambda *_: "/bin/true")
    monkeypatch.setattr(imagemod, "ensure_binfmt", lambda _arch: None)

    def interrupted(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(imagemod, "_mmdebstrap", interrupted)
    with pytest.raises(KeyboardInterrupt):
        imagemod.build("debian-12", "amd64", progress=lambda _m: None)
    assert list(imagemod.images_cache().iterdir()) == []


def test_state_round_trip_is_private_and_atomic():
    lab = LabDir("lab1")
    lab.create()
    state = LabState(name="lab1", subnet_index=3, network="k0slab-lab1", bridge="k0slab3", nodes={"node1": _node()})
    lab.save(state)
    assert lab.load() == state
    assert oct(lab.path.stat().st_mode & 0o777) == "0o700"
    assert oct(lab.state_file.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in lab.path.iterdir() if p.name.startswith(".")] == []


def test_corrupt_state_is_a_clear_error():
    lab = LabDir("lab1")
    lab.create()
    lab.state_file.write_text('{"name": "lab1", "subnet_in')
    with pytest.raises(K0slabError, match=r"state file .*state.json is corrupt"):
        lab.load()


def test_write_private_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "f"
    write_private(target, "old")

    def broken_fsync(_fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_private(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f"]


def _hold_lock(name: str, home: str, ready, release) -> None:
    os.environ["K0SLAB_HOME"] = home
    with LabDir(name).locked():
        ready.set()
        release.wait(10)


def test_second_command_on_a_busy_lab_names_the_holder():
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=("lab1", os.environ["K0SLAB_HOME"], ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(K0slabError, match=rf"lab 'lab1' is busy: .*pid {holder.pid}"):
            with LabDir("lab1").locked(wait_s=0.5):
                pass
    finally:
        release.set()
        holder.join()


@pytest.mark.parametrize("machine, arch", [("x86_64", "amd64"), ("aarch64", "arm64")])
def test_shipped_profiles_default_to_the_hosts_arch(monkeypatch: pytest.MonkeyPatch, machine: str, arch: str) -> None:
    import platform

    from k0slab.core.profile import load_profile

    monkeypatch.setattr(platform, "machine", lambda: machine)
    for name in ("default", "single"):
        profile = load_profile(name)
        assert {profile.node_arch(node) for node in profile.nodes} == {arch}
