"""The Vagrant backend: the lab's VMs made and driven by `vagrant` with the vagrant-libvirt plugin.

Each lab has ONE Vagrantfile in its folder, generated from the lab state (names, CPUs, memory, the
fixed MACs and IPs) and the boot spec each VM was created with. k0slab keeps owning the lab network
and its DHCP reservations (through the libvirt backend), so a VM's address is fixed before it
boots: vagrant-libvirt's wait for a DHCP lease then ends as soon as the VM asks, instead of hanging
on a NIC nobody configures (vagrant-libvirt issues 673 and 899). The rest of k0slab still reaches
nodes by SSH on their lab IPs with the lab key, whatever backend made them.

With k0slab's own box (the default) a VM has one NIC, on the lab network. A public box (`box:` in
the profile) needs Vagrant's management NIC (NAT) for its first SSH as `vagrant`; k0s then still
advertises the lab IP because k0slab sets api.address and kubelet --node-ip (k0s issue 1669).
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import math
import os
import pwd
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import vagrant

from k0slab.vms import image as imagemod
from k0slab.vms import vagrant_box
from k0slab.vms.arch import arch_settings
from k0slab.vms.backend import BootSpec, NoAgentChannel, OwnedResource
from k0slab.vms.domain import DomainSpec, domain_name
from k0slab.core.errors import K0slabError
from k0slab.vms.libvirt_backend import LibvirtBackend
from k0slab.vms.ssh import netns_proxy_command
from k0slab.core.state import LabDir, LabState, NodeState, all_labs, write_private
from k0slab.core.waits import WaitTimeout

T = TypeVar("T")
INSTALL_HINT = "install them with: sudo bash scripts/setup.sh --vagrant"
PLUGIN = "vagrant-libvirt"
MACHINE_KIND = "vagrant-machine"
# A first `up` uploads the box into libvirt's storage pool, then boots (minutes under TCG).
UP_TIMEOUT_S = 900.0
# Vagrant's own wait for SSH once the VM has its address; below UP_TIMEOUT_S so Vagrant reports first.
BOOT_TIMEOUT_S = 600
BOX_ADD_TIMEOUT_S = 600.0
COMMAND_TIMEOUT_S = 180.0
# Exit codes of coreutils `timeout`: 124 after SIGTERM, 137 when the command had to be killed.
TIMEOUT_EXITS = (124, 137)
IP_WAIT_LINE = "Waiting for domain to get an IP address"
LOG_TAIL_LINES = 15
# python-vagrant normalises libvirt's shutoff/paused to poweroff/saved; both spellings map here.
_STATES = {
    "running": "Running",
    "poweroff": "Stopped",
    "shutoff": "Stopped",
    "shutdown": "Stopping",
    "saved": "Paused",
    "paused": "Paused",
    "crashed": "Crashed",
    "pmsuspended": "Suspended",
    "not_created": "Absent",
}


class _TimedVagrant(vagrant.Vagrant):
    """python-vagrant runs vagrant without a deadline. Here every command runs under coreutils
    `timeout`, so a wait that never ends is cut and the vagrant process is killed, not left behind."""

    def __init__(self, *, timeout_s: float, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.timeout_s = timeout_s

    def _make_vagrant_command(self, args: list[str | None]) -> list[str]:
        return ["timeout", "--kill-after=20", str(int(self.timeout_s)), *super()._make_vagrant_command(args)]


# --- the Vagrantfile -------------------------------------------------------------------------


def _ruby(value: str) -> str:
    """A single-quoted Ruby string: no #{} interpolation, only \\ and ' need escaping."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _qemu_option(value: str) -> str:
    """QEMU -drive values separate options with commas; a comma inside a value is doubled."""
    return value.replace(",", ",,")


def vagrantfile_path(lab: LabDir) -> Path:
    return lab.path / "Vagrantfile"


def _boots_path(lab: LabDir) -> Path:
    return lab.path / "vagrant-boot.json"


def load_boots(lab: LabDir) -> dict[str, BootSpec]:
    """The boot spec of every VM made so far: the Vagrantfile must keep describing them."""
    path = _boots_path(lab)
    if not path.is_file():
        return {}
    return {name: BootSpec(**{**spec, "extra_disks": tuple(spec["extra_disks"])})
            for name, spec in json.loads(path.read_text()).items()}


def _save_boots(lab: LabDir, boots: dict[str, BootSpec]) -> None:
    write_private(_boots_path(lab), json.dumps({n: dataclasses.asdict(b) for n, b in boots.items()}, indent=2))


def node_box(state: LabState, node: NodeState) -> str:
    return state.box or vagrant_box.box_name(node.image, node.arch)


def _provider_lines(lab: LabDir, state: LabState, node: NodeState, boot: BootSpec) -> list[str]:
    settings = arch_settings(node.arch)
    lines = [
        "libvirt.qemu_use_session = false",
        # Domains get the libvirt backend's names: k0slab-<lab>-<vm>.
        f"libvirt.default_prefix = {_ruby(domain_name(state.name, ''))}",
        f"libvirt.driver = {_ruby('kvm' if boot.accel == 'kvm' else 'qemu')}",
        f"libvirt.cpus = {node.cpus}",
        f"libvirt.memory = {node.memory_mib}",
        f"libvirt.machine_virtual_size = {math.ceil(node.disk_bytes / (1 << 30))}",  # whole GiB
        "libvirt.disk_driver :cache => 'unsafe', :discard => 'unmap'",
        "libvirt.graphics_type = 'none'",
        "libvirt.video_type = 'none'",
        f"libvirt.serial :type => 'file', :source => {{ :path => {_ruby(str(lab.console_log(node.name)))} }}",
    ]
    if boot.accel == "kvm":
        lines.append("libvirt.cpu_mode = 'host-passthrough'")
    else:
        lines += ["libvirt.cpu_mode = 'custom'", f"libvirt.cpu_model = {_ruby(settings.cpu_model_tcg)}",
                  "libvirt.cpu_fallback = 'allow'"]
    if node.arch != "amd64":
        # vagrant-libvirt's defaults (acpi/apic/pae, a PS/2 mouse) are x86-only.
        lines += [f"libvirt.machine_type = {_ruby(settings.machine)}",
                  f"libvirt.machine_arch = {_ruby(settings.libvirt_arch)}",
                  f"libvirt.emulator_path = {_ruby(settings.emulator)}",
                  "libvirt.features = ['gic']",
                  "libvirt.input :type => 'keyboard', :bus => 'virtio'"]
    if state.box is None:
        spec = DomainSpec(
            lab=state.name, name=node.name, arch=node.arch, accel=boot.accel, cpus=node.cpus,
            memory_mib=node.memory_mib, disk=lab.disk(node.name), base_disk=Path(boot.base_disk),
            kernel=Path(boot.kernel), initrd=Path(boot.initrd), mac=node.mac, network=state.network,
            console_log=lab.console_log(node.name), ssh_public_key=boot.ssh_public_key,
            extra_cmdline=boot.extra_cmdline,
        )
        lines += [
            f"libvirt.kernel = {_ruby(boot.kernel)}",
            f"libvirt.initrd = {_ruby(boot.initrd)}",
            f"libvirt.cmd_line = {_ruby(spec.kernel_cmdline())}",
            # The lab NIC is the only one, so Vagrant's SSH and its DHCP-lease wait use the lab IP.
            "libvirt.mgmt_attach = false",
        ]
    for offset, disk in enumerate(boot.extra_disks):
        # vagrant-libvirt only attaches disks from a storage pool and never read-only; the k0s
        # binary disk is shared by every VM of the lab, so it is passed to QEMU directly. It gets
        # an explicit PCI slot at the end of the bus: QEMU's automatic one collides with the
        # slots libvirt assigns (measured: "slot 2 function 0 not available").
        drive_id = f"k0slab-extra{offset}"
        drive = f"file={_qemu_option(disk)},format=raw,if=none,id={drive_id},readonly=on"
        device = f"virtio-blk-pci,drive={drive_id},addr={0x1f - offset:#x}"
        for flag, value in (("-drive", drive), ("-device", device)):
            lines += [f"libvirt.qemuargs :value => {_ruby(flag)}", f"libvirt.qemuargs :value => {_ruby(value)}"]
    return lines


def _node_block(lab: LabDir, state: LabState, node: NodeState, boot: BootSpec) -> list[str]:
    own_box = state.box is None
    lines = [
        f"  config.vm.define {_ruby(node.name)} do |node|",
        f"    node.vm.box = {_ruby(node_box(state, node))}",
        # An own-box VM takes its lab IP by DHCP (the reservation); a public box is configured by Vagrant.
        f"    node.vm.network :private_network, ip: {_ruby(node.ip)}, mac: {_ruby(node.mac)}, "
        f"libvirt__network_name: {_ruby(state.network)}, auto_config: {'false' if own_box else 'true'}",
    ]
    if not own_box:
        key = base64.b64encode(boot.ssh_public_key.strip().encode()).decode()
        script = (f"install -d -m 700 /root/.ssh && echo {key} | base64 -d >> /root/.ssh/authorized_keys "
                  f"&& chmod 600 /root/.ssh/authorized_keys")
        lines += [f"    node.vm.hostname = {_ruby(node.name)}",
                  f"    node.vm.provision 'shell', name: 'k0slab lab key for root', inline: {_ruby(script)}"]
    proxy = netns_proxy_command(node.ip)
    if proxy:
        lines.append(f"    node.ssh.proxy_command = {_ruby(proxy)}")
    lines.append("    node.vm.provider :libvirt do |libvirt|")
    lines += [f"      {line}" for line in _provider_lines(lab, state, node, boot)]
    lines += ["    end", "  end"]
    return lines


def vagrantfile(lab: LabDir, state: LabState, boots: dict[str, BootSpec]) -> str:
    """The lab's Vagrantfile: one machine per node of the state that has a boot spec."""
    lines = [
        f"# Generated by k0slab from the state of lab {state.name!r}: rewritten on every change, do not edit.",
        'Vagrant.configure("2") do |config|',
        "  config.vm.box_check_update = false",
        '  config.vm.synced_folder ".", "/vagrant", disabled: true',
        f"  config.vm.boot_timeout = {BOOT_TIMEOUT_S}",
    ]
    if state.box is None:
        lines += [
            "  config.ssh.username = 'root'",
            f"  config.ssh.private_key_path = [{_ruby(str(lab.ssh_key))}]",
            "  config.ssh.insert_key = false",
            "  config.ssh.sudo_command = '%c'",
        ]
    for node in sorted(state.nodes.values(), key=lambda n: n.index):
        if node.name in boots:
            lines += _node_block(lab, state, node, boots[node.name])
    lines.append("end")
    return "\n".join(lines) + "\n"


def defined_machines(lab: LabDir) -> list[str]:
    """Machines the lab's Vagrantfile defines (k0slab wrote it, so its own pattern finds them)."""
    path = vagrantfile_path(lab)
    if not path.is_file():
        return []
    return re.findall(r"^  config\.vm\.define '([^']+)' do", path.read_text(), flags=re.M)


def map_state(vagrant_state: str | None) -> str:
    return _STATES.get(vagrant_state or "", "Unknown")


# --- the backend -----------------------------------------------------------------------------


class VagrantBackend:
    name = "vagrant"

    def __init__(self) -> None:
        # The lab network, its DHCP reservations and leftovers stay with the libvirt backend.
        self._libvirt = LibvirtBackend()
        self._lock = threading.Lock()
        self._destroy_lock = threading.Lock()
        self._checked = False
        self._first_boot: dict[str, threading.Lock] = {}
        self._booted: set[str] = set()

    # --- running vagrant ---------------------------------------------------------------------
    def require_vagrant(self) -> None:
        """One-line errors naming what to install, before any vagrant command runs."""
        if self._checked:
            return
        if shutil.which("vagrant") is None:
            raise K0slabError("vagrant is not installed (needed by --provider vagrant)", INSTALL_HINT)
        plugins = self._client(None, COMMAND_TIMEOUT_S).plugin_list()
        if not any(p.name == PLUGIN for p in plugins):
            raise K0slabError(f"the {PLUGIN} plugin of vagrant is not installed", INSTALL_HINT)
        self._checked = True

    @staticmethod
    def _client(lab: LabDir | None, timeout_s: float) -> vagrant.Vagrant:
        env = {
            **os.environ,
            # No calls home: labs run offline, and Vagrant would otherwise check for updates.
            "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
            "VAGRANT_DEFAULT_PROVIDER": "libvirt",
        }
        if lab is None:
            return _TimedVagrant(timeout_s=timeout_s, env=env)
        log = vagrant.make_file_cm(str(lab.logs_dir / "vagrant.log"))
        return _TimedVagrant(timeout_s=timeout_s, root=str(lab.path), env=env, out_cm=log, err_cm=log)

    def _run(self, lab: LabDir, what: str, action: Callable[[vagrant.Vagrant], T], timeout_s: float,
             hint: Callable[[str], str] | None = None) -> T:
        """Run one vagrant command for the lab; its output goes to logs/vagrant.log, named in errors."""
        self.require_vagrant()
        lab.logs_dir.mkdir(parents=True, exist_ok=True)
        try:
            return action(self._client(lab, timeout_s))
        except subprocess.CalledProcessError as exc:
            tail = log_tail(lab)
            where = f"vagrant's output: {lab.logs_dir / 'vagrant.log'}"
            if exc.returncode in TIMEOUT_EXITS:
                raise WaitTimeout(
                    f"timed out after {timeout_s:.0f}s waiting for {what}",
                    hint(tail) if hint else where, details=tail,
                ) from None
            raise K0slabError(f"{what} failed (vagrant exited {exc.returncode})", where, details=tail) from None

    # --- network: k0slab's, as with the libvirt backend ---------------------------------------
    def ensure_network(self, state: LabState) -> None:
        self._libvirt.ensure_network(state)

    def remove_network(self, state: LabState) -> None:
        self._libvirt.remove_network(state)

    # --- VMs ---------------------------------------------------------------------------------
    def create_vm(self, lab: LabDir, state: LabState, node: NodeState, boot: BootSpec) -> None:
        self.require_vagrant()
        box = node_box(state, node)
        with self._lock:
            if state.box is None:
                self._ensure_own_box(lab, node)
            for disk in boot.extra_disks:
                give_to_qemu(Path(disk))
            boots = load_boots(lab)
            boots[node.name] = boot
            _save_boots(lab, boots)
            write_private(vagrantfile_path(lab), vagrantfile(lab, state, boots))
            first = self._first_boot.setdefault(box, threading.Lock())
        # A box's first `up` uploads its image into libvirt's storage pool, and two uploads at once
        # collide on that volume: the first VM of a box boots alone, the others then in parallel.
        with first:
            if box not in self._booted:
                self._up(lab, state, node)
                self._booted.add(box)
                return
        self._up(lab, state, node)

    def _ensure_own_box(self, lab: LabDir, node: NodeState) -> None:
        """Add k0slab's box for this image to Vagrant, unless the installed one is from this image."""
        image = imagemod.require_image(node.image, node.arch)
        name = vagrant_box.box_name(node.image, node.arch)
        if vagrant_box.installed_key(name) == image.key:
            return
        path = vagrant_box.make_box(image, progress=lambda _line: None)
        self._run(lab, f"vagrant box add {name}", lambda v: v.box_add(name, str(path), force=True),
                  BOX_ADD_TIMEOUT_S)

    def _up(self, lab: LabDir, state: LabState, node: NodeState) -> None:
        self._run(lab, f"vagrant up {node.name} (domain defined, lab IP {node.ip} leased, SSH answering)",
                  lambda v: v.up(vm_name=node.name, provider="libvirt"), UP_TIMEOUT_S,
                  hint=lambda tail: self._up_hint(lab, state, node, tail))
        if state.box is None:
            # Vagrant and k0slab must agree on the address: anything else means the lab NIC is not
            # the VM's first, and vagrant-libvirt waited on another network's lease.
            host = self._run(lab, f"vagrant ssh-config {node.name}", lambda v: v.hostname(node.name),
                             COMMAND_TIMEOUT_S)
            if host != node.ip:
                raise K0slabError(
                    f"Vagrant reaches {node.name} at {host}, not at its lab IP {node.ip}",
                    f"the lab network {state.network} must be the VM's only NIC: check {vagrantfile_path(lab)}",
                )

    @staticmethod
    def _up_hint(lab: LabDir, state: LabState, node: NodeState, tail: str) -> str:
        console = lab.console_log(node.name)
        if IP_WAIT_LINE in tail:
            return (f"vagrant-libvirt waits for a DHCP lease of {node.mac} (vagrant-libvirt issues 673/899); "
                    f"{state.network} reserves {node.ip} for it: see `virsh net-dhcp-leases {state.network}` "
                    f"and whether the VM booted: {console}")
        return (f"the VM may be stuck booting, or QEMU refused to start: console log {console}, "
                f"QEMU's log /var/log/libvirt/qemu/{domain_name(state.name, node.name)}.log, "
                f"vagrant's output {lab.logs_dir / 'vagrant.log'}")

    def start_vm(self, state: LabState, node: NodeState) -> None:
        lab = LabDir(state.name)
        self._up(lab, state, node)

    def stop_vm(self, state: LabState, node: NodeState, *, force: bool = False) -> None:
        lab = LabDir(state.name)
        self._run(lab, f"vagrant halt {node.name}", lambda v: v.halt(vm_name=node.name, force=force),
                  COMMAND_TIMEOUT_S)

    def delete_vm(self, lab: LabDir, state: LabState, node: NodeState) -> None:
        if node.name in defined_machines(lab):
            # One destroy at a time: vagrant-libvirt removes the network after the last machine of
            # the environment, and two concurrent destroys both tried it (measured: "Network not found").
            with self._destroy_lock:
                self._run(lab, f"vagrant destroy {node.name}", lambda v: v.destroy(vm_name=node.name),
                          COMMAND_TIMEOUT_S)
            with self._lock:
                boots = load_boots(lab)
                boots.pop(node.name, None)
                _save_boots(lab, boots)
                others = state.model_copy(update={"nodes": {n: v for n, v in state.nodes.items() if n != node.name}})
                write_private(vagrantfile_path(lab), vagrantfile(lab, others, boots))
        # The DHCP reservation, and a domain Vagrant lost track of (its .vagrant folder gone).
        self._libvirt.delete_vm(lab, state, node)

    def vm_state(self, state: LabState, node: NodeState) -> str:
        lab = LabDir(state.name)
        if node.name not in defined_machines(lab):
            return "Absent"
        statuses = self._run(lab, f"vagrant status {node.name}", lambda v: v.status(vm_name=node.name),
                             COMMAND_TIMEOUT_S)
        return map_state(statuses[0].state if statuses else None)

    # --- prune -------------------------------------------------------------------------------
    def guest_host_key(self, state: LabState, node: NodeState) -> str | None:
        # Public boxes need not run a guest agent, and vagrant-libvirt adds no channel for one.
        raise NoAgentChannel(node.name)

    def owned_resources(self) -> list[OwnedResource]:
        """Vagrant machines in lab folders, and k0slab's libvirt networks."""
        owned = [OwnedResource(MACHINE_KIND, f"{lab.name}/{machine}", lab.name)
                 for lab in all_labs() for machine in _created_machines(lab)]
        return owned + [r for r in self._libvirt.owned_resources() if r.kind == "network"]

    def network_subnets(self) -> set[int]:
        return self._libvirt.network_subnets()  # k0slab, not Vagrant, makes the lab networks

    def remove_resource(self, resource: OwnedResource) -> None:
        if resource.kind != MACHINE_KIND:
            self._libvirt.remove_resource(resource)
            return
        lab_name, machine = resource.name.split("/", 1)
        lab = LabDir(lab_name)
        if machine in defined_machines(lab):
            self._run(lab, f"vagrant destroy {machine}", lambda v: v.destroy(vm_name=machine), COMMAND_TIMEOUT_S)
        else:
            self._libvirt.remove_resource(OwnedResource("domain", domain_name(lab_name, machine), lab_name))


QEMU_CONF = Path("/etc/libvirt/qemu.conf")
# The user libvirt runs QEMU as when qemu.conf names none: Debian's and Ubuntu's, then Fedora's.
QEMU_DEFAULT_USERS = ("libvirt-qemu", "qemu")


def qemu_user() -> tuple[int, int]:
    """The uid and gid of the system libvirtd's QEMU processes."""
    configured = re.search(r'^\s*user\s*=\s*"([^"]+)"', QEMU_CONF.read_text(), re.M) if QEMU_CONF.is_file() else None
    for name in ([configured.group(1)] if configured else list(QEMU_DEFAULT_USERS)):
        with contextlib.suppress(KeyError, ValueError):
            # qemu.conf takes a name, or "+UID" for a numeric id.
            entry = pwd.getpwuid(int(name[1:])) if name.startswith("+") else pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise K0slabError(f"cannot tell which user libvirt runs QEMU as (none of {', '.join(QEMU_DEFAULT_USERS)} exists)",
                      f"set user = \"...\" in {QEMU_CONF}")


def give_to_qemu(disk: Path) -> None:
    """vagrant-libvirt passes the read-only disks to QEMU as raw arguments, behind libvirt's back, so
    libvirt's DAC driver never lends them to QEMU's user as it does the overlays: hand them over for
    good, still readable by nobody else (QEMU otherwise fails with "Permission denied")."""
    uid, gid = qemu_user()
    os.chown(disk, uid, gid)
    disk.chmod(0o600)


def _created_machines(lab: LabDir) -> list[str]:
    """Machines Vagrant has made in this lab folder: each keeps its domain id in .vagrant."""
    machines = lab.path / ".vagrant" / "machines"
    return sorted(p.parent.parent.name for p in machines.glob("*/libvirt/id")) if machines.is_dir() else []


def log_tail(lab: LabDir, lines: int = LOG_TAIL_LINES) -> str:
    path = lab.logs_dir / "vagrant.log"
    with contextlib.suppress(OSError):
        return "\n".join(path.read_bytes()[-20000:].decode(errors="replace").strip().splitlines()[-lines:])
    return f"(no vagrant output at {path})"
