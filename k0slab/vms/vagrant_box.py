"""k0slab's own node image as a vagrant-libvirt box, so `--provider vagrant` needs no download.

A box is a tar of box.img (the cached base.qcow2), metadata.json and a Vagrantfile (vagrant-libvirt's
v1 box format). It also carries the image's kernel and initrd, because the image boots them
directly, and k0slab-image.json with the image's cache key: a rebuilt image makes a new box, and
the key in an installed box tells whether it is stale.
"""
from __future__ import annotations

import io
import json
import math
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

from k0slab.vms import image as imagemod
from k0slab.core.paths import cache_home

PROVIDER = "libvirt"
KEY_FILE = "k0slab-image.json"
Progress = Callable[[str], None]

# The box's own Vagrantfile: Vagrant merges it under the project's, which k0slab writes with the
# per-VM kernel command line (root device, console, hostname, SSH key).
BOX_VAGRANTFILE = """\
# k0slab node image: direct kernel boot of the kernel and initrd shipped in this box.
# Root logs in with the key given on the kernel command line (k0slab.sshkey=<base64 key line>).
Vagrant.configure("2") do |config|
  config.ssh.username = "root"
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.provider :libvirt do |libvirt|
    libvirt.kernel = File.join(File.dirname(__FILE__), "vmlinuz")
    libvirt.initrd = File.join(File.dirname(__FILE__), "initrd.img")
  end
end
"""


def box_name(image: str, arch: str) -> str:
    return f"k0slab/{image}-{arch}"


def boxes_cache() -> Path:
    return cache_home() / "boxes"


def metadata(virtual_size_bytes: int) -> dict[str, object]:
    """vagrant-libvirt's v1 metadata; it wants the disk size in whole GiB."""
    return {"provider": PROVIDER, "format": "qcow2", "virtual_size": math.ceil(virtual_size_bytes / (1 << 30))}


def box_path(image: imagemod.Image) -> Path:
    return boxes_cache() / f"{image.name}-{image.arch}-{image.key}.box"


def make_box(image: imagemod.Image, progress: Progress = print) -> Path:
    """The box file for this image (made once per image key; boxes of older keys are removed)."""
    target = box_path(image)
    if target.is_file():
        return target
    boxes_cache().mkdir(parents=True, exist_ok=True)
    for old in boxes_cache().glob(f"{image.name}-{image.arch}-*.box"):
        old.unlink()
    progress(f"packaging image {image.name} {image.arch} as Vagrant box {box_name(image.name, image.arch)}")
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        # Uncompressed: the qcow2 inside gains little from gzip and Vagrant unpacks it at once.
        with tarfile.open(tmp, "w") as tar:
            texts = {
                "metadata.json": json.dumps(metadata(image.virtual_size())),
                "Vagrantfile": BOX_VAGRANTFILE,
                KEY_FILE: json.dumps({"image": image.name, "arch": image.arch, "key": image.key}),
            }
            for name, text in texts.items():
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
            for name, source in (("box.img", image.disk), ("vmlinuz", image.kernel), ("initrd.img", image.initrd)):
                tar.add(source, arcname=name)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def build_box(image: str, arch: str, progress: Progress = print) -> Path:
    """Build (or reuse) the image, then package it: what `invoke image.box` does."""
    return make_box(imagemod.build(image, arch, progress=progress), progress)


def vagrant_home() -> Path:
    return Path(os.environ.get("VAGRANT_HOME", Path.home() / ".vagrant.d"))


def installed_key(name: str) -> str | None:
    """The image key of the box Vagrant has under `name` (a box added from a file is version 0),
    or None when it has none or the box is not k0slab's."""
    folder = vagrant_home() / "boxes" / name.replace("/", "-VAGRANTSLASH-") / "0" / PROVIDER
    try:
        return json.loads((folder / KEY_FILE).read_text()).get("key")
    except (OSError, ValueError):
        return None
