"""Where k0slab keeps its files: labs under the data home, images and binaries in the cache."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO_ROOT / "images"
PROFILES_DIR = REPO_ROOT / "profiles"
GUEST_FILES_DIR = Path(__file__).resolve().parents[1] / "vms" / "guest"


# As root (the usual case: libvirt's system instance and mmdebstrap need it) files live in system
# folders, because QEMU runs as an unprivileged user that cannot enter /root to read disks.


def data_home() -> Path:
    """Labs live here; K0SLAB_HOME moves them (tests use a temporary one)."""
    if "K0SLAB_HOME" in os.environ:
        return Path(os.environ["K0SLAB_HOME"])
    if os.geteuid() == 0:
        return Path("/var/lib/k0slab")
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "k0slab"


def cache_home() -> Path:
    """Images and k0s binaries are shared by all labs and survive `lab.down`."""
    if "K0SLAB_CACHE" in os.environ:
        return Path(os.environ["K0SLAB_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/k0slab")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "k0slab"


def labs_dir() -> Path:
    """Lab state and secrets: each lab folder is 0700."""
    return data_home() / "labs"


def vm_disks_dir() -> Path:
    """VM overlays, outside the private lab folders so that QEMU's user can open them."""
    return data_home() / "disks"
