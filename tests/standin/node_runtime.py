"""The Python runtime that the k0s stand-in carries to a node, so that the node image needs no Python.

k0slab pushes one file as "the k0s binary", and its node image holds only what the real k0s needs
(issue 13). The stand-in is Python, so its file brings Debian's own python3.11 and python3-cryptography
along, per arch: the packages are extracted (not installed: no maintainer scripts, so no qemu-user for
arm64) from the node image's mirror and suite, pruned to what the stand-in can import, byte-compiled,
and packed as one gzip'd tar per arch. The runtime keeps its own glibc and dynamic loader, and the
stand-in's header runs Python through that loader, so nothing depends on which libraries the node has
and nothing leaks into the processes the stand-in starts.

Why not a tools disk or a layer over the product image: k0slab would then have to attach or pick
something only for tests, and the product must never know that it talks to the stand-in.
"""
from __future__ import annotations

import hashlib
import os
import py_compile
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from k0slab.vms.image import ImageRecipe, load_recipe

# The node image's recipe: the runtime comes from the same Debian release as the node's own libraries.
NODE_IMAGE = "debian-12"
PACKAGES = ("python3-minimal", "libpython3.11-stdlib", "python3-cryptography")
PYTHON = "python3.11"
# Per arch: the multiarch triplet under lib/ and the dynamic loader's file name.
ARCHES = {
    "amd64": ("x86_64-linux-gnu", "ld-linux-x86-64.so.2"),
    "arm64": ("aarch64-linux-gnu", "ld-linux-aarch64.so.1"),
}
# Standard-library parts the stand-in never imports; they are most of the size.
UNUSED_STDLIB = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
                 "sitecustomize.py", f"config-3.11-{ARCHES['amd64'][0]}", f"config-3.11-{ARCHES['arm64'][0]}")
# Library folders the runtime does not need (iconv modules, Kerberos plugins).
UNUSED_LIBRARY_DIRS = ("gconv", "krb5")


def _recipe_key(recipe: ImageRecipe, arch: str) -> str:
    digest = hashlib.sha256()
    for part in (arch, recipe.suite, recipe.mirror, *recipe.extra_sources, *PACKAGES, *UNUSED_STDLIB,
                 *UNUSED_LIBRARY_DIRS, Path(__file__).read_text()):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def runtime_archive(arch: str, cache: Path) -> Path:
    """The runtime for arch as a gzip'd tar (lib/ and python/), built once per recipe into cache."""
    if arch not in ARCHES:
        raise ValueError(f"the stand-in has no runtime for {arch!r}; it knows {', '.join(ARCHES)}")
    recipe = load_recipe(NODE_IMAGE)
    archive = cache / f"runtime-{arch}-{_recipe_key(recipe, arch)}.tar.gz"
    if archive.exists():
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"k0s-standin-runtime-{arch}-", dir=cache) as work:
        extracted, tree = Path(work) / "extracted", Path(work) / "runtime"
        _extract_packages(recipe, arch, extracted, Path(work) / "mmdebstrap.log")
        _prune_into(extracted, tree, arch)
        partial = Path(work) / archive.name
        with tarfile.open(partial, "w:gz", compresslevel=6) as packed:
            for entry in sorted(tree.iterdir()):
                packed.add(entry, arcname=entry.name)
        os.replace(partial, archive)
    return archive


def _extract_packages(recipe: ImageRecipe, arch: str, target: Path, log: Path) -> None:
    argv = ["mmdebstrap", "--variant=extract", f"--arch={arch}", f"--include={','.join(PACKAGES)}",
            recipe.suite, str(target), recipe.mirror, *recipe.extra_sources]
    with open(log, "wb") as output:
        done = subprocess.run(argv, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=900)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"mmdebstrap could not extract {', '.join(PACKAGES)} for {arch}: " + " | ".join(tail)
                           + f" (it needs {recipe.mirror}: build the stand-in outside the VM namespace, as"
                           " scripts/test.sh does before it enters it)")


def _prune_into(extracted: Path, tree: Path, arch: str) -> None:
    """Copy what the runtime needs: every shared library into lib/, the interpreter and its modules into
    python/ (a prefix: python/bin, python/lib/python3.11, python/lib/python3/dist-packages)."""
    triplet = ARCHES[arch][0]
    libs = tree / "lib"
    libs.mkdir(parents=True)
    for folder in (extracted / "lib" / triplet, extracted / "usr" / "lib" / triplet):
        if folder.is_dir():
            shutil.copytree(folder, libs, symlinks=True, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(*UNUSED_LIBRARY_DIRS))
    prefix = tree / "python"
    (prefix / "bin").mkdir(parents=True)
    shutil.copy2(extracted / "usr" / "bin" / PYTHON, prefix / "bin" / PYTHON)
    stdlib = extracted / "usr" / "lib" / PYTHON

    def unused_at_the_top(folder: str, names: list[str]) -> list[str]:
        return [name for name in names if name in UNUSED_STDLIB] if Path(folder) == stdlib else []

    shutil.copytree(stdlib, prefix / "lib" / PYTHON, symlinks=True, ignore=unused_at_the_top)
    shutil.copytree(extracted / "usr" / "lib" / "python3" / "dist-packages",
                    prefix / "lib" / "python3" / "dist-packages", symlinks=True)
    _byte_compile(prefix / "lib")


def _byte_compile(folder: Path) -> None:
    """Byte-code for the node, made here once: otherwise every node would compile each stdlib module on its
    first import, under TCG. Byte-code is the same on every arch, but only this Python minor's loads
    there, so another host Python leaves the sources alone."""
    if sys.version_info[:2] != (3, 11):
        return
    for source in folder.rglob("*.py"):
        try:
            py_compile.compile(str(source), doraise=True, quiet=1)
        except py_compile.PyCompileError:
            continue  # a module that only some other Python could compile; the node compiles it if used
