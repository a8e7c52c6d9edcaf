"""k0slab backup files for tests that have no cluster: a k0s archive laid out as `k0s backup`
writes it (paths relative to the data dir, k0s `pkg/backup/manager_unix.go`) wrapped by
k0slab's own writer."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

from k0slab.cluster import backup
from k0slab.cluster import pki
from k0slab.core.profile import load_profile
from k0slab.core.state import LabState, NodeState

K0S_VERSION = "v1.33.4+k0s.0"


def k0s_archive(path: Path, *, with_images: bool = True) -> Path:
    cert, key = pki.create_ca()
    files = {
        "etcd-snapshot.db": b"etcd snapshot bytes",
        "pki/ca.crt": cert,
        "pki/ca.key": key,
        "manifests/k0slab/bootstrap-token-abcdef.yaml": b"kind: Secret\n",
    }
    if with_images:
        files["images/bundle.tar"] = b"\0" * 4096
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def lab_state(name: str = "old") -> LabState:
    node = NodeState(name="node1", index=11, arch="amd64", cpus=2, memory_mib=2048, disk_bytes=5 << 30,
                     image="debian-12", mac="52:54:00:d5:07:0b", ip="10.213.7.11", role="controller+worker")
    return LabState(name=name, subnet_index=7, network=f"k0slab-{name}", bridge="k0slab7", profile="default",
                    k0s_version=K0S_VERSION, nodes={"node1": node})


def backup_file(folder: Path, profile_k0s: dict | None = None) -> Path:
    """A complete, valid lab.backup file in folder."""
    profile = load_profile("default")
    if profile_k0s is not None:
        profile = profile.model_copy(update={"k0s": profile_k0s})
    output = folder / "lab.backup.tar"
    backup.write_backup(output, k0s_archive=k0s_archive(folder / "k0s.tar.gz"), config_text="kind: ClusterConfig\n",
                        state=lab_state(), profile=profile, progress=lambda _m: None)
    (folder / "k0s.tar.gz").unlink()
    return output
