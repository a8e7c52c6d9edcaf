"""Airgap image bundles: nodes without registry access start k0s's pods from local archives.

k0s imports every file in `/var/lib/k0s/images/` into containerd before the kubelet starts
(k0s-facts §9, `pkg/component/worker/`, `docs/airgap-install.md`). k0slab gets the archives from
the release (`--airgap`: k0s's own bundle per arch, verified like the binary) and from the user
(`--airgap-bundle PATH`: OCI image layout tars, `docker save` and `ctr export` archives), checks
before any VM exists that together they hold every image `k0s airgap list-images` names for the
lab's config, and carries them to every node that runs a kubelet on a read-only disk: one tar
holding the archives, unpacked into the images folder before k0s starts (k0s owns and watches that
folder, so nothing is mounted over it).
"""
from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from k0slab.core.state import write_private
from k0slab.cluster.k0s import release
from k0slab.core.errors import K0slabError
from k0slab.vms.image import Progress
from k0slab.vms.remote import Runner

IMAGES_DIR = "/var/lib/k0s/images"  # k0s-facts §3
# The second read-only disk of a kubelet node, after the binary's /dev/vdb (see lab._create_vms).
BUNDLE_DISK_DEVICE = "/dev/vdc"
# Asset names changed with v1.36 (k0s-facts §8).
_LINUX_TAR_FROM = (1, 36)
_LIST_IMAGES_TIMEOUT_S = 60
# The image-name annotations of an OCI index: containerd's full reference, then the OCI one
# (which `ctr export` and skopeo may set to a full reference or to just the tag).
_CONTAINERD_NAME = "io.containerd.image.name"
_OCI_REF_NAME = "org.opencontainers.image.ref.name"
_DOCKER_HUB = "docker.io"


def bundle_asset_name(tag: str, arch: str) -> str:
    """The release's airgap bundle for arch: `k0s-airgap-bundle-<tag>-<arch>` up to v1.35,
    `k0s-airgap-bundle-<tag>-linux-<arch>.tar` from v1.36."""
    major, minor = (int(part) for part in tag.lstrip("v").split(".")[:2])
    if (major, minor) >= _LINUX_TAR_FROM:
        return f"k0s-airgap-bundle-{tag}-linux-{arch}.tar"
    return f"k0s-airgap-bundle-{tag}-{arch}"


def fetch_bundle(tag: str, arch: str, progress: Progress = print) -> Path:
    """The release's verified airgap bundle for arch, cached next to the binary."""
    return release.fetch_asset(tag, bundle_asset_name(tag, arch), progress)


def normalize_reference(reference: str) -> str:
    """The full form of an image reference, as k0s prints them: `nginx:1.27` is
    `docker.io/library/nginx:1.27`; a reference without tag or digest means `:latest`."""
    name, _, digest = reference.partition("@")
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = f"{_DOCKER_HUB}/{name}" if rest else f"{_DOCKER_HUB}/library/{name}"
    if not digest and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


def archive_images(path: Path) -> set[str]:
    """The image references an archive holds, normalized: from an OCI layout's index.json
    annotations and from a `docker save` manifest.json's RepoTags (docker writes both)."""
    try:
        with tarfile.open(path) as archive:
            members = {m.name.removeprefix("./"): m for m in archive.getmembers() if m.isfile()}
            found: set[str] = set()
            if "index.json" in members:
                index = json.load(archive.extractfile(members["index.json"]))  # type: ignore[arg-type]
                for manifest in index.get("manifests", []):
                    annotations = manifest.get("annotations", {})
                    name = annotations.get(_CONTAINERD_NAME) or annotations.get(_OCI_REF_NAME, "")
                    # A bare tag ("1.27") names no image; a reference has a repository or a tag.
                    if "/" in name or ":" in name:
                        found.add(normalize_reference(name))
            if "manifest.json" in members:
                for entry in json.load(archive.extractfile(members["manifest.json"])):  # type: ignore[arg-type]
                    found.update(normalize_reference(tag) for tag in entry.get("RepoTags") or [])
    except (tarfile.TarError, OSError, json.JSONDecodeError, AttributeError) as exc:
        raise K0slabError(
            f"airgap bundle {path} is not an image archive: {exc}",
            "give an OCI image layout tar, or the output of docker save / ctr export",
        ) from None
    if not found:
        raise K0slabError(
            f"airgap bundle {path} names no image (no index.json annotations, no manifest.json RepoTags)",
            "export it with its names: docker save IMAGE:TAG, or ctr images export OUT IMAGE:TAG",
        )
    return found


def required_images(binary: Path, config_text: str) -> list[str]:
    """What `k0s airgap list-images -c <the lab's k0s.yaml>` prints (`cmd/airgap/listimages.go`),
    run on the host. A binary of another arch runs where binfmt_misc has a qemu-user handler."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="k0slab-airgap-") as config:
        config.write(config_text)
        config.flush()
        command = [str(binary), "airgap", "list-images", "-c", config.name]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=_LIST_IMAGES_TIMEOUT_S)
        except OSError as exc:
            raise K0slabError(
                f"cannot run {binary} airgap list-images on this host: {exc.strerror}",
                "a binary of another arch needs qemu-user with binfmt_misc (apt-get install qemu-user-binfmt)",
            ) from None
        except subprocess.TimeoutExpired:
            raise K0slabError(f"{shlex.join(command)} did not finish in {_LIST_IMAGES_TIMEOUT_S}s",
                              "check that the binary runs on this host") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        raise K0slabError(f"k0s airgap list-images failed: {last}", "check the profile's k0s section")
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def missing_images(required: list[str], provided: set[str]) -> list[str]:
    return [image for image in required if normalize_reference(image) not in provided]


@dataclass(frozen=True)
class BundleSet:
    """The archives of one arch and the disk that carries them."""

    archives: tuple[Path, ...]
    disk: Path
    sizes: dict[str, int]  # archive file name -> size, what a node checks before unpacking


def check_archive_names(archives: list[Path]) -> None:
    names = [a.name for a in archives]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise K0slabError(f"two airgap bundles are named {twice[0]}: they would overwrite each other on the nodes",
                          "rename one of them")


def write_bundle_disk(archives: list[Path], disk: Path) -> BundleSet:
    """A raw disk that is a tar of the archives (tar pads to 512-byte blocks, as a disk needs);
    rewritten only when the archives changed."""
    check_archive_names(archives)
    sizes = {a.name: a.stat().st_size for a in archives}
    stamp = hashlib.sha256(json.dumps(
        sorted((str(a.resolve()), a.stat().st_size, a.stat().st_mtime_ns) for a in archives)).encode()).hexdigest()
    record = disk.with_suffix(".stamp")
    if not (disk.is_file() and record.is_file() and record.read_text() == stamp):
        tmp = disk.with_suffix(".tmp")
        with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as out:
            for archive in archives:
                out.add(archive, arcname=archive.name, recursive=False)
        # Root only, like the binary disk: libvirt lends it to QEMU's user while a domain uses it
        # (the Vagrant backend hands it over itself, see vagrant_backend.give_to_qemu).
        tmp.chmod(0o600)
        tmp.replace(disk)
        write_private(record, stamp)
    return BundleSet(tuple(archives), disk, sizes)


def prepare(
    *, tag: str, binaries: dict[str, Path], config_text: str, download: bool, local: list[Path],
    disks_dir: Path, check_complete: bool, host_arch: str, progress: Progress,
) -> dict[str, BundleSet]:
    """Per arch of the lab: the release's bundle (when `download`) plus the local archives,
    checked to hold every image the version needs (when `check_complete`), on a disk."""
    archives = {arch: ([fetch_bundle(tag, arch, progress)] if download else []) + local for arch in binaries}
    if check_complete:
        # The host runs one binary; the list is the same for every arch (multi-arch references).
        runner = binaries.get(host_arch) or next(iter(binaries.values()))
        required = required_images(runner, config_text)
        for arch, files in sorted(archives.items()):
            provided = set().union(*(archive_images(f) for f in files)) if files else set()
            missing = missing_images(required, provided)
            if missing:
                more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
                raise K0slabError(
                    f"the airgap bundles for {arch} lack image {missing[0]}{more}, which k0s needs",
                    "add an archive holding it with --airgap-bundle PATH, or use --airgap for the release's bundle",
                )
    bundles = {}
    for arch, files in sorted(archives.items()):
        bundles[arch] = write_bundle_disk(files, disks_dir / f"airgap-{arch}.img")
        total = sum(bundles[arch].sizes.values())
        progress(f"    {arch}: {len(files)} airgap archive(s), {total >> 20} MiB: {', '.join(f.name for f in files)}")
    return bundles


def place_bundles(node: Runner, sizes: dict[str, int]) -> str:
    """Unpack the bundle disk into k0s's images folder before k0s starts; 'current' when every
    archive is already there at its size, else 'disk'."""
    checks = " && ".join(
        f"[ \"$(stat -c %s {shlex.quote(f'{IMAGES_DIR}/{name}')} 2>/dev/null)\" = {size} ]"
        for name, size in sorted(sizes.items())
    )
    script = f"""
set -e
if {checks}; then echo current; exit 0; fi
if [ ! -b {BUNDLE_DISK_DEVICE} ]; then
  echo "no airgap bundle disk at {BUNDLE_DISK_DEVICE}: this VM was made without bundles" >&2; exit 1
fi
mkdir -p {IMAGES_DIR}
tar -xf {BUNDLE_DISK_DEVICE} -C {IMAGES_DIR} --no-same-owner
echo disk
"""
    return node.run(script, timeout=600).stdout.strip()
