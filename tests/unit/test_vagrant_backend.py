"""The Vagrant backend without Vagrant: the generated Vagrantfile, the box, and every vagrant command
faked at python-vagrant's process boundary (real python-vagrant parsing of real-format output)."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import vagrant

from k0slab.vms import vagrant_backend as vb
from k0slab.vms import vagrant_box
from k0slab.vms.backend import BootSpec, OwnedResource
from k0slab.vms.domain import DomainSpec
from k0slab.core.errors import K0slabError
from k0slab.cluster.k0s import bootstrap
from k0slab.cluster.k0s.config import cluster_config
from k0slab.vms.network import node_ip, node_mac
from k0slab.core.profile import load_profile, with_overrides
from k0slab.vms.ssh import generate_keypair
from k0slab.core.state import LabDir, LabState, NodeState
from k0slab.core.waits import WaitTimeout

SUBNET = 7
# `vagrant status --machine-readable node1` of vagrant 2.3.4 + vagrant-libvirt 0.11.2 (captured).
STATUS_NOT_CREATED = """\
1795760683,node1,metadata,provider,libvirt
1795760683,node1,provider-name,libvirt
1795760683,node1,state,not_created
1795760683,node1,state-human-short,not created
1795760683,node1,state-human-long,The Libvirt domain is not created. Run `vagrant up` to create it.
1795760683,,ui,info,Current machine states:\\n\\nnode1                     not created (libvirt)
"""
PLUGINS = """\
1795760473,,ui,info,vagrant-libvirt (0.11.2%!(VAGRANT_COMMA) system)
1795760473,,plugin-name,vagrant-libvirt
1795760473,vagrant-libvirt,plugin-version,0.11.2%!(VAGRANT_COMMA) system
"""


def status_output(name: str, state: str) -> str:
    return STATUS_NOT_CREATED.replace("node1", name).replace("state,not_created", f"state,{state}")


def ssh_config(name: str, host: str) -> str:
    return (f"Host {name}\n  HostName {host}\n  User root\n  Port 22\n  UserKnownHostsFile /dev/null\n"
            f"  IdentityFile /x/id_ed25519\n")


class FakeVagrantProcesses:
    """Stands in for the subprocess module python-vagrant uses: records each vagrant command
    (without the `timeout` wrapper) and answers the read-only ones."""

    CalledProcessError = subprocess.CalledProcessError

    def __init__(self) -> None:
        self.commands: list[list[str]] = []
        self.wrappers: list[list[str]] = []
        self.states: dict[str, str] = {}
        self.hosts: dict[str, str] = {}
        self.plugins = PLUGINS
        self.fail: dict[str, int] = {}  # vagrant verb -> exit code

    def _record(self, command: list[str]) -> list[str]:
        assert command[:2] == ["timeout", "--kill-after=20"], command
        self.wrappers.append(command[:4])
        args = command[4:]
        self.commands.append(args)
        code = self.fail.get(args[0])
        if code is not None:
            raise subprocess.CalledProcessError(code, command)
        return args

    def check_call(self, command: list[str], **_: object) -> int:
        self._record(command)
        return 0

    def check_output(self, command: list[str], **_: object) -> bytes:
        args = self._record(command)
        if args[:2] == ["plugin", "list"]:
            return self.plugins.encode()
        if args[0] == "status":
            name = args[-1]
            return status_output(name, self.states.get(name, "not_created")).encode()
        if args[0] == "ssh-config":
            return ssh_config(args[1], self.hosts[args[1]]).encode()
        raise AssertionError(f"unexpected vagrant command {args}")


class FakeLibvirt:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def ensure_network(self, state: LabState) -> None:
        self.calls.append(("ensure_network", state.network))

    def remove_network(self, state: LabState) -> None:
        self.calls.append(("remove_network", state.network))

    def delete_vm(self, lab: LabDir, state: LabState, node: NodeState) -> None:
        self.calls.append(("delete_vm", node.name))

    def owned_resources(self) -> list[OwnedResource]:
        return [OwnedResource("network", "k0slab-lab1", "lab1"), OwnedResource("domain", "k0slab-lab1-x", "lab1")]

    def remove_resource(self, resource: OwnedResource) -> None:
        self.calls.append(("remove_resource", resource.name))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("K0SLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("K0SLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path / "vagrant.d"))
    monkeypatch.delenv("K0SLAB_NETNS", raising=False)


@pytest.fixture
def processes(monkeypatch) -> FakeVagrantProcesses:
    # The boot specs here name disks that do not exist; handing real ones over is tested below.
    monkeypatch.setattr(vb, "give_to_qemu", lambda _disk: None)
    fake = FakeVagrantProcesses()
    monkeypatch.setattr(vagrant, "subprocess", fake)
    monkeypatch.setattr(vagrant, "get_vagrant_executable", lambda: "/usr/bin/vagrant")
    monkeypatch.setattr(vb.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    return fake


@pytest.fixture
def lab() -> LabDir:
    folder = LabDir("lab1")
    folder.create()
    generate_keypair(folder.ssh_key)
    return folder


def make_state(box: str | None = None, arches: tuple[str, ...] = ("amd64", "amd64")) -> LabState:
    state = LabState(name="lab1", subnet_index=SUBNET, network="k0slab-lab1", bridge=f"k0slab{SUBNET}",
                     provider="vagrant", box=box)
    for index, arch in enumerate(arches, start=1):
        name = f"node{index}"
        state.nodes[name] = NodeState(
            name=name, index=index, arch=arch, cpus=index + 1, memory_mib=1024 * index, disk_bytes=(4 + index) << 30,
            image="debian-12", mac=node_mac(SUBNET, index), ip=node_ip(SUBNET, index),
            role="controller+worker" if index == 1 else "worker",
        )
    return state


def make_boot(lab: LabDir, accel: str = "tcg", extra_cmdline: str = "") -> BootSpec:
    return BootSpec(
        base_disk="/cache/debian-12-amd64-k/base.qcow2", kernel="/cache/debian-12-amd64-k/vmlinuz",
        initrd="/cache/debian-12-amd64-k/initrd.img", accel=accel,
        ssh_public_key=lab.ssh_key.with_suffix(".pub").read_text(), extra_cmdline=extra_cmdline,
        extra_disks=("/var/lib/k0slab/disks/lab1/k0s-amd64.img",),
    )


def machines(text: str) -> dict[str, str]:
    """Each `config.vm.define` block of a generated Vagrantfile, by machine name."""
    blocks = re.split(r"^  config\.vm\.define ", text, flags=re.M)[1:]
    return {re.match(r"'([^']+)'", block).group(1): block for block in blocks}


def setting(block: str, name: str) -> str:
    """The Ruby value of `libvirt.NAME = VALUE` (quotes removed)."""
    match = re.search(rf"^\s+libvirt\.{re.escape(name)} = (.+)$", block, flags=re.M)
    assert match, f"no libvirt.{name} in\n{block}"
    return match.group(1).strip("'")


# --- the Vagrantfile -------------------------------------------------------------------------


def test_vagrantfile_describes_every_node_from_the_state(lab):
    state = make_state()
    boot = make_boot(lab)
    text = vb.vagrantfile(lab, state, {"node1": boot, "node2": boot})
    assert text.startswith("# Generated by k0slab") and text.rstrip().endswith("end")
    assert f"config.ssh.private_key_path = ['{lab.ssh_key}']" in text
    assert "config.ssh.username = 'root'" in text and "config.ssh.insert_key = false" in text
    assert 'config.vm.synced_folder ".", "/vagrant", disabled: true' in text
    found = machines(text)
    assert sorted(found) == ["node1", "node2"]
    for name, block in found.items():
        node = state.nodes[name]
        network = re.search(r"node\.vm\.network :private_network, ip: '([\d.]+)', mac: '([0-9a-f:]+)', "
                            r"libvirt__network_name: '([^']+)', auto_config: (\w+)", block)
        assert network.groups() == (node.ip, node.mac, state.network, "false")
        assert "node.vm.box = 'k0slab/debian-12-amd64'" in block
        assert int(setting(block, "cpus")) == node.cpus
        assert int(setting(block, "memory")) == node.memory_mib
        assert int(setting(block, "machine_virtual_size")) == node.disk_bytes >> 30
        assert setting(block, "default_prefix") + name == f"k0slab-lab1-{name}"  # the libvirt backend's names
        assert setting(block, "kernel") == boot.kernel and setting(block, "initrd") == boot.initrd
        assert setting(block, "qemu_use_session") == "false"
        assert setting(block, "mgmt_attach") == "false"
        assert setting(block, "driver") == "qemu"
        assert setting(block, "cpu_mode") == "custom" and setting(block, "cpu_model") == "qemu64"
        assert f"logs/{name}.console.log" in block


def test_kernel_command_line_is_the_libvirt_backends(lab):
    state = make_state()
    boot = make_boot(lab, extra_cmdline="k0slab.fault=1")
    block = machines(vb.vagrantfile(lab, state, {"node1": boot}))["node1"]
    words = setting(block, "cmd_line").split()
    node = state.nodes["node1"]
    spec = DomainSpec(
        lab="lab1", name="node1", arch="amd64", accel="tcg", cpus=node.cpus, memory_mib=node.memory_mib,
        disk=Path("/d"), base_disk=Path(boot.base_disk), kernel=Path(boot.kernel), initrd=Path(boot.initrd),
        mac=node.mac, network=state.network, console_log=Path("/c"), ssh_public_key=boot.ssh_public_key,
        extra_cmdline=boot.extra_cmdline,
    )
    assert words == spec.kernel_cmdline().split()
    assert "systemd.hostname=node1" in words and "k0slab.fault=1" in words and "root=/dev/vda" in words
    key = next(w for w in words if w.startswith("k0slab.sshkey=")).split("=", 1)[1]
    assert base64.b64decode(key).decode() == boot.ssh_public_key.strip()


def test_binary_disk_is_passed_read_only_and_kvm_uses_the_host_cpu(lab):
    block = machines(vb.vagrantfile(lab, make_state(), {"node1": make_boot(lab, accel="kvm")}))["node1"]
    assert setting(block, "driver") == "kvm" and setting(block, "cpu_mode") == "host-passthrough"
    qemuargs = re.findall(r"libvirt\.qemuargs :value => '([^']+)'", block)
    assert qemuargs == [
        "-drive", "file=/var/lib/k0slab/disks/lab1/k0s-amd64.img,format=raw,if=none,id=k0slab-extra0,readonly=on",
        "-device", "virtio-blk-pci,drive=k0slab-extra0,addr=0x1f",
    ]


def test_arm64_nodes_get_their_machine_and_no_x86_defaults(lab):
    block = machines(vb.vagrantfile(lab, make_state(arches=("arm64",)), {"node1": make_boot(lab)}))["node1"]
    assert setting(block, "machine_type") == "virt" and setting(block, "machine_arch") == "aarch64"
    assert setting(block, "cpu_model") == "cortex-a57" and "console=ttyAMA0" in setting(block, "cmd_line")
    assert "node.vm.box = 'k0slab/debian-12-arm64'" in block


def test_nodes_without_a_boot_spec_are_not_machines_yet(lab):
    assert sorted(machines(vb.vagrantfile(lab, make_state(), {"node2": make_boot(lab)}))) == ["node2"]


def test_ruby_strings_cannot_interpolate_or_break_out():
    assert vb._ruby("a'b\\c #{`id`}") == "'a\\'b\\\\c #{`id`}'"
    assert vb._qemu_option("/a,b") == "/a,,b"


def test_a_public_box_keeps_the_management_nic_and_gets_the_lab_key_by_provisioning(lab):
    state = make_state(box="generic/debian12")
    boot = make_boot(lab)
    text = vb.vagrantfile(lab, state, {"node1": boot})
    block = machines(text)["node1"]
    assert "node.vm.box = 'generic/debian12'" in block
    assert "auto_config: true" in block and "node.vm.hostname = 'node1'" in block
    assert "mgmt_attach" not in block and "cmd_line" not in block and "libvirt.kernel" not in block
    assert "config.ssh.username" not in text  # the box's own user and key, until the provisioner ran
    key = re.search(r"echo (\S+) \| base64 -d >> /root/.ssh/authorized_keys", block).group(1)
    assert base64.b64decode(key).decode() == boot.ssh_public_key.strip()


def test_ssh_goes_through_the_lab_namespace_when_k0slab_runs_outside_it(lab, monkeypatch):
    monkeypatch.setenv("K0SLAB_NETNS", "k0slab-unit-absent")
    block = machines(vb.vagrantfile(lab, make_state(), {"node1": make_boot(lab)}))["node1"]
    assert f"node.ssh.proxy_command = 'ip netns exec k0slab-unit-absent nc {node_ip(SUBNET, 1)} 22'" in block


def test_profile_box_needs_the_vagrant_provider():
    with pytest.raises(K0slabError, match="box"):
        with_overrides(load_profile("default"), box="generic/debian12")
    chosen = with_overrides(load_profile("default"), provider="vagrant", box="generic/debian12")
    assert (chosen.provider, chosen.box) == ("vagrant", "generic/debian12")


def test_k0s_uses_the_lab_ip_not_another_nic():
    """k0s issue 1669: with a second (management) NIC, k0s must still advertise the lab IP."""
    ip = node_ip(SUBNET, 2)

    class Recorder:
        def __init__(self) -> None:
            self.commands: list[str] = []

        def run(self, command: str, **_: object) -> None:
            self.commands.append(command)

        def put_text(self, text: str, path: str, mode: int = 0o644) -> None:
            pass

    worker, controller = Recorder(), Recorder()
    bootstrap.install_worker(worker, "token", ip)
    bootstrap.install_controller(controller, "controller+worker", ip)
    for runner in (worker, controller):
        assert f"--kubelet-extra-args=--node-ip={ip}" in runner.commands[-1]
    api = cluster_config(ip, {})["spec"]["api"]
    assert api["address"] == ip and api["sans"] == [ip]


# --- the box ---------------------------------------------------------------------------------


def fake_image(tmp_path: Path, key: str = "abc123") -> object:
    from k0slab.vms.image import Image

    folder = tmp_path / f"img-{key}"
    folder.mkdir()
    for name, data in (("base.qcow2", b"QFI\xfb disk"), ("vmlinuz", b"kernel"), ("initrd.img", b"initrd")):
        (folder / name).write_bytes(data)
    image = Image(name="debian-12", arch="amd64", source="test", key=key, path=folder, built_at="now",
                  build_seconds=1.0)
    object.__setattr__(image, "virtual_size", lambda: (3 << 30) + 1)
    return image


@pytest.mark.parametrize("size,gib", [(3 << 30, 3), ((3 << 30) + 1, 4), (1, 1)])
def test_box_metadata_is_vagrant_libvirt_v1(size, gib):
    assert vagrant_box.metadata(size) == {"provider": "libvirt", "format": "qcow2", "virtual_size": gib}


def test_box_holds_the_image_disk_kernel_metadata_and_key(tmp_path):
    image = fake_image(tmp_path)
    path = vagrant_box.make_box(image, progress=lambda _: None)
    assert path.parent == vagrant_box.boxes_cache() and path.name.endswith("-abc123.box")
    with tarfile.open(path) as tar:
        names = sorted(tar.getnames())
        read = {n: tar.extractfile(n).read() for n in names}
    assert names == ["Vagrantfile", "box.img", "initrd.img", "k0slab-image.json", "metadata.json", "vmlinuz"]
    assert json.loads(read["metadata.json"]) == {"provider": "libvirt", "format": "qcow2", "virtual_size": 4}
    assert read["box.img"] == b"QFI\xfb disk" and read["vmlinuz"] == b"kernel"
    assert json.loads(read["k0slab-image.json"])["key"] == "abc123"
    assert b'libvirt.kernel = File.join(File.dirname(__FILE__), "vmlinuz")' in read["Vagrantfile"]
    # Made once per key; a new image key replaces the old box.
    assert vagrant_box.make_box(image, progress=lambda _: None) == path
    newer = vagrant_box.make_box(fake_image(tmp_path, "def456"), progress=lambda _: None)
    assert not path.exists() and newer.exists()


def test_installed_box_key_is_read_from_vagrants_box_folder(tmp_path):
    name = vagrant_box.box_name("debian-12", "amd64")
    assert name == "k0slab/debian-12-amd64" and vagrant_box.installed_key(name) is None
    folder = tmp_path / "vagrant.d" / "boxes" / "k0slab-VAGRANTSLASH-debian-12-amd64" / "0" / "libvirt"
    folder.mkdir(parents=True)
    with tarfile.open(vagrant_box.make_box(fake_image(tmp_path), progress=lambda _: None)) as tar:
        (folder / "k0slab-image.json").write_bytes(tar.extractfile("k0slab-image.json").read())
    assert vagrant_box.installed_key(name) == "abc123"


# --- driving vagrant -------------------------------------------------------------------------


def test_missing_vagrant_is_one_line_saying_what_to_install(monkeypatch):
    monkeypatch.setattr(vb.shutil, "which", lambda tool: None)
    with pytest.raises(K0slabError) as error:
        vb.VagrantBackend().require_vagrant()
    text = str(error.value)
    assert "vagrant is not installed" in text and "sudo bash scripts/setup.sh --vagrant" in text
    assert "\n" not in text


def test_missing_plugin_is_named(processes):
    processes.plugins = "1795760473,,plugin-name,vagrant-share\n"
    with pytest.raises(K0slabError, match="vagrant-libvirt plugin .* not installed.*setup.sh --vagrant"):
        vb.VagrantBackend().require_vagrant()


@pytest.mark.parametrize("vagrant_state,expected", [
    ("running", "Running"), ("shutoff", "Stopped"), ("paused", "Paused"), ("not_created", "Absent"),
    ("crashed", "Crashed"), ("shutdown", "Stopping"), ("inaccessible", "Unknown"),
])
def test_vm_state_from_machine_readable_status(lab, processes, vagrant_state, expected):
    state = make_state()
    (lab.path / "Vagrantfile").write_text(vb.vagrantfile(lab, state, {"node1": make_boot(lab)}))
    processes.states["node1"] = vagrant_state
    backend = vb.VagrantBackend()
    assert backend.vm_state(state, state.nodes["node1"]) == expected
    assert processes.commands[-1] == ["status", "--machine-readable", "node1"]
    # A node the Vagrantfile does not define yet is Absent without asking vagrant.
    before = len(processes.commands)
    assert backend.vm_state(state, state.nodes["node2"]) == "Absent"
    assert len(processes.commands) == before


def create(lab: LabDir, processes: FakeVagrantProcesses, monkeypatch, state: LabState,
           installed_key: str | None = None) -> vb.VagrantBackend:
    monkeypatch.setattr(vb.imagemod, "require_image", lambda name, arch: type("I", (), {"key": "k1"})())
    # Once `box add` ran, Vagrant has the box of this image.
    monkeypatch.setattr(vb.vagrant_box, "installed_key", lambda name: "k1" if any(
        c[:2] == ["box", "add"] for c in processes.commands) else installed_key)
    monkeypatch.setattr(vb.vagrant_box, "make_box", lambda image, progress: Path("/cache/boxes/x.box"))
    backend = vb.VagrantBackend()
    backend._libvirt = FakeLibvirt()
    for node in state.nodes.values():
        processes.hosts.setdefault(node.name, node.ip)
        backend.create_vm(lab, state, node, make_boot(lab))
    return backend


def test_create_adds_the_box_writes_one_vagrantfile_and_brings_each_node_up(lab, processes, monkeypatch):
    state = make_state()
    create(lab, processes, monkeypatch, state)
    verbs = [c for c in processes.commands if c[:2] != ["plugin", "list"]]
    assert verbs == [
        ["box", "add", "k0slab/debian-12-amd64", "/cache/boxes/x.box", "--force"],
        ["up", "node1", "--provider=libvirt"], ["ssh-config", "node1"],
        ["up", "node2", "--provider=libvirt"], ["ssh-config", "node2"],
    ]
    assert {w[2] for w in processes.wrappers} >= {str(int(vb.UP_TIMEOUT_S)), str(int(vb.COMMAND_TIMEOUT_S))}
    assert vb.defined_machines(lab) == ["node1", "node2"]
    assert sorted(vb.load_boots(lab)) == ["node1", "node2"]


def test_an_installed_box_of_the_same_image_is_not_added_again(lab, processes, monkeypatch):
    create(lab, processes, monkeypatch, make_state(), installed_key="k1")
    assert not any(c[:2] == ["box", "add"] for c in processes.commands)


def test_vagrant_reaching_another_address_than_the_lab_ip_fails(lab, processes, monkeypatch):
    processes.hosts["node1"] = "192.168.121.5"
    with pytest.raises(K0slabError, match="at 192.168.121.5, not at its lab IP"):
        create(lab, processes, monkeypatch, make_state())


def test_an_up_that_hangs_on_the_ip_wait_times_out_with_the_hint(lab, processes, monkeypatch):
    lab.logs_dir.mkdir(exist_ok=True)
    (lab.logs_dir / "vagrant.log").write_text("==> node1: Waiting for domain to get an IP address...\n")
    processes.fail["up"] = 124
    with pytest.raises(WaitTimeout) as error:
        create(lab, processes, monkeypatch, make_state())
    assert f"timed out after {vb.UP_TIMEOUT_S:.0f}s waiting for vagrant up node1" in error.value.message
    assert "673/899" in error.value.hint and node_mac(SUBNET, 1) in error.value.hint
    assert "Waiting for domain" in error.value.details


def test_other_vagrant_failures_name_the_log(lab, processes, monkeypatch):
    processes.fail["up"] = 1
    with pytest.raises(K0slabError) as error:
        create(lab, processes, monkeypatch, make_state())
    assert "vagrant up node1" in error.value.message and "exited 1" in error.value.message
    assert str(lab.logs_dir / "vagrant.log") in error.value.hint


def test_stop_start_and_delete(lab, processes, monkeypatch):
    state = make_state()
    backend = create(lab, processes, monkeypatch, state)
    backend.stop_vm(state, state.nodes["node2"], force=True)
    assert processes.commands[-1] == ["halt", "node2", "--force"]
    backend.start_vm(state, state.nodes["node2"])
    assert processes.commands[-2:] == [["up", "node2", "--provider=libvirt"], ["ssh-config", "node2"]]
    backend.delete_vm(lab, state, state.nodes["node2"])
    assert processes.commands[-1] == ["destroy", "node2", "--force"]
    assert vb.defined_machines(lab) == ["node1"] and sorted(vb.load_boots(lab)) == ["node1"]
    assert backend._libvirt.calls[-1] == ("delete_vm", "node2")  # its DHCP reservation goes too
    # Deleting again is fine: vagrant is not asked about a machine the Vagrantfile no longer has.
    count = len(processes.commands)
    backend.delete_vm(lab, state, state.nodes["node2"])
    assert len(processes.commands) == count


def test_owned_resources_are_vagrant_machines_and_k0slab_networks(lab, processes, monkeypatch):
    state = make_state()
    backend = create(lab, processes, monkeypatch, state)
    for name in ("node1", "node2"):
        folder = lab.path / ".vagrant" / "machines" / name / "libvirt"
        folder.mkdir(parents=True)
        (folder / "id").write_text("uuid")
    owned = backend.owned_resources()
    assert owned == [OwnedResource(vb.MACHINE_KIND, "lab1/node1", "lab1"),
                     OwnedResource(vb.MACHINE_KIND, "lab1/node2", "lab1"),
                     OwnedResource("network", "k0slab-lab1", "lab1")]
    backend.remove_resource(owned[0])
    assert processes.commands[-1] == ["destroy", "node1", "--force"]
    backend.remove_resource(OwnedResource(vb.MACHINE_KIND, "lab1/ghost", "lab1"))
    assert backend._libvirt.calls[-1] == ("remove_resource", "k0slab-lab1-ghost")


def test_log_tail_is_the_end_of_vagrants_output(lab):
    lab.logs_dir.mkdir(exist_ok=True)
    (lab.logs_dir / "vagrant.log").write_text("".join(f"line {i}\n" for i in range(40)))
    assert vb.log_tail(lab, 3) == "line 37\nline 38\nline 39"
    assert "no vagrant output" in vb.log_tail(LabDir("other"))


def test_vagrant_provider_without_python_vagrant_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """python-vagrant is the [vagrant] extra: without it only --provider vagrant fails, in one line."""
    from k0slab.vms import vm as vmmod

    monkeypatch.setitem(sys.modules, "vagrant", None)
    monkeypatch.delitem(sys.modules, "k0slab.vms.vagrant_backend")
    with pytest.raises(K0slabError, match=r"needs python-vagrant.*k0slab\[vagrant\]"):
        vmmod.get_backend("vagrant")
    assert vmmod.get_backend("libvirt") is not None


def test_read_only_disks_are_handed_to_the_user_qemu_runs_as(monkeypatch, tmp_path):
    """vagrant-libvirt gives QEMU these disks behind libvirt's back: without this QEMU cannot open them."""
    conf = tmp_path / "qemu.conf"
    conf.write_text('# user = "qemu"\nuser = "+0"\n')
    monkeypatch.setattr(vb, "QEMU_CONF", conf)
    assert vb.qemu_user() == (0, 0)
    disk = tmp_path / "k0s-amd64.img"
    disk.write_bytes(b"\0" * 512)
    disk.chmod(0o644)
    vb.give_to_qemu(disk)
    assert disk.stat().st_uid == 0 and oct(disk.stat().st_mode & 0o777) == "0o600"
    conf.write_text('user = "no-such-user-k0slab"\n')
    with pytest.raises(K0slabError, match="cannot tell which user libvirt runs QEMU as"):
        vb.qemu_user()
