"""Where k0slab keeps its files: labs under the data home, images and binaries in the cache."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = REPO_ROOT / "images"
PROFILES_DIR = REPO_ROOT / "profiles"
GUEST_FILES_DIR = Path(__file__).resolve().parent / "guest"


def data_home() -> Path:
    """Labs live here; K0SLAB_HOME moves them (tests use a temporary one)."""
    default = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "k0slab"
    return Path(os.environ.get("K0SLAB_HOME", default))


def cache_home() -> Path:
    """Images and k0s binaries are shared by all labs and survive `lab.down`."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "k0slab"
    return Path(os.environ.get("K0SLAB_CACHE", default))


def labs_dir() -> Path:
    return data_home() / "labs"
