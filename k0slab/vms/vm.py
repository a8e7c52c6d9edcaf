"""Multipass-like VM operations on a lab: launch, list, info, exec, transfer, stop/start, delete.

A lab here is just a named group of VMs sharing a network and an SSH key; `lab.up` builds a k0s
cluster on top of the same functions.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from k0slab.vms import image as imagemod
from k0slab.vms.accel import choose_accel
from k0slab.vms.arch import arch_settings
from k0slab.vms.backend import BootSpec, NoAgentChannel, VMBackend
from k0slab.core.errors import K0slabError
from k0slab.vms.libvirt_backend import LibvirtBackend
from k0slab.vms.network import (
    allocate_subnet, bridge_name, network_name, next_host_index, node_ip, node_kernel_args, node_mac,
)
from k0slab.core.paths import data_home
from k0slab.vms.ssh import HOST_KEY_TYPE, SSHNode, forget_host_key, generate_keypair, pin_host_key, pinned_key
from k0slab.core.state import LabDir, LabState, NodeState, all_labs, private_folder, private_opener
from k0slab.core.units import format_size, mib, parse_size, validate_cpus, validate_hostname
from k0slab.core.waits import NotYet, Requirement

log = logging.getLogger("k0slab")
Progress = Callable[[str], None]

# Boot is CPU-bound under TCG: ~45-60 s for one VM per free core (shared/probes), more under load.
BOOT_TIMEOUT_BASE_S = 300.0
BOOT_TIMEOUT_PER_EXTRA_VM_S = 60.0
CONSOLE_TAIL_LINES = 15


@dataclass(frozen=True)
class VMRequest:
    name: str
    cpus: int = 1
    memory: str = "1G"
    disk: str = "5G"
    arch: str = "amd64"
    image: str = "debian-12"
    role: str = "none"


def host_memory_total() -> int:
    """The host's RAM: no single VM can have more (what is free right now is lab.up's check)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise K0slabError("/proc/meminfo has no MemTotal line", "k0slab needs Linux's /proc")


def backend_of(state: LabState | None) -> VMBackend:
    """The backend a lab was made with; a lab with no state yet (or a lost one) is libvirt's, whose
    metadata lets lab.down and lab.prune find what a crashed run left."""
    return get_backend(state.provider if state is not None else "libvirt")


def get_backend(name: str = "libvirt") -> VMBackend:
    if name == "libvirt":
        return LibvirtBackend()
    if name == "vagrant":
        try:
            from k0slab.vms.vagrant_backend import VagrantBackend
        except ModuleNotFoundError as missing:
            if missing.name != "vagrant":
                raise
            raise K0slabError("the vagrant provider needs python-vagrant, which is not installed",
                              "pip install 'k0slab[vagrant]' (in a checkout: pip install -e '.[vagrant]')") from None
        return VagrantBackend()
    raise K0slabError(f"unknown provider {name!r}", "use libvirt or vagrant")


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    """Serialise subnet allocation across concurrent commands creating different labs."""
    private_folder(data_home(), 0o711)
    with open(data_home() / ".allocate.lock", "a", opener=private_opener) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def subnets_in_use(backend: VMBackend) -> set[int]:
    """Subnets of every lab state, and of every k0slab network the backend has (if it is reachable)."""
    used = set()
    for lab in all_labs():
        with contextlib.suppress(K0slabError):
            state = lab.load_or_none()
            if state is not None:
                used.add(state.subnet_index)
    with contextlib.suppress(K0slabError):  # a dry run may plan without libvirt; creating connects for real
        used |= backend.network_subnets()
    return used


def open_or_create_lab(lab: LabDir, backend: VMBackend, profile: str | None = None,
                       avoid_subnets: frozenset[int] = frozenset()) -> LabState:
    """The lab's state; a new lab gets its subnet (none of `avoid_subnets`), network name, folder
    and SSH key first."""
    existing = lab.load_or_none()
    if existing is not None:
        return existing
    with _allocation_lock():
        index = allocate_subnet(subnets_in_use(backend) | avoid_subnets)
        state = LabState(
            name=lab.name, subnet_index=index, network=network_name(lab.name), bridge=bridge_name(index),
            profile=profile,
        )
        lab.create()
        generate_keypair(lab.ssh_key)
        lab.save(state)
    return state


def plan_node(state: LabState, request: VMRequest) -> NodeState:
    """Validate a request and give it its index, MAC and IP (nothing is created)."""
    validate_hostname(request.name)
    if request.name in state.nodes:
        raise K0slabError(
            f"VM name {request.name!r} is already used in lab {state.name!r}",
            "choose another name, or delete it first: invoke vm.delete " + request.name,
        )
    validate_cpus(request.cpus)
    arch_settings(request.arch)
    memory = parse_size(request.memory, "--memory")
    if memory < 256 << 20:
        raise K0slabError(f"--memory {request.memory!r} is too small", "give a VM at least 256M (k0s wants 1G)")
    if memory > host_memory_total():
        raise K0slabError(f"--memory {request.memory!r} is more than the host's {format_size(host_memory_total())}",
                          "use a smaller --memory, e.g. 2G")
    disk = parse_size(request.disk, "--disk")
    base = imagemod.find_image(request.image, request.arch)
    # An image not built yet will be as large as its recipe says: refuse now, not after building it.
    minimum = base.virtual_size() if base is not None else parse_size(imagemod.load_recipe(request.image).disk_size)
    if disk < minimum:
        raise K0slabError(
            f"--disk {request.disk!r} is smaller than image {request.image!r} ({format_size(minimum)})",
            f"use --disk {format_size(minimum)} or more",
        )
    index = next_host_index(state)
    return NodeState(
        name=request.name, index=index, arch=request.arch, cpus=request.cpus, memory_mib=mib(memory),
        disk_bytes=disk, image=request.image, mac=node_mac(state.subnet_index, index),
        ip=node_ip(state.subnet_index, index), role=request.role,
    )


def boot_spec(lab: LabDir, node: NodeState, progress: Progress, extra_cmdline: str = "",
              extra_disks: tuple[str, ...] = ()) -> BootSpec:
    image = imagemod.build(node.image, node.arch, progress=progress)
    accel, reason = choose_accel(image.kernel, node.arch)
    progress(f"{node.name}: {node.arch} guest accelerated by {accel}: {reason}")
    node.accel = accel
    return BootSpec(
        base_disk=str(image.disk), kernel=str(image.kernel), initrd=str(image.initrd), accel=accel,
        ssh_public_key=lab.ssh_key.with_suffix(".pub").read_text(), extra_cmdline=extra_cmdline,
        extra_disks=extra_disks,
    )


def create_nodes(
    lab: LabDir, state: LabState, nodes: list[NodeState], backend: VMBackend, progress: Progress,
    extra_cmdline: str = "", extra_disks: dict[str, tuple[str, ...]] | None = None,
) -> None:
    """Record the nodes, then create the network and every VM (in parallel); extra_disks maps
    a node name to the read-only disks it gets, in device order."""
    for node in nodes:
        state.nodes[node.name] = node
        if not lab.disk(node.name).exists():
            # A new disk makes a new host key at first boot: a pin left for the address is stale.
            forget_host_key(lab.known_hosts, node.ip)
    lab.save(state)
    backend.ensure_network(state)
    # Every VM of the lab, k0s node or not, gets the lab's resolver (and no time sync without egress).
    cmdline = " ".join(w for w in (node_kernel_args(state), extra_cmdline) if w)
    specs = {n.name: boot_spec(lab, n, progress, cmdline, (extra_disks or {}).get(n.name, ()))
             for n in nodes}
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        futures = [pool.submit(backend.create_vm, lab, state, n, specs[n.name]) for n in nodes]
        for future in futures:
            future.result()


def boot_timeout(count: int) -> float:
    cores = os.cpu_count() or 1
    extra = max(0, count - cores)
    return BOOT_TIMEOUT_BASE_S + BOOT_TIMEOUT_PER_EXTRA_VM_S * extra


def console_tail(lab: LabDir, vm: str, lines: int = CONSOLE_TAIL_LINES) -> str:
    path = lab.console_log(vm)
    if not path.is_file():
        return f"(no console log at {path})"
    text = path.read_bytes()[-20000:].decode(errors="replace")
    # Console output carries ANSI colour codes from systemd; they make the tail unreadable.
    clean = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "")
    return "\n".join(clean.strip().splitlines()[-lines:])


def pin_from_guest(lab: LabDir, state: LabState, node: NodeState, backend: VMBackend, ssh: SSHNode) -> None:
    """Pin the node's host key as the guest itself reports it, before any SSH packet is sent;
    a backend without an agent channel pins on first contact instead."""
    try:
        line = backend.guest_host_key(state, node)
    except NoAgentChannel:
        ssh.pin_on_first_contact = True
        return
    # Until sshd has written its key (first boot) the file is missing or, for an instant, partial.
    if line is None or len(line.split()) < 2 or line.split()[0] != HOST_KEY_TYPE:
        raise NotYet(f"{node.name}: the guest agent has no SSH host key to report yet")
    pin_host_key(lab.known_hosts, node.ip, line)


def wait_for_ssh(
    lab: LabDir, state: LabState, nodes: Iterable[NodeState], backend: VMBackend,
    timeout: float | None = None, on_ready: Callable[[NodeState, float], None] | None = None,
) -> dict[str, float]:
    """Wait until root SSH works on every node; returns seconds each took. Fails fast if a VM dies."""
    nodes = list(nodes)
    limit = timeout if timeout is not None else boot_timeout(len(nodes))
    started = time.monotonic()

    def wait_one(node: NodeState) -> float:
        ssh = SSHNode(node.name, node.ip, lab.ssh_key, lab.known_hosts)
        console = lab.console_log(node.name)

        def probe() -> None:
            vm_state = backend.vm_state(state, node)
            if vm_state != "Running":
                raise K0slabError(
                    f"VM {node.name} stopped while booting (state {vm_state})",
                    f"console log: {console}", details=console_tail(lab, node.name),
                )
            if not ssh.pin_on_first_contact and pinned_key(lab.known_hosts, node.ip) is None:
                pin_from_guest(lab, state, node, backend, ssh)
            ssh.probe()

        requirement = Requirement(
            description=f"{node.name} to accept SSH as root on {node.ip}",
            debug_hint=f"the VM may still be booting or stuck; console log: {console}",
            timeout_s=limit,
        )
        try:
            requirement.wait(probe)
        except K0slabError as exc:
            if not exc.details:
                exc.details = console_tail(lab, node.name)
            raise
        finally:
            ssh.close()
        seconds = time.monotonic() - started
        if on_ready:
            on_ready(node, seconds)
        return seconds

    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        futures = {n.name: pool.submit(wait_one, n) for n in nodes}
        return {name: future.result() for name, future in futures.items()}


LAUNCH_QUEUE_S = 600.0

# --- the vm.* verbs -------------------------------------------------------------------------


def launch(lab_name: str, request: VMRequest, *, progress: Progress = print, wait: bool = True,
           backend: VMBackend | None = None) -> NodeState:
    backend = backend or get_backend()
    lab = LabDir(lab_name)
    # Validate against a throwaway state first, so bad input creates nothing.
    existing = lab.load_or_none()
    plan_node(existing or LabState(name=lab.name, subnet_index=1, network="", bridge=""), request)
    # Creating one domain is short, but a fresh libvirtd first probes each QEMU binary, which under
    # TCG on a busy machine takes minutes: launches into one lab queue rather than fail.
    with lab.locked(wait_s=LAUNCH_QUEUE_S, progress=progress):
        state = open_or_create_lab(lab, backend)
        node = plan_node(state, request)
        progress(f"launching {node.name} ({node.arch}, {node.cpus} CPU, {node.memory_mib} MiB) at {node.ip}")
        try:
            create_nodes(lab, state, [node], backend, progress)
        except BaseException:
            _forget(lab, state, node, backend)
            raise
    # Waiting needs no lock: other launches into the same lab can proceed meanwhile.
    if wait:
        seconds = wait_for_ssh(lab, state, [node], backend)[node.name]
        progress(f"{node.name} is up: SSH ready after {seconds:.1f}s")
    return node


def _forget(lab: LabDir, state: LabState, node: NodeState, backend: VMBackend) -> None:
    backend.delete_vm(lab, state, node)
    forget_host_key(lab.known_hosts, node.ip)
    state.nodes.pop(node.name, None)
    if state.nodes:
        lab.save(state)
    else:
        backend.remove_network(state)
        lab.remove()


def load(lab_name: str) -> tuple[LabDir, LabState]:
    lab = LabDir(lab_name)
    return lab, lab.load()


def find_node(state: LabState, name: str) -> NodeState:
    try:
        return state.nodes[name]
    except KeyError:
        known = ", ".join(sorted(state.nodes)) or "none"
        raise K0slabError(f"no VM named {name!r} in lab {state.name!r}", f"its VMs: {known}") from None


def list_vms(lab_name: str, backend: VMBackend | None = None) -> list[dict[str, object]]:
    lab = LabDir(lab_name)
    state = lab.load_or_none()
    if state is None:
        return []
    backend = backend or get_backend(state.provider)
    return [
        {
            "name": n.name, "state": backend.vm_state(state, n), "ipv4": n.ip, "image": n.image,
            "arch": n.arch, "role": n.role,
        }
        for n in sorted(state.nodes.values(), key=lambda n: n.index)
    ]


def info(lab_name: str, name: str, backend: VMBackend | None = None) -> dict[str, object]:
    lab, state = load(lab_name)
    backend = backend or get_backend(state.provider)
    node = find_node(state, name)
    disk = lab.disk(name)
    return {
        "name": node.name, "lab": state.name, "state": backend.vm_state(state, node), "ipv4": node.ip,
        "mac": node.mac, "arch": node.arch, "image": node.image, "cpus": node.cpus,
        "memory": format_size(node.memory_mib << 20), "disk": format_size(node.disk_bytes),
        "disk_used": format_size(disk.stat().st_blocks * 512) if disk.exists() else "-",
        "disk_path": str(disk), "console_log": str(lab.console_log(name)), "role": node.role,
        "ssh": f"ssh -i {lab.ssh_key} root@{node.ip}",
    }


def runner(lab_name: str, name: str) -> SSHNode:
    lab, state = load(lab_name)
    node = find_node(state, name)
    return SSHNode(node.name, node.ip, lab.ssh_key, lab.known_hosts)


def transfer(lab_name: str, source: str, target: str) -> str:
    """Copy host→VM (`./f node1:/tmp/f`) or VM→host (`node1:/tmp/f ./f`)."""
    source_vm, source_path = _split_location(source)
    target_vm, target_path = _split_location(target)
    if (source_vm is None) == (target_vm is None):
        raise K0slabError(
            f"transfer {source!r} -> {target!r} needs exactly one side on a VM",
            "write it as ./file node1:/path or node1:/path ./file",
        )
    if source_vm is None:
        local = Path(source_path)
        if not local.is_file():
            raise K0slabError(f"no such file {source_path!r}", "give an existing file to copy")
        ssh = runner(lab_name, target_vm)
        ssh.put_file(local, target_path, mode=local.stat().st_mode & 0o777)
        return f"{source_path} -> {target_vm}:{target_path}"
    ssh = runner(lab_name, source_vm)
    ssh.get_file(source_path, Path(target_path))
    return f"{source_vm}:{source_path} -> {target_path}"


def _split_location(location: str) -> tuple[str | None, str]:
    match = re.fullmatch(r"([a-z][a-z0-9-]*):(.+)", location, re.DOTALL)
    return (match.group(1), match.group(2)) if match else (None, location)


def stop(lab_name: str, name: str, force: bool = False) -> None:
    lab, state = load(lab_name)
    backend = get_backend(state.provider)
    with lab.locked():
        backend.stop_vm(state, find_node(state, name), force=force)


def start(lab_name: str, name: str, wait: bool = True, progress: Progress = print) -> None:
    lab, state = load(lab_name)
    backend = get_backend(state.provider)
    with lab.locked():
        node = find_node(state, name)
        backend.start_vm(state, node)
        if wait:
            wait_for_ssh(lab, state, [node], backend)
            progress(f"{name} is up")


def delete(lab_name: str, name: str, purge: bool = False, backend: VMBackend | None = None) -> None:
    """Remove the VM completely; its console log stays for post-mortems unless purge.
    Deleting the last VM with purge also removes the lab's network and folder."""
    lab, state = load(lab_name)
    backend = backend or get_backend(state.provider)
    with lab.locked():
        node = find_node(state, name)
        backend.delete_vm(lab, state, node)
        forget_host_key(lab.known_hosts, node.ip)
        state.nodes.pop(name)
        if purge:
            lab.console_log(name).unlink(missing_ok=True)
        if state.nodes:
            lab.save(state)
        elif purge:
            backend.remove_network(state)
            lab.remove()
        else:
            backend.remove_network(state)
            lab.save(state)
