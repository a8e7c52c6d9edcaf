"""The libvirt/QEMU backend: an isolated network per lab, a qcow2 overlay and a domain per VM."""
from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape

import libvirt
import libvirt_qemu

from k0slab.core import cancel
from k0slab.vms.backend import BootSpec, OwnedResource
from k0slab.vms.domain import K0SLAB_XMLNS, DomainSpec, domain_name, domain_xml
from k0slab.core.errors import K0slabError
from k0slab.vms.network import dhcp_host_xml, network_xml
from k0slab.core.proc import run
from k0slab.core.state import LabDir, LabState, NodeState
from k0slab.core.waits import NotYet

DEFAULT_URI = "qemu:///system"
GUEST_HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
AGENT_TIMEOUT_S = 5
HOST_KEY_MAX_BYTES = 4096
K0SLAB_PREFIX = "k0slab-"  # of every domain (domain.domain_name) and network (network.network_name)
SHUTDOWN_GRACE_S = 30.0
_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: "Running",
    libvirt.VIR_DOMAIN_BLOCKED: "Running",
    libvirt.VIR_DOMAIN_PAUSED: "Paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "Stopping",
    libvirt.VIR_DOMAIN_SHUTOFF: "Stopped",
    libvirt.VIR_DOMAIN_CRASHED: "Crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "Suspended",
}

# libvirt prints every error to stderr by default; k0slab reports them itself.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _uri() -> str:
    return os.environ.get("LIBVIRT_DEFAULT_URI", DEFAULT_URI)


def _not_found(error: libvirt.libvirtError) -> bool:
    return error.get_error_code() in (
        libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_NETWORK, libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
    )


def _destroy_and_undefine(domain: libvirt.virDomain) -> None:
    if domain.isActive():
        domain.destroy()
    # Internal snapshots live in the overlay (removed with it); their libvirt metadata goes here,
    # without which libvirt refuses to undefine a domain that has snapshots.
    domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


def _allocated_bytes(path: Path) -> int:
    return path.stat().st_blocks * 512


# A libvirtd that stops answering (hung, killed, its namespace gone) fails every call on the
# connection after about KEEPALIVE_INTERVAL_S * (KEEPALIVE_COUNT + 1) seconds instead of blocking
# forever. The daemon answers keepalives from its own event loop, so a slow call (a define while
# QEMU is probed, a memory snapshot) is not cut short.
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 5
_events_lock = threading.Lock()
_events_running = False


def _start_event_loop() -> None:
    """libvirt's client-side keepalive needs an event loop: one daemon thread serves every connection."""
    global _events_running
    with _events_lock:
        if _events_running:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_events, name="libvirt-events", daemon=True).start()
        _events_running = True


def _run_events() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


class LibvirtBackend:
    name = "libvirt"

    def __init__(self) -> None:
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    @property
    def conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is None:
                try:
                    _start_event_loop()
                    self._conn = libvirt.open(_uri())
                    self._conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
                except libvirt.libvirtError as exc:
                    raise K0slabError(
                        f"libvirt at {_uri()} is not reachable ({str(exc).splitlines()[0]})",
                        "start it: `systemctl start libvirtd`, or without systemd `invoke host.up` "
                        "(starts libvirtd in its own network namespace)",
                    ) from None
            return self._conn

    # --- network ---------------------------------------------------------------------------
    def _network(self, state: LabState) -> libvirt.virNetwork | None:
        try:
            return self.conn.networkLookupByName(state.network)
        except libvirt.libvirtError as exc:
            if _not_found(exc):
                return None
            raise

    def ensure_network(self, state: LabState) -> None:
        network = self._network(state)
        if network is None:
            network = self.conn.networkDefineXML(network_xml(state))
        root = ET.fromstring(network.XMLDesc(0))
        bridge = root.find("bridge")
        if bridge is None or bridge.get("name") != state.bridge:
            raise K0slabError(
                f"libvirt network {state.network!r} exists but is not the one lab {state.name!r} recorded",
                "it is left over from a crashed run: remove it with `invoke lab.prune`",
            )
        if not network.isActive():
            network.create()
        reserved = {host.get("name"): host for host in root.iter("host")}
        for node in state.nodes.values():
            host = reserved.get(node.name)
            if host is not None and (host.get("mac"), host.get("ip")) == (node.mac, node.ip):
                continue
            if host is not None:
                # A reservation left by a VM of the same name that was deleted uncleanly.
                self._update_host(network, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, ET.tostring(host).decode())
            self._update_host(network, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, dhcp_host_xml(node))

    @staticmethod
    def _update_host(network: libvirt.virNetwork, command: int, host_xml: str) -> None:
        live = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE if network.isActive() else 0
        network.update(
            command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, host_xml,
            live | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
        )

    def remove_network(self, state: LabState) -> None:
        network = self._network(state)
        if network is None:
            return
        if network.isActive():
            network.destroy()
        network.undefine()

    def _remove_reservation(self, state: LabState, node: NodeState) -> None:
        network = self._network(state)
        if network is None:
            return
        for host in ET.fromstring(network.XMLDesc(0)).iter("host"):
            if host.get("mac") == node.mac:
                self._update_host(network, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, ET.tostring(host).decode())

    # --- domains ---------------------------------------------------------------------------
    def _domain(self, state: LabState, node: NodeState) -> libvirt.virDomain | None:
        try:
            return self.conn.lookupByName(domain_name(state.name, node.name))
        except libvirt.libvirtError as exc:
            if _not_found(exc):
                return None
            raise

    def create_vm(self, lab: LabDir, state: LabState, node: NodeState, boot: BootSpec) -> None:
        disk = lab.disk(node.name)
        if not disk.exists():
            run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", boot.base_disk,
                 disk, str(node.disk_bytes)],
                what=f"creating the disk of {node.name}",
            )
            # The overlay will hold the node's secrets (a controller's CA key, admin.conf, etcd): root
            # only. libvirt's DAC driver (dynamic_ownership, on by default) chowns it to the QEMU user
            # while the domain runs and gives it back afterwards, so QEMU needs no wider mode.
            disk.chmod(0o600)
        spec = DomainSpec(
            lab=state.name, name=node.name, arch=node.arch, accel=boot.accel, cpus=node.cpus,
            memory_mib=node.memory_mib, disk=disk, base_disk=Path(boot.base_disk),
            kernel=Path(boot.kernel), initrd=Path(boot.initrd), mac=node.mac, network=state.network,
            console_log=lab.console_log(node.name), ssh_public_key=boot.ssh_public_key,
            extra_cmdline=boot.extra_cmdline, extra_disks=[Path(d) for d in boot.extra_disks],
        )
        domain = self.conn.defineXML(domain_xml(spec))
        if not domain.isActive():
            domain.create()

    def start_vm(self, state: LabState, node: NodeState) -> None:
        domain = self._require_domain(state, node)
        if not domain.isActive():
            domain.create()

    def stop_vm(self, state: LabState, node: NodeState, *, force: bool = False) -> None:
        domain = self._require_domain(state, node)
        if not domain.isActive():
            return
        if not force:
            try:
                domain.shutdown()
                deadline = time.monotonic() + SHUTDOWN_GRACE_S
                while time.monotonic() < deadline and domain.isActive():
                    cancel.sleep(0.5)
            except libvirt.libvirtError:
                pass
        if domain.isActive():
            domain.destroy()

    def _require_domain(self, state: LabState, node: NodeState) -> libvirt.virDomain:
        domain = self._domain(state, node)
        if domain is None:
            raise K0slabError(
                f"VM {node.name!r} of lab {state.name!r} has no libvirt domain",
                f"recreate it with: invoke lab.up --lab {state.name}, or remove it with: invoke vm.delete {node.name}",
            )
        return domain

    def delete_vm(self, lab: LabDir, state: LabState, node: NodeState) -> None:
        domain = self._domain(state, node)
        if domain is not None:
            _destroy_and_undefine(domain)
        self._remove_reservation(state, node)
        lab.disk(node.name).unlink(missing_ok=True)

    def guest_host_key(self, state: LabState, node: NodeState) -> str | None:
        """Read the guest's public host key with the QEMU guest agent (guest-file-open/read/close):
        the key arrives over the VM's own virtio channel, so no network peer can substitute it."""
        domain = self._require_domain(state, node)

        def agent(command: str, **arguments: object) -> object:
            reply = libvirt_qemu.qemuAgentCommand(
                domain, json.dumps({"execute": command, "arguments": arguments}), AGENT_TIMEOUT_S, 0)
            return json.loads(reply)["return"]

        try:
            handle = agent("guest-file-open", path=GUEST_HOST_KEY, mode="r")
        except libvirt.libvirtError:
            return None  # the agent is not up yet, or sshd has not made the key yet
        try:
            read = agent("guest-file-read", handle=handle, count=HOST_KEY_MAX_BYTES)
            return base64.b64decode(read["buf-b64"]).decode(errors="replace").strip() or None
        except libvirt.libvirtError:
            return None
        finally:
            try:
                agent("guest-file-close", handle=handle)
            except libvirt.libvirtError:
                pass  # the handle dies with the agent

    def vm_state(self, state: LabState, node: NodeState) -> str:
        domain = self._domain(state, node)
        if domain is None:
            return "Absent"
        return _STATES.get(domain.state()[0], "Unknown")

    # --- snapshots (internal qcow2 snapshots with memory state, see docs/snapshots.md) -----------
    def suspend_vm(self, state: LabState, node: NodeState) -> None:
        domain = self._require_domain(state, node)
        if domain.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
            domain.suspend()

    def resume_vm(self, state: LabState, node: NodeState) -> None:
        domain = self._require_domain(state, node)
        if domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            domain.resume()

    def snapshot_vm(self, lab: LabDir, state: LabState, node: NodeState, snapshot: str) -> int:
        domain = self._require_domain(state, node)
        disk = lab.disk(node.name)
        before = _allocated_bytes(disk)
        # Read-only disks (the k0s binary disk, raw) are left out by libvirt itself (snapshot='no').
        xml = (
            f"<domainsnapshot><name>{escape(snapshot)}</name>"
            f"<description>k0slab lab {escape(state.name)}</description>"
            "<memory snapshot='internal'/></domainsnapshot>"
        )
        domain.snapshotCreateXML(xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
        return max(0, _allocated_bytes(disk) - before)

    def revert_vm(self, state: LabState, node: NodeState, snapshot: str) -> None:
        domain = self._require_domain(state, node)
        domain.revertToSnapshot(domain.snapshotLookupByName(snapshot), libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED)

    def delete_snapshot(self, state: LabState, node: NodeState, snapshot: str) -> None:
        domain = self._domain(state, node)
        if domain is None:
            return
        try:
            domain.snapshotLookupByName(snapshot).delete(0)
        except libvirt.libvirtError as exc:
            if not _not_found(exc):
                raise

    def vm_snapshots(self, state: LabState, node: NodeState) -> list[str]:
        domain = self._domain(state, node)
        return [] if domain is None else sorted(s.getName() for s in domain.listAllSnapshots(0))

    def set_guest_time(self, state: LabState, node: NodeState) -> None:
        domain = self._require_domain(state, node)
        now = time.time()
        try:
            # guest-set-time through the qemu-guest-agent the node image runs.
            domain.setTime({"seconds": int(now), "nseconds": int((now % 1) * 1e9)}, 0)
        except libvirt.libvirtError as exc:
            raise NotYet(f"guest agent of {node.name}: {str(exc).splitlines()[0]}") from None

    # --- prune -----------------------------------------------------------------------------
    def owned_resources(self) -> list[OwnedResource]:
        owned = []
        domains = []
        # Both marks k0slab gives what it creates: its metadata element and its name prefix.
        for domain in self.conn.listAllDomains(0):
            lab = _k0slab_lab(domain.XMLDesc(0), "vm")
            if lab is not None and domain.name().startswith(K0SLAB_PREFIX):
                owned.extend(
                    OwnedResource("snapshot", f"{domain.name()}/{snapshot.getName()}", lab)
                    for snapshot in domain.listAllSnapshots(0)
                )
                domains.append(OwnedResource("domain", domain.name(), lab))
        # Snapshots first: removing a domain removes its snapshots' metadata with it.
        owned.extend(domains)
        for network in self.conn.listAllNetworks(0):
            lab = _k0slab_lab(network.XMLDesc(0), "lab")
            if lab is not None and network.name().startswith(K0SLAB_PREFIX):
                owned.append(OwnedResource("network", network.name(), lab))
        return owned

    def network_subnets(self) -> set[int]:
        subnets = set()
        for resource in self.owned_resources():
            if resource.kind == "network":
                xml = self.conn.networkLookupByName(resource.name).XMLDesc(0)
                match = re.search(r"10\.213\.(\d+)\.1'", xml)
                if match:
                    subnets.add(int(match.group(1)))
        return subnets

    def stop_resource(self, resource: OwnedResource) -> bool:
        """Destroy (stop) a running k0slab domain or network, keeping its definition; True if it ran."""
        if resource.kind == "snapshot":
            return False  # nothing of a snapshot runs
        try:
            item = (self.conn.lookupByName(resource.name) if resource.kind == "domain"
                    else self.conn.networkLookupByName(resource.name))
            if item.isActive():
                item.destroy()
                return True
        except libvirt.libvirtError as exc:
            if not _not_found(exc):
                raise
        return False

    def remove_resource(self, resource: OwnedResource) -> None:
        try:
            if resource.kind == "domain":
                _destroy_and_undefine(self.conn.lookupByName(resource.name))
            elif resource.kind == "snapshot":
                domain_name_, snapshot = resource.name.split("/", 1)
                self.conn.lookupByName(domain_name_).snapshotLookupByName(snapshot).delete(0)
            elif resource.kind == "network":
                network = self.conn.networkLookupByName(resource.name)
                if network.isActive():
                    network.destroy()
                network.undefine()
        except libvirt.libvirtError as exc:
            if not _not_found(exc):
                raise


def _k0slab_lab(xml: str, element: str) -> str | None:
    """The lab named in k0slab's metadata element, or None for resources k0slab did not create."""
    found = ET.fromstring(xml).find(f"metadata/{{{K0SLAB_XMLNS}}}{element}")
    if found is None:
        return None
    return found.get("lab") or (found.text or "").strip() or None
