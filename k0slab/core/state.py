"""A lab's durable state: one 0700 folder per lab, a state file written atomically, and a lock.

Everything k0slab creates for a lab is recorded here before it is created, so that `lab.down`
and `lab.prune` can always find it, even after a crash in the middle of `lab.up`.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from k0slab.core import cancel
from k0slab.core.errors import K0slabError
from k0slab.core.paths import data_home, labs_dir, vm_disks_dir

STATE_VERSION = 1
LOCK_WAIT_S = 30.0
_LAB_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?")


class NodeState(BaseModel):
    name: str
    index: int  # host number in the lab subnet, stable for the node's life
    arch: str
    cpus: int
    memory_mib: int
    disk_bytes: int
    image: str
    mac: str
    ip: str
    role: str = "none"  # none (plain vm.launch), controller, controller+worker, worker
    accel: str | None = None  # "kvm" or "tcg", as chosen at boot: sets how long a stall may last


class SnapshotRecord(BaseModel):
    """One lab.snapshot: every VM's memory and disk at one point, and what the lab was then."""

    name: str
    created: str  # ISO 8601, UTC
    profile: str | None
    k0s_version: str | None
    # node name -> what must still be true of it for a revert to make sense (role, arch, size, MAC)
    nodes: dict[str, str]
    added_bytes: dict[str, int]  # node name -> what the snapshot added to the node's disk


class RevertRecord(BaseModel):
    snapshot: str
    k0s_version: str | None
    at: str  # ISO 8601, UTC


class LabState(BaseModel):
    version: int = STATE_VERSION
    name: str
    subnet_index: int
    network: str
    bridge: str
    profile: str | None = None
    profile_spec: dict | None = None  # the effective profile (flags applied) lab.up last ran with
    provider: str = "libvirt"
    box: str | None = None  # a public Vagrant box instead of k0slab's own (provider vagrant)
    k0s_version: str | None = None
    # Set while lab.upgrade moves the nodes to this version; cleared when every node runs it.
    upgrade_target: str | None = None
    # sha256 of the lab.backup file this lab was restored from: lab.restore may resume it, no other.
    restored_from: str | None = None
    cni: str = "kuberouter"
    egress: str = "nat"  # "nat" or "none": whether the lab network forwards to the outside
    join_token_id: str | None = None
    nodes: dict[str, NodeState] = Field(default_factory=dict)
    # Set when lab.up finished: a re-run with the same request only checks readiness.
    up_fingerprint: str | None = None
    snapshots: dict[str, SnapshotRecord] = Field(default_factory=dict)
    last_revert: RevertRecord | None = None


def subnet_prefix(index: int) -> str:
    return f"10.213.{index}"


def validate_lab_name(name: str) -> str:
    if not _LAB_NAME_RE.fullmatch(name or ""):
        raise K0slabError(
            f"lab name {name!r} is not valid",
            "use 1-20 lowercase letters, digits and '-', starting and ending with a letter or digit",
        )
    return name


def write_private(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Write a file atomically (temp file + rename) with `mode`: a crash leaves old or new, never half."""
    payload = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def private_opener(path: str, flags: int) -> int:
    """An `open(..., opener=)` that creates files 0600 (lock files name lab holders' pids)."""
    return os.open(path, flags, 0o600)


def private_folder(path: Path, mode: int) -> None:
    """Create path (and parents) and give it mode: k0slab's own folders are never world-readable."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)


class LabDir:
    """The files of one lab. The folder is 0700 because it holds keys, the CA and kubeconfigs."""

    def __init__(self, name: str) -> None:
        self.name = validate_lab_name(name)
        self.path = labs_dir() / name

    # --- paths -----------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def ssh_key(self) -> Path:
        return self.path / "id_ed25519"

    @property
    def kubeconfig(self) -> Path:
        return self.path / "kubeconfig"

    @property
    def known_hosts(self) -> Path:
        """The nodes' pinned SSH host keys (k0slab.vms.ssh), read by paramiko and OpenSSH alike."""
        return self.path / "known_hosts"

    @property
    def pki_dir(self) -> Path:
        return self.path / "pki"

    @property
    def users_dir(self) -> Path:
        return self.path / "users"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def disks_dir(self) -> Path:
        return vm_disks_dir() / self.name

    def console_log(self, vm: str) -> Path:
        return self.logs_dir / f"{vm}.console.log"

    def disk(self, vm: str) -> Path:
        return self.disks_dir / f"{vm}.qcow2"

    # --- lifecycle ---------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.state_file.is_file()

    def create(self) -> None:
        private_folder(data_home(), 0o711)
        private_folder(labs_dir(), 0o700)
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path.chmod(0o700)
        private_folder(self.logs_dir, 0o700)
        # QEMU's user must reach the overlays (each 0600, chowned to it by libvirt while the VM
        # runs); listing the folders is not needed, so nobody else learns even the file names.
        private_folder(vm_disks_dir(), 0o711)
        private_folder(self.disks_dir, 0o711)

    @property
    def lock_file(self) -> Path:
        # Outside the lab folder, so that taking the lock for a command that then fails on bad
        # input creates no lab folder.
        return data_home() / "locks" / f"{self.name}.lock"

    def remove(self) -> None:
        shutil.rmtree(self.disks_dir, ignore_errors=True)
        shutil.rmtree(self.path, ignore_errors=True)
        self.lock_file.unlink(missing_ok=True)

    def load(self) -> LabState:
        if not self.state_file.is_file():
            raise K0slabError(
                f"lab {self.name!r} does not exist", "create it with: invoke lab.up (or vm.launch)"
            )
        text = self.state_file.read_text()
        try:
            return LabState.model_validate(json.loads(text))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise K0slabError(
                f"state file {self.state_file} is corrupt ({str(exc).splitlines()[0]})",
                "inspect or remove it, then run: invoke lab.prune (removes what no valid lab owns)",
            ) from None

    def load_or_none(self) -> LabState | None:
        return self.load() if self.exists() else None

    def save(self, state: LabState) -> None:
        write_private(self.state_file, state.model_dump_json(indent=2))

    @contextlib.contextmanager
    def locked(self, wait_s: float = LOCK_WAIT_S, progress: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the lab's lock: two commands on one lab would race on libvirt and the state file.
        Short operations (a vm.launch creating its domain) queue for up to wait_s, saying so once;
        a holder that takes longer is named."""
        # Lab names are no secret (QEMU's command line shows them), but nobody else needs the list.
        private_folder(data_home(), 0o711)
        private_folder(self.lock_file.parent, 0o700)
        with open(self.lock_file, "a+", opener=private_opener) as handle:
            deadline = time.monotonic() + wait_s
            announced = False
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    if time.monotonic() >= deadline:
                        raise K0slabError(
                            f"lab {self.name!r} is busy: another k0slab command (pid {holder}) is working on it",
                            "wait for it to finish, or stop it",
                        ) from None
                    if progress and not announced:
                        progress(f"lab {self.name} is busy (pid {holder}): waiting up to {wait_s:.0f}s for it")
                        announced = True
                    cancel.sleep(0.2)
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def all_labs() -> list[LabDir]:
    root = labs_dir()
    if not root.is_dir():
        return []
    return [LabDir(p.name) for p in sorted(root.iterdir()) if p.is_dir() and _LAB_NAME_RE.fullmatch(p.name)]
