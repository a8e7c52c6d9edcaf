"""Airgap bundles: names per release, the images an archive holds, the completeness check, the disk."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from k0slab.cluster.k0s import airgap
from k0slab.core.errors import K0slabError

NEEDED = [
    "quay.io/k0sproject/kube-router:v2.5.0-iptables1.8.11-0",
    "quay.io/k0sproject/coredns:1.12.2",
    "registry.k8s.io/pause:3.10.1",
]


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as out:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return path


def oci_layout(path: Path, references: list[str]) -> Path:
    """The index of an OCI image layout as `ctr export` writes it (blobs left out: only the index is read)."""
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{i:064x}", "size": 1,
         "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}}
        for i, ref in enumerate(references)
    ]}
    return _tar(path, {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": json.dumps(index).encode()})


def docker_save(path: Path, tags: list[str]) -> Path:
    manifest = [{"Config": "abc.json", "RepoTags": tags, "Layers": ["l/layer.tar"]}]
    return _tar(path, {"manifest.json": json.dumps(manifest).encode(), "abc.json": b"{}"})


@pytest.mark.parametrize(("tag", "arch", "name"), [
    ("v1.35.2+k0s.0", "amd64", "k0s-airgap-bundle-v1.35.2+k0s.0-amd64"),
    ("v1.36.4+k0s.1", "arm64", "k0s-airgap-bundle-v1.36.4+k0s.1-linux-arm64.tar"),
    ("v1.37.0-rc.1+k0s.0", "amd64", "k0s-airgap-bundle-v1.37.0-rc.1+k0s.0-linux-amd64.tar"),
])
def test_bundle_asset_names_follow_the_release(tag: str, arch: str, name: str) -> None:
    assert airgap.bundle_asset_name(tag, arch) == name


@pytest.mark.parametrize(("short", "full"), [
    ("nginx:1.27", "docker.io/library/nginx:1.27"),
    ("busybox", "docker.io/library/busybox:latest"),
    ("k0sproject/foo:1", "docker.io/k0sproject/foo:1"),
    ("localhost:5000/app", "localhost:5000/app:latest"),
    ("registry.k8s.io/pause:3.10.1", "registry.k8s.io/pause:3.10.1"),
    ("quay.io/a/b@sha256:" + "0" * 64, "quay.io/a/b@sha256:" + "0" * 64),
])
def test_references_are_compared_in_full(short: str, full: str) -> None:
    assert airgap.normalize_reference(short) == full


def test_images_of_an_oci_layout_and_of_docker_save(tmp_path: Path) -> None:
    assert airgap.archive_images(oci_layout(tmp_path / "oci.tar", NEEDED)) == set(NEEDED)
    assert airgap.archive_images(docker_save(tmp_path / "d.tar", ["busybox:1.36.1"])) == {
        "docker.io/library/busybox:1.36.1"}


def test_an_archive_without_names_or_not_a_tar_is_refused(tmp_path: Path) -> None:
    with pytest.raises(K0slabError, match="names no image"):
        airgap.archive_images(_tar(tmp_path / "empty.tar", {"x": b"1"}))
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all")
    with pytest.raises(K0slabError, match="is not an image archive"):
        airgap.archive_images(tmp_path / "junk.tar")


def _list_images_binary(tmp_path: Path, images: list[str]) -> Path:
    """A program answering `airgap list-images -c FILE` like k0s, recording the config it was given."""
    script = tmp_path / "k0s"
    printed = "\n".join(images)
    script.write_text(f'#!/bin/sh\n[ "$1 $2 $3" = "airgap list-images -c" ] || exit 2\ncp "$4" {tmp_path}/seen.yaml\n'
                      f"cat <<'EOF'\n{printed}\nEOF\n")
    script.chmod(0o755)
    return script


def test_a_bundle_lacking_an_image_is_one_line_naming_it(tmp_path: Path) -> None:
    binary = _list_images_binary(tmp_path, NEEDED)
    bundle = oci_layout(tmp_path / "partial.tar", NEEDED[:1] + NEEDED[2:])
    with pytest.raises(K0slabError) as info:
        airgap.prepare(tag="v1.36.4+k0s.1", binaries={"amd64": binary}, config_text="spec: {}\n", download=False,
                       local=[bundle], disks_dir=tmp_path, check_complete=True, host_arch="amd64",
                       progress=lambda _: None)
    assert info.value.message == (
        "the airgap bundles for amd64 lack image quay.io/k0sproject/coredns:1.12.2, which k0s needs")
    assert "--airgap-bundle PATH" in info.value.hint
    assert (tmp_path / "seen.yaml").read_text() == "spec: {}\n"  # list-images read the lab's config
    assert not (tmp_path / "airgap-amd64.img").exists()


def test_complete_bundles_land_on_a_disk_that_unpacks_byte_for_byte(tmp_path: Path) -> None:
    binary = _list_images_binary(tmp_path, NEEDED)
    system = oci_layout(tmp_path / "system.tar", NEEDED)
    workload = docker_save(tmp_path / "workload.tar", ["busybox:1.36.1"])
    lines: list[str] = []
    bundles = airgap.prepare(tag="v1.36.4+k0s.1", binaries={"amd64": binary}, config_text="{}", download=False,
                             local=[system, workload], disks_dir=tmp_path, check_complete=True, host_arch="amd64",
                             progress=lines.append)
    bundle = bundles["amd64"]
    assert bundle.sizes == {"system.tar": system.stat().st_size, "workload.tar": workload.stat().st_size}
    assert bundle.disk.stat().st_size % 512 == 0  # a disk is whole sectors
    with tarfile.open(bundle.disk) as disk:
        assert disk.extractfile("system.tar").read() == system.read_bytes()  # type: ignore[union-attr]
        assert disk.extractfile("workload.tar").read() == workload.read_bytes()  # type: ignore[union-attr]
    assert lines == ["    amd64: 2 airgap archive(s), 0 MiB: system.tar, workload.tar"]
    before = bundle.disk.stat().st_mtime_ns
    airgap.prepare(tag="v1.36.4+k0s.1", binaries={"amd64": binary}, config_text="{}", download=False,
                   local=[system, workload], disks_dir=tmp_path, check_complete=True, host_arch="amd64",
                   progress=lines.append)
    assert bundle.disk.stat().st_mtime_ns == before  # unchanged archives: the disk is kept


def test_list_images_that_fails_is_reported(tmp_path: Path) -> None:
    script = tmp_path / "k0s"
    script.write_text("#!/bin/sh\necho 'Error: unknown field \"spec.bogus\"' >&2\nexit 1\n")
    script.chmod(0o755)
    with pytest.raises(K0slabError, match='list-images failed: Error: unknown field "spec.bogus"'):
        airgap.required_images(script, "{}")
    (tmp_path / "arm").write_bytes(b"\x7fELF" + bytes(60))
    (tmp_path / "arm").chmod(0o755)
    with pytest.raises(K0slabError, match="cannot run .* airgap list-images on this host") as info:
        airgap.required_images(tmp_path / "arm", "{}")
    assert "binfmt" in info.value.hint


def test_the_node_step_unpacks_only_when_an_archive_is_missing() -> None:
    class Recorder:
        script = ""

        def run(self, command: str, **_: object) -> object:
            Recorder.script = command

            class Result:
                stdout = "disk\n"
            return Result()

    assert airgap.place_bundles(Recorder(), {"b.tar": 10, "a b.tar": 5}) == "disk"  # type: ignore[arg-type]
    assert "[ \"$(stat -c %s '/var/lib/k0s/images/a b.tar' 2>/dev/null)\" = 5 ]" in Recorder.script
    assert "tar -xf /dev/vdc -C /var/lib/k0s/images" in Recorder.script
