"""The VM backend interface: what lab and vm code needs from a hypervisor driver.

The libvirt backend is the default; other backends (Vagrant) implement the same verbs, and the
rest of k0slab does not know which one it talks to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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

    def remove_resource(self, resource: OwnedResource) -> None: ...
