"""CPU architectures: the names users type, what the host is, and how QEMU emulates each."""
from __future__ import annotations

import platform
from dataclasses import dataclass

from k0slab.core.errors import K0slabError


@dataclass(frozen=True)
class ArchSettings:
    """Everything about a guest that depends on its architecture."""

    name: str  # Debian / k0s release name
    uname: str  # what `uname -m` prints inside the guest
    libvirt_arch: str
    machine: str
    emulator: str
    cpu_model_tcg: str
    console: str  # kernel console device of the machine's first serial port
    qemu_user_binfmt: str  # binfmt_misc entry needed to build this arch's image on another host


ARCHES: dict[str, ArchSettings] = {
    "amd64": ArchSettings(
        name="amd64",
        uname="x86_64",
        libvirt_arch="x86_64",
        machine="pc",
        emulator="/usr/bin/qemu-system-x86_64",
        cpu_model_tcg="qemu64",
        console="ttyS0",
        qemu_user_binfmt="qemu-x86_64",
    ),
    "arm64": ArchSettings(
        name="arm64",
        uname="aarch64",
        libvirt_arch="aarch64",
        machine="virt",
        emulator="/usr/bin/qemu-system-aarch64",
        cpu_model_tcg="cortex-a57",
        console="ttyAMA0",
        qemu_user_binfmt="qemu-aarch64",
    ),
}

_UNAME_TO_ARCH = {settings.uname: name for name, settings in ARCHES.items()}


def arch_settings(arch: str) -> ArchSettings:
    try:
        return ARCHES[arch]
    except KeyError:
        raise K0slabError(
            f"unknown arch {arch!r}", f"use one of: {', '.join(ARCHES)}"
        ) from None


def from_uname(machine: str) -> str:
    """Map `uname -m` output (x86_64, aarch64) to a k0s release arch (amd64, arm64)."""
    try:
        return _UNAME_TO_ARCH[machine]
    except KeyError:
        raise K0slabError(
            f"unsupported machine type {machine!r}", f"k0slab runs {', '.join(ARCHES)} guests"
        ) from None


def host_arch() -> str:
    return from_uname(platform.machine())
