"""VM images: recipes in images/*.yaml, built offline from a Debian mirror and cached by content.

A build is mmdebstrap into a directory, a few customisations, `mkfs.ext4 -d` (no loop mounts),
and a qcow2 conversion. The kernel and initrd are copied out for direct kernel boot. The cache
key hashes the recipe, the arch and this builder's customisation files, so any change rebuilds
and an unchanged recipe is reused in well under a second.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import ipaddress
import os
import re
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from k0slab.vms import arch as archmod
from k0slab.core.checksums import checksum_for
from k0slab.core.errors import K0slabError
from k0slab.core.paths import GUEST_FILES_DIR, IMAGES_DIR, cache_home, config_home, find_yaml, yaml_names
from k0slab.core.proc import require_tool, run
from k0slab.core.units import format_size, parse_size

BUILDER_VERSION = "3"
Progress = Callable[[str], None]
DEFAULT_RECIPE = "debian-12"
# Image and recipe names become cache folder names: no '/', no '..', nothing a path could escape with.
_IMAGE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9.-]{0,39}")


def validate_image_name(name: str, what: str = "image") -> str:
    if not _IMAGE_NAME_RE.fullmatch(name or "") or ".." in name:
        raise K0slabError(f"{what} name {name!r} is not valid",
                          "use up to 40 lowercase letters, digits, '.' and '-', starting with a letter or digit")
    return name


class ImageRecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    distro: str = "debian"
    suite: str
    mirror: str
    # More apt sources for the image's sources.list (one-line "deb URI SUITE COMPONENTS" form):
    # security and point-release updates, so that a node with egress installs current packages.
    extra_sources: list[str] = Field(default_factory=list)
    architectures: list[str]
    kernel: str
    disk_size: str = "3G"
    user: str = "root"
    packages: list[str] = Field(default_factory=list)
    initramfs_modules: list[str] = Field(default_factory=list)
    masked_units: list[str] = Field(default_factory=list)

    def cache_key(self, arch: str) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps(self.model_dump(), sort_keys=True).encode())
        digest.update(arch.encode())
        digest.update(BUILDER_VERSION.encode())
        for guest_file in sorted(GUEST_FILES_DIR.iterdir()):
            digest.update(guest_file.name.encode())
            digest.update(guest_file.read_bytes())
        return digest.hexdigest()[:16]


class Image(BaseModel):
    """A built (or pulled) image in the cache."""

    name: str
    arch: str
    source: str
    key: str
    path: Path
    built_at: str
    build_seconds: float
    kernel_cmdline: str = ""

    @property
    def disk(self) -> Path:
        return self.path / "base.qcow2"

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.path / "initrd.img"

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    def virtual_size(self) -> int:
        info = json.loads(run(["qemu-img", "info", "--output=json", self.disk], what="qemu-img info"))
        return int(info["virtual-size"])


def images_cache() -> Path:
    return cache_home() / "images"


def available_recipes() -> list[str]:
    return yaml_names(IMAGES_DIR)


def load_recipe(name: str) -> ImageRecipe:
    path = find_yaml(IMAGES_DIR, name) if _IMAGE_NAME_RE.fullmatch(name or "") else None
    if path is None:
        raise K0slabError(
            f"unknown image {name!r}",
            f"choose one of: {', '.join(available_recipes())}, or add {name}.yaml to {config_home() / 'images'}",
        )
    try:
        return ImageRecipe.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise K0slabError(f"image recipe {path}: field {field!r}: {first['msg']}") from None


def _image_dir(recipe: ImageRecipe, arch: str) -> Path:
    return images_cache() / f"{recipe.name}-{arch}-{recipe.cache_key(arch)}"


def _read_image(path: Path) -> Image | None:
    meta = path / "image.json"
    if not meta.is_file():
        return None
    try:
        return Image.model_validate({**json.loads(meta.read_text()), "path": path})
    except (ValueError, TypeError) as exc:  # json's and pydantic's errors are both ValueErrors
        raise K0slabError(f"image metadata {meta} is corrupt ({str(exc).splitlines()[0]})",
                          f"remove the folder {path} and build or pull the image again") from None


def find_image(name: str, arch: str) -> Image | None:
    """The cached image for the current recipe, if it was built."""
    recipe = load_recipe(name)
    archmod.arch_settings(arch)
    return _read_image(_image_dir(recipe, arch))


def require_image(name: str, arch: str) -> Image:
    found = find_image(name, arch)
    if found is None:
        raise K0slabError(
            f"image {name!r} for {arch} is not built", f"run: invoke image.build --image {name} --arch {arch}"
        )
    return found


def list_images() -> list[Image]:
    root = images_cache()
    if not root.is_dir():
        return []
    found = (_read_image(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith("."))
    return [image for image in found if image is not None]


def ensure_binfmt(arch: str) -> None:
    """Foreign-arch package scripts run under qemu-user through binfmt_misc."""
    settings = archmod.arch_settings(arch)
    if arch == archmod.host_arch():
        return
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], what="mounting binfmt_misc")
    if not (binfmt / settings.qemu_user_binfmt).exists():
        require_tool("update-binfmts", "binfmt-support qemu-user-static")
        run(["update-binfmts", "--enable", settings.qemu_user_binfmt], what="enabling qemu-user binfmt")


def build(name: str, arch: str, *, force: bool = False, progress: Progress = print) -> Image:
    """Build the image (or return the cached one). Interrupted builds leave nothing behind."""
    recipe = load_recipe(name)
    archmod.arch_settings(arch)
    if arch not in recipe.architectures:
        raise K0slabError(
            f"image {name!r} has no {arch} variant", f"its recipe lists: {', '.join(recipe.architectures)}"
        )
    final = _image_dir(recipe, arch)
    cached = _read_image(final)
    if cached is not None and not force:
        return cached
    if os.geteuid() != 0:
        raise K0slabError("building an image needs root (mmdebstrap --mode=root)", "run it with sudo")
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("qemu-img", "qemu-utils"), ("mkfs.ext4", "e2fsprogs")):
        require_tool(tool, package)
    ensure_binfmt(arch)
    images_cache().mkdir(parents=True, exist_ok=True)
    _remove_stale_builds()
    work = images_cache() / f".build-{final.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    started = time.monotonic()
    log = work / "build.log"
    reporter = _BuildReporter(work, log, progress, started)
    try:
        rootfs = work / "rootfs"
        reporter.stage(f"mmdebstrap {recipe.suite} {arch}", f" (log: {log})")
        _mmdebstrap(recipe, arch, rootfs, log, reporter.beat)
        reporter.stage("customising the root filesystem")
        _customise(recipe, rootfs, log)
        shutil.copyfile(_single(rootfs / "boot", "vmlinuz-*"), work / "vmlinuz")
        shutil.copyfile(_single(rootfs / "boot", "initrd.img-*"), work / "initrd.img")
        reporter.stage("mkfs.ext4 -d and qemu-img convert")
        raw = work / "base.raw"
        with open(raw, "wb") as handle:
            handle.truncate(parse_size(recipe.disk_size))
        run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", rootfs, raw], what="mkfs.ext4", log=log,
            heartbeat=reporter.beat)
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, work / "base.qcow2"],
            what="qemu-img convert", log=log, heartbeat=reporter.beat)
        raw.unlink()
        shutil.rmtree(rootfs)
        image = Image(
            name=recipe.name,
            arch=arch,
            source=f"built from {recipe.mirror} {recipe.suite}",
            key=recipe.cache_key(arch),
            path=final,
            built_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            build_seconds=round(time.monotonic() - started, 1),
        )
        return _publish(work, image)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


class _BuildReporter:
    """Progress lines while a build step runs: stage, bytes in the build folder, elapsed time and the
    step's last log line (mmdebstrap names what it is doing: downloading, extracting, installing)."""

    def __init__(self, work: Path, log: Path, progress: Progress, started: float) -> None:
        self.work, self.log, self.progress, self.started = work, log, progress, started
        self.current = ""

    def stage(self, name: str, detail: str = "") -> None:
        self.current = name
        self.progress(name + detail)

    def beat(self) -> None:
        written = _bytes_on_disk(self.work)
        self.progress(f"{self.current}: {format_size(written)} on disk, {time.monotonic() - self.started:.0f}s "
                      f"elapsed; {_last_line(self.log)}")


def _bytes_on_disk(folder: Path) -> int:
    """Allocated bytes under folder, while a build step is still adding and removing files there."""
    total = 0
    for parent, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(parent, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def _last_line(log: Path) -> str:
    with open(log, "rb") as handle:
        handle.seek(max(0, log.stat().st_size - 4096))
        lines = handle.read().decode(errors="replace").strip().splitlines()
    return lines[-1][:160] if lines else "(no output yet)"


def _publish(work: Path, image: Image) -> Image:
    """Record the image and move its finished work folder into place in one rename."""
    (work / "image.json").write_text(image.model_dump_json(exclude={"path"}, indent=2))
    # Readable by the unprivileged QEMU that libvirt runs.
    for item in [work, *work.iterdir()]:
        item.chmod(0o755 if item.is_dir() else 0o644)
    shutil.rmtree(image.path, ignore_errors=True)
    work.rename(image.path)
    return image


def _remove_stale_builds() -> None:
    """A build killed hard leaves its work dir; remove those whose builder process is gone."""
    for work in images_cache().glob(".build-*"):
        pid = work.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(work, ignore_errors=True)


def _single(folder: Path, pattern: str) -> Path:
    matches = sorted(folder.glob(pattern))
    if not matches:
        raise K0slabError(f"no {pattern} in {folder}", "the kernel package did not install")
    return matches[-1]


def _mmdebstrap(recipe: ImageRecipe, arch: str, rootfs: Path, log: Path, heartbeat: Callable[[], None]) -> None:
    packages = [recipe.kernel.format(arch=arch), "initramfs-tools", *recipe.packages]
    modules = "\\n".join(recipe.initramfs_modules)
    # Set before the kernel package installs, so the initramfs is generated once, small.
    setup_hook = (
        'mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d" && '
        'echo MODULES=list > "$1/etc/initramfs-tools/conf.d/k0slab.conf" && '
        f'printf "{modules}\\n" > "$1/usr/share/initramfs-tools/modules.d/k0slab"'
    )
    argv = [
        "mmdebstrap", f"--arch={arch}", "--mode=root", "--variant=minbase",
        f"--include={','.join(packages)}",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        f"--setup-hook={setup_hook}",
    ]
    eatmydata = Path("/usr/share/mmdebstrap/hooks/eatmydata")
    if eatmydata.is_dir() and shutil.which("eatmydata"):
        argv.append(f"--hook-dir={eatmydata}")
    argv += [recipe.suite, rootfs, recipe.mirror, *recipe.extra_sources]
    run(argv, what="mmdebstrap", log=log, heartbeat=heartbeat)


def _customise(recipe: ImageRecipe, root: Path, log: Path) -> None:
    def write(relative: str, text: str, mode: int = 0o644) -> None:
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    write("etc/fstab", "/dev/vda / ext4 defaults,noatime,x-systemd.growfs 0 1\n")
    write("etc/hostname", "k0slab\n")
    write("etc/hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    # Empty machine-id: each VM generates its own at first boot (unique DHCP DUID, journal).
    write("etc/machine-id", "")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    # The build host's resolv.conf must not leak in: each VM's resolver (its lab network's dnsmasq)
    # arrives on the kernel command line and k0slab-identity writes it at boot.
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    write("etc/resolv.conf", "")
    write(
        "etc/systemd/network/10-k0slab.network",
        "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n\n"
        "[DHCPv4]\nClientIdentifier=mac\nUseHostname=no\n",
    )
    # Only an ed25519 host key, made at first boot: each VM gets its own, and it is fast under TCG.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    write(
        "etc/ssh/sshd_config.d/10-k0slab.conf",
        "HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nUseDNS no\n",
    )
    write(
        "etc/systemd/system/ssh.service.d/hostkey.conf",
        "[Service]\nExecStartPre=\n"
        "ExecStartPre=/bin/sh -c 'test -s /etc/ssh/ssh_host_ed25519_key || "
        "ssh-keygen -q -t ed25519 -N \"\" -f /etc/ssh/ssh_host_ed25519_key'\n"
        "ExecStartPre=/usr/sbin/sshd -t\n",
    )
    write("usr/local/sbin/k0slab-identity", (GUEST_FILES_DIR / "k0slab-identity").read_text(), 0o755)
    write(
        "etc/systemd/system/k0slab-identity.service",
        (GUEST_FILES_DIR / "k0slab-identity.service").read_text(),
    )
    chroot = ["chroot", str(root), "systemctl"]
    run([*chroot, "enable", "systemd-networkd.service", "k0slab-identity.service"], what="systemctl enable", log=log)
    # The clock starts from the host's RTC (the kernel reads it at boot); timesyncd keeps it right
    # where there is egress. Labs without egress mask it on the kernel command line.
    if (root / "lib/systemd/system/systemd-timesyncd.service").exists():
        run([*chroot, "enable", "systemd-timesyncd.service"], what="systemctl enable", log=log)
    if recipe.masked_units:
        run([*chroot, "mask", *recipe.masked_units], what="systemctl mask", log=log)
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    for lists in (root / "var/lib/apt/lists").glob("*_Packages"):
        lists.unlink()


def check_download_url(url: str, flag: str, allow_file: bool = False) -> str:
    """https anywhere; plain http only to loopback (test servers); file:// only when asked for."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file" and allow_file and parts.path:
        return url
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname:
        try:
            loopback = parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback
        except ValueError:
            loopback = False
        if loopback:
            return url
    raise K0slabError(f"{flag} {url!r} is not an https URL",
                      "give https://HOST/PATH (http only to localhost; file:// needs --allow-file)")


def check_qcow2(path: Path, source: str) -> None:
    """A pulled image must be a self-contained qcow2: a backing file would make QEMU read another file."""
    try:
        info = json.loads(run(["qemu-img", "info", "--output=json", path], what=f"qemu-img info of {source}"))
    except K0slabError:
        raise K0slabError(f"{source} is not a disk image qemu-img can read", "give the URL of a qcow2 image") \
            from None
    if info.get("format") != "qcow2":
        raise K0slabError(f"{source} is {info.get('format')!r}, not qcow2", "give the URL of a qcow2 image")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise K0slabError(f"{source} has a backing file {info.get('backing-filename')!r}",
                          "give a self-contained qcow2 image (qemu-img convert -O qcow2 flattens one)")


def pull(url: str, checksums_url: str, name: str, arch: str, progress: Progress = print,
         allow_file: bool = False) -> Image:
    """Download a cloud image and verify it against the published SHA256/SHA512 sums file."""
    validate_image_name(name)
    archmod.arch_settings(arch)
    check_download_url(url, "--url", allow_file)
    check_download_url(checksums_url, "--checksums", allow_file)
    file_name = url.rstrip("/").rsplit("/", 1)[-1]
    try:
        with urllib.request.urlopen(checksums_url, timeout=60) as response:
            sums_text = response.read().decode()
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise K0slabError(f"cannot download checksums {checksums_url}: {exc}", "check the URL and network") from None
    expected = checksum_for(sums_text, file_name)
    if expected is None:
        raise K0slabError(f"{checksums_url} lists no checksum for {file_name!r}", "check the image URL")
    algorithm = "sha512" if len(expected) == 128 else "sha256"
    target_dir = images_cache() / f"{name}-{arch}-pulled"
    work = images_cache() / f".pull-{name}-{arch}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    try:
        digest = hashlib.new(algorithm)
        progress(f"downloading {url}")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(work / "base.qcow2", "wb") as out:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except (OSError, ValueError) as exc:
            raise K0slabError(f"cannot download {url}: {exc}", "check the URL and network") from None
        if digest.hexdigest() != expected:
            raise K0slabError(
                f"checksum mismatch for {file_name}: got {algorithm} {digest.hexdigest()}, expected {expected}",
                "the download was removed; retry, or check the mirror",
            )
        check_qcow2(work / "base.qcow2", url)
        image = Image(
            name=name, arch=arch, source=url, key=expected[:16], path=target_dir,
            built_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            build_seconds=round(time.monotonic() - started, 1),
        )
        return _publish(work, image)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
