"""image.*: build, list, pull and package node images."""
from __future__ import annotations

from invoke import task

from k0slab.cli.common import friendly
from k0slab.core import ui
from k0slab.vms import arch as archmod
from k0slab.vms import image as imagemod


@task(help={"image": "recipe name in images/ (default debian-12)", "arch": "amd64 or arm64 (default: host)",
            "force": "rebuild even when cached"})
@friendly
def image_build(c, image="debian-12", arch=None, force=False):
    """Build a VM image from the Debian mirror (cached by recipe hash; a cached run takes < 1 s)."""
    built = imagemod.build(image, arch or archmod.host_arch(), force=force, progress=ui.progress)
    ui.progress(f"image {built.name} {built.arch}: {built.path} (built {built.built_at} in {built.build_seconds}s)")


@task(help={"json": "print JSON instead of a table"})
@friendly
def image_list(c, json=False):
    """List cached images: name, arch, source, size, cache path, built at."""
    rows = [
        {"name": i.name, "arch": i.arch, "source": i.source, "size": f"{i.size_bytes / (1 << 20):.0f}M",
         "path": str(i.path), "built_at": i.built_at}
        for i in imagemod.list_images()
    ]
    ui.print_json(rows) if json else ui.table(rows, ["name", "arch", "source", "size", "path", "built_at"])


@task(help={"image": "recipe name in images/ (default debian-12)", "arch": "amd64 or arm64 (default: host)"})
@friendly
def image_box(c, image="debian-12", arch=None):
    """Package the cached image as a vagrant-libvirt box (lab.up --provider vagrant adds it to Vagrant)."""
    from k0slab.vms import vagrant_box

    arch = arch or archmod.host_arch()
    path = vagrant_box.build_box(image, arch, progress=ui.progress)
    ui.progress(f"box {vagrant_box.box_name(image, arch)}: {path}")


@task(help={"url": "image URL (https; http only to localhost)", "checksums": "URL of the SHA256SUMS/SHA512SUMS file",
            "name": "name to cache it under", "arch": "amd64 or arm64",
            "allow_file": "also accept file:// URLs (a local image and sums file)"})
@friendly
def image_pull(c, url, checksums, name="cloud", arch=None, allow_file=False):
    """Download a cloud image and verify it against its published checksum file."""
    pulled = imagemod.pull(url, checksums, name, arch or archmod.host_arch(), progress=ui.progress,
                           allow_file=allow_file)
    ui.progress(f"image {pulled.name} {pulled.arch} verified and cached at {pulled.path}")
