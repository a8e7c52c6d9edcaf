"""The VM backend interface: what lab and vm code needs from a hypervisor driver.

The libvirt backend is the default; other backends (Vagrant) implement the same verbs, and the
rest of k0slab does not know which one it talks to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from k0slab.core.errors import K0slabError
from k0slab.core.state import LabDir, LabState, NodeState


@dataclass(frozen=True)
class BootSpec:
    """What a VM boots from: the cached image files and the acceleration chosen for its arch."""

    base_disk: str
    kernel: str
    initrd: str
    accel: str
    ssh_public_key: str
    extra_cmdline: str = ""
    extra_disks: tuple[str, ...] = ()


class NoAgentChannel(Exception):
    """The backend cannot read files from a guest: host keys are pinned on first SSH contact instead."""


@dataclass(frozen=True)
class OwnedResource:
    kind: str  # "domain" | "network" | "disk"
    name: str
    lab: str


class VMBackend(Protocol):
    name: str

    def ensure_network(self, state: LabState) -> None:
        """Create (or complete) the lab network with a DHCP reservation for every node in state."""

    def remove_network(self, state: LabState) -> None: ...

    def create_vm(self, lab: LabDir, state: LabState, node: NodeState, boot: BootSpec) -> None:
        """Create the VM's disk and start it."""

    def start_vm(self, state: LabState, node: NodeState) -> None: ...

    def stop_vm(self, state: LabState, node: NodeState, *, force: bool = False) -> None: ...

    def delete_vm(self, lab: LabDir, state: LabState, node: NodeState) -> None:
        """Destroy the VM and remove its disk and DHCP reservation; absent parts are fine."""

    def vm_state(self, state: LabState, node: NodeState) -> str:
        """Running, Stopped, Crashed, Paused or Absent."""

    def guest_host_key(self, state: LabState, node: NodeState) -> str | None:
        """The node's SSH host public key line read through a channel other than SSH itself (the guest
        agent), None while the guest cannot tell yet. Raises NoAgentChannel where there is none."""

    def owned_resources(self) -> list[OwnedResource]:
        """Everything this backend holds that k0slab created (for lab.prune)."""

    def network_subnets(self) -> set[int]:
        """The subnet index of every k0slab network the hypervisor has, lab state or not (a new lab
        must not take one that a crashed run left)."""

    def remove_resource(self, resource: OwnedResource) -> None: ...


@runtime_checkable
class SnapshotBackend(Protocol):
    """A backend that can save and restore a running VM's memory and disk (lab.snapshot, lab.revert)."""

    name: str

    def suspend_vm(self, state: LabState, node: NodeState) -> None: ...

    def resume_vm(self, state: LabState, node: NodeState) -> None: ...

    def snapshot_vm(self, lab: LabDir, state: LabState, node: NodeState, snapshot: str) -> int:
        """Save memory and disk of the (suspended) VM as `snapshot`; returns the bytes it added on disk."""

    def revert_vm(self, state: LabState, node: NodeState, snapshot: str) -> None:
        """Bring the VM back to `snapshot`, left paused so that all VMs of a lab resume together."""

    def delete_snapshot(self, state: LabState, node: NodeState, snapshot: str) -> None:
        """Remove `snapshot` of the VM; an absent one is fine."""

    def vm_snapshots(self, state: LabState, node: NodeState) -> list[str]: ...

    def set_guest_time(self, state: LabState, node: NodeState) -> None:
        """Set the guest's clock to the host's (through the guest agent): a restored VM's clock is old."""


def snapshot_backend(backend: VMBackend) -> SnapshotBackend:
    if not isinstance(backend, SnapshotBackend):
        raise K0slabError(
            f"the {backend.name} provider cannot take memory snapshots of running VMs "
            "(no disk-only fallback: a cold boot would not give a lab back in seconds)",
            "use a lab made with --provider libvirt for lab.snapshot and lab.revert",
        )
    return backend
