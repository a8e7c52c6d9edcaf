"""lab.backup / lab.restore files (issue 17): what the file carries, and that any damage is refused
before a VM exists."""
from __future__ import annotations

import tarfile

import pytest
from backup_files import K0S_VERSION, backup_file, k0s_archive, lab_state

from k0slab.cluster import backup
from k0slab.core.errors import K0slabError
from k0slab.core.profile import load_profile


def test_the_file_carries_metadata_config_and_the_k0s_archive_without_images(tmp_path):
    path = backup_file(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600  # it holds the CA key and etcd
    restored = backup.read_backup(path, tmp_path / "out")
    assert restored.k0s_version == K0S_VERSION
    assert restored.metadata["lab"] == "old"
    assert restored.metadata["nodes"] == [{"name": "node1", "role": "controller+worker", "arch": "amd64",
                                           "ip": "10.213.7.11"}]
    assert restored.metadata["left_out"] == ["images/bundle.tar"]
    assert restored.subnet_index == 7  # the restored lab takes another subnet: new IPs
    assert (tmp_path / "out" / backup.CONFIG).read_text() == "kind: ClusterConfig\n"
    with tarfile.open(restored.k0s_archive, "r:gz") as archive:
        names = archive.getnames()
    assert "etcd-snapshot.db" in names and "pki/ca.key" in names
    assert "manifests/k0slab/bootstrap-token-abcdef.yaml" in names  # the old lab's token Secret travels along
    assert not any(name.startswith("images") for name in names)
    cert, key = restored.ca()
    assert cert.startswith(b"-----BEGIN CERTIFICATE") and b"PRIVATE KEY" in key


def test_the_restored_profile_is_the_old_one_at_the_backup_version(tmp_path):
    profile = backup.read_backup(backup_file(tmp_path), tmp_path / "out").profile()
    assert profile.k0s_version == K0S_VERSION
    assert [n.name for n in profile.nodes] == [n.name for n in load_profile("default").nodes]


def test_a_pinned_etcd_peer_address_is_dropped_from_the_restored_profile(tmp_path):
    """A pinned old address keeps etcd's old peer URL on the new IP (k0s issue 7876)."""
    pinned = {"spec": {"storage": {"etcd": {"peerAddress": "10.213.7.11"}}}}
    profile = backup.read_backup(backup_file(tmp_path, pinned), tmp_path / "out").profile()
    assert "peerAddress" not in profile.k0s["spec"]["storage"]["etcd"]


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(K0slabError, match="no backup file"):
        backup.read_backup(tmp_path / "nope.tar", tmp_path / "out")


def test_a_truncated_file_is_refused(tmp_path):
    path = backup_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(K0slabError, match="damaged or truncated"):
        backup.read_backup(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_one_altered_byte_is_refused_by_its_checksum(tmp_path):
    path = backup_file(tmp_path)
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as archive:
        member = archive.getmember(backup.K0S_ARCHIVE)
    data[member.offset_data + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(K0slabError, match="k0s_backup.tar.gz does not match its sha256"):
        backup.read_backup(path, tmp_path / "out")


def test_a_tar_that_is_no_k0slab_backup_is_refused(tmp_path):
    path = tmp_path / "other.tar"
    with tarfile.open(path, "w") as archive:
        archive.add(k0s_archive(tmp_path / "k0s.tar.gz"), arcname="k0s.tar.gz")
    with pytest.raises(K0slabError, match="not a complete k0slab backup"):
        backup.read_backup(path, tmp_path / "out")


def test_old_node_objects_are_those_the_new_lab_has_no_vm_for():
    assert backup.stale_nodes(["node1", "node2", "node9"], ["node1", "node2"]) == ["node9"]


def test_default_output_names_the_lab_and_time():
    import datetime as dt
    when = dt.datetime(2026, 12, 1, 21, 5, 7, tzinfo=dt.UTC)
    assert str(backup.default_output(lab_state().name, when)) == "k0slab-backup-old-20261201T210507Z.tar"


class FakeController:
    """Records commands; `k0s backup` leaves one archive, sha256sum answers for it."""

    name = "node1"

    def __init__(self, archives: int = 1) -> None:
        self.commands: list[str] = []
        self.uploads: list[tuple[str, str]] = []
        self.archives = archives

    def run(self, command: str, *, check: bool = True, **_: object):
        from k0slab.vms.remote import CommandResult

        self.commands.append(command)
        out = ""
        if command.startswith("ls "):
            names = (f"k0s_backup_2026-12-01T21_00_0{i}Z.tar.gz" for i in range(self.archives))
            out = " ".join(f"{backup.REMOTE_DIR}/{name}" for name in names)
        elif command.startswith("sha256sum"):
            out = "ab" * 32 + "  file\n"
        return CommandResult(command, 0, out, "")


def test_k0s_backup_runs_with_a_save_path_and_reports_the_archive_and_its_sum():
    node = FakeController()
    remote, digest = backup.run_k0s_backup(node)
    assert remote == f"{backup.REMOTE_DIR}/k0s_backup_2026-12-01T21_00_00Z.tar.gz" and digest == "ab" * 32
    assert f"/usr/local/bin/k0s backup --save-path {backup.REMOTE_DIR}" in node.commands


def test_two_archives_in_the_save_path_are_refused():
    with pytest.raises(K0slabError, match="left 2 archives"):
        backup.run_k0s_backup(FakeController(archives=2))


def test_restore_runs_k0s_restore_with_config_out_then_drops_the_old_token_manifests(tmp_path):
    restored = backup.read_backup(backup_file(tmp_path), tmp_path / "out")
    node = FakeController()
    backup.restore_on_controller(node, restored, lambda local, remote: node.uploads.append((str(local), remote)))
    assert node.uploads == [(str(restored.k0s_archive), backup.REMOTE_RESTORE)]
    restore = next(c for c in node.commands if " restore " in c)
    assert restore == (f"/usr/local/bin/k0s restore --config-out {backup.RESTORED_CONFIG} {backup.REMOTE_RESTORE}")
    assert node.commands.index(restore) < node.commands.index(f"rm -f {backup.REMOTE_RESTORE}")
    assert node.commands[-1] == "rm -rf /var/lib/k0s/manifests/k0slab"
