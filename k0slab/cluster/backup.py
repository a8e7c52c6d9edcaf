"""`lab.backup` and `lab.restore`: a lab's cluster state in one file, and a new lab made from it.

The file is a plain tar of four members:

    k0slab-backup.json   what made the backup: lab, k0s version, profile, nodes and their old IPs
    k0s.yaml             the ClusterConfig the controller ran with
    k0s_backup.tar.gz    `k0s backup`'s own archive: etcd snapshot, pki/, manifests/, helm (no images/)
    SHA256SUMS           sha256 of the three above, checked before a restore makes any VM

`k0s backup` always adds `<data-dir>/images` (k0s `pkg/backup/manager_unix.go`, discoverSteps),
and `k0s restore` skips any path the archive lacks (`pkg/backup/filesystem.go`, Restore), so
k0slab leaves the airgap bundles out of its copy: they are large, and a new lab gets its bundles
the way `lab.up` gives them. What was left out is listed in k0slab-backup.json.

On restore, `k0s restore` runs on the first controller before k0s first starts, with k0slab's
k0s.yaml for the new IP already in /etc/k0s: k0s reads the node config from there, and writes the
archived one to `--config-out` only (`cmd/restore/restore_unix.go`). k0slab never pins
`storage.etcd.peerAddress`, and drops it from a restored profile, since a pinned old address keeps
etcd's old peer URL (k0s issue 7876, k0s `docs/backup.md`).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import shlex
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k0slab.cluster.k0s import bootstrap
from k0slab.cluster.k0s.token import MANIFESTS_DIR
from k0slab.core.errors import K0slabError
from k0slab.core.profile import Profile
from k0slab.core.state import LabState, write_private
from k0slab.vms.remote import Runner

Progress = Callable[[str], None]
FORMAT = 1
METADATA = "k0slab-backup.json"
CONFIG = "k0s.yaml"
K0S_ARCHIVE = "k0s_backup.tar.gz"
SUMS = "SHA256SUMS"
PAYLOAD = (METADATA, CONFIG, K0S_ARCHIVE)
# Left out of k0slab's copy of the k0s archive: the airgap bundles (see the module docstring).
LEFT_OUT = ("images",)
REMOTE_DIR = "/var/tmp/k0slab-backup"
REMOTE_RESTORE = "/var/tmp/k0slab-restore.tar.gz"
RESTORED_CONFIG = "/etc/k0s/k0s.restored.yaml"  # the archived config, for reference; not used by k0s


@dataclass(frozen=True)
class Backup:
    """A verified k0slab backup, unpacked into `folder`."""

    folder: Path
    metadata: dict[str, Any]
    sha256: str  # of the whole file: a restored lab remembers which archive made it

    @property
    def k0s_archive(self) -> Path:
        return self.folder / K0S_ARCHIVE

    @property
    def subnet_index(self) -> int:
        return self.metadata["subnet_index"]

    @property
    def k0s_version(self) -> str:
        return self.metadata["k0s_version"]

    def profile(self) -> Profile:
        """The old lab's profile, minus a pinned etcd peer address (k0s issue 7876)."""
        profile = Profile.model_validate(self.metadata["profile"])
        etcd = profile.k0s.get("spec", {}).get("storage", {}).get("etcd", {})
        etcd.pop("peerAddress", None)
        return profile.model_copy(update={"k0s_version": self.k0s_version})

    def ca(self) -> tuple[bytes, bytes]:
        """The cluster CA from the archive's pki/: the new lab's kubeconfigs and join tokens use it."""
        with tarfile.open(self.k0s_archive, "r:gz") as archive:
            files = {}
            for name in ("ca.crt", "ca.key"):
                member = _find(archive, f"pki/{name}")
                if member is None:
                    raise K0slabError(f"the k0s archive in {self.folder} has no pki/{name}",
                                      "make the backup again with invoke lab.backup")
                files[name] = archive.extractfile(member).read()
        return files["ca.crt"], files["ca.key"]


# --- backup --------------------------------------------------------------------------------------

def default_output(lab: str, now: dt.datetime | None = None) -> Path:
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path(f"k0slab-backup-{lab}-{stamp}.tar")


def run_k0s_backup(controller: Runner) -> tuple[str, str]:
    """`k0s backup --save-path DIR` on the controller (k0s must run there, k0s `docs/backup.md`);
    returns the remote path of the archive and its sha256 computed on the node."""
    controller.run(f"rm -rf {REMOTE_DIR} && mkdir -p -m 700 {REMOTE_DIR}")
    controller.run(f"{bootstrap.K0S_BINARY} backup --save-path {REMOTE_DIR}", timeout=600)
    listed = controller.run(f"ls {REMOTE_DIR}/k0s_backup_*.tar.gz").stdout.split()
    if len(listed) != 1:
        raise K0slabError(f"{controller.name}: k0s backup left {len(listed)} archives in {REMOTE_DIR}",
                          f"look with: invoke lab.ssh {controller.name} -- ls -l {REMOTE_DIR}")
    remote = listed[0]
    return remote, controller.run(f"sha256sum {shlex.quote(remote)}").stdout.split()[0]


def write_backup(output: Path, *, k0s_archive: Path, config_text: str, state: LabState, profile: Profile,
                 progress: Progress) -> dict[str, Any]:
    """The k0slab backup file from a fetched k0s archive; returns its metadata."""
    trimmed, left_out = _without(k0s_archive, LEFT_OUT)
    metadata = {
        "format": FORMAT,
        "lab": state.name,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "k0s_version": state.k0s_version,
        "cni": state.cni,
        "subnet_index": state.subnet_index,
        "profile": json.loads(profile.model_dump_json()),
        "nodes": [{"name": n.name, "role": n.role, "arch": n.arch, "ip": n.ip}
                  for n in sorted(state.nodes.values(), key=lambda n: n.index)],
        "left_out": left_out,
    }
    members = {
        METADATA: json.dumps(metadata, indent=2).encode(),
        CONFIG: config_text.encode(),
        K0S_ARCHIVE: trimmed,
    }
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in members.items())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in {**members, SUMS: sums.encode()}.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(dt.datetime.now(dt.UTC).timestamp())
            archive.addfile(info, io.BytesIO(data))
    write_private(output, buffer.getvalue())  # it holds the cluster CA key and etcd: 0600
    if left_out:
        progress(f"    left out of the backup: {len(left_out)} files under images/ (airgap bundles)")
    return metadata


def _without(k0s_archive: Path, prefixes: tuple[str, ...]) -> tuple[bytes, list[str]]:
    """The k0s archive with the members under `prefixes` removed, and their names."""
    buffer, left_out = io.BytesIO(), []
    with tarfile.open(k0s_archive, "r:gz") as source, tarfile.open(fileobj=buffer, mode="w:gz") as target:
        for member in source:
            top = member.name.removeprefix("./").split("/", 1)[0]
            if top in prefixes:
                left_out.append(member.name)
                continue
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
    return buffer.getvalue(), left_out


# --- restore -------------------------------------------------------------------------------------

def read_backup(path: Path, folder: Path) -> Backup:
    """Verify a k0slab backup against its SHA256SUMS and unpack it into `folder`; any damage
    (missing file, truncated, altered byte) is refused here, before a VM exists."""
    if not path.is_file():
        raise K0slabError(f"no backup file {path}", "give the file lab.backup wrote (invoke lab.backup --output FILE)")
    hint = "the file is damaged or truncated: copy it again, or take a new backup with invoke lab.backup"
    try:
        with tarfile.open(path, "r:") as archive:
            data = {}
            for member in archive:
                if member.name in (*PAYLOAD, SUMS) and member.isfile():
                    data[member.name] = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise K0slabError(f"{path} is not a readable k0slab backup ({error})", hint) from None
    missing = [name for name in (*PAYLOAD, SUMS) if name not in data]
    if missing:
        raise K0slabError(f"{path} is not a complete k0slab backup: {', '.join(missing)} missing", hint)
    expected = dict(reversed(line.split(maxsplit=1)) for line in data[SUMS].decode(errors="replace").splitlines()
                    if len(line.split()) == 2)
    for name in PAYLOAD:
        if expected.get(name) != hashlib.sha256(data[name]).hexdigest():
            raise K0slabError(f"{path}: {name} does not match its sha256 in {SUMS}", hint)
    metadata = json.loads(data[METADATA])
    if metadata.get("format") != FORMAT:
        raise K0slabError(f"{path} is a k0slab backup of format {metadata.get('format')}, not {FORMAT}",
                          "restore it with the k0slab version that made it")
    folder.mkdir(parents=True, exist_ok=True)
    for name in PAYLOAD:
        write_private(folder / name, data[name])
    return Backup(folder=folder, metadata=metadata, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def restored_already(controller: Runner) -> bool:
    """k0s restore fills the data dir's pki/: once it is there, the restore is done (or k0s ran)."""
    return controller.run(f"test -e {bootstrap.PKI_DIR}/ca.crt", check=False).ok


def restore_on_controller(controller: Runner, backup: Backup, put_file: Callable[[Path, str], None]) -> None:
    """`k0s restore` before the controller's first start. k0s reads the node config from its
    default /etc/k0s/k0s.yaml (k0slab's, for the new IP) and writes the archived one to --config-out.
    The old lab's join-token manifests are removed: the new lab makes its own."""
    put_file(backup.k0s_archive, REMOTE_RESTORE)
    try:
        controller.run(
            f"{bootstrap.K0S_BINARY} restore --config-out {RESTORED_CONFIG} {REMOTE_RESTORE}",
            timeout=600,
        )
    finally:
        controller.run(f"rm -f {REMOTE_RESTORE}", check=False)
    controller.run(f"rm -rf {MANIFESTS_DIR}")


def stale_nodes(listed: list[str], lab_nodes: list[str]) -> list[str]:
    """Node objects the restored etcd holds for nodes the new lab does not have."""
    return sorted(set(listed) - set(lab_nodes))


def _find(archive: tarfile.TarFile, name: str) -> tarfile.TarInfo | None:
    with contextlib.suppress(KeyError):
        return archive.getmember(name)
    with contextlib.suppress(KeyError):
        return archive.getmember(f"./{name}")
    return None
