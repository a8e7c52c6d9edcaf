"""Where k0slab keeps its files: labs under the data home, images and binaries in the cache."""
from __future__ import annotations

import os
import time
from pathlib import Path

from k0slab.core.errors import K0slabError

PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_DIR.parent  # a checkout's top level (in an installed wheel: site-packages)
GUEST_FILES_DIR = PACKAGE_DIR / "vms" / "guest"


def _shipped(folder: str) -> Path:
    """images/ and profiles/ sit at a checkout's top level; a wheel carries them inside the package
    (pyproject.toml maps them to k0slab.images and k0slab.profiles)."""
    inside = PACKAGE_DIR / folder
    return inside if inside.is_dir() else REPO_ROOT / folder


IMAGES_DIR = _shipped("images")
PROFILES_DIR = _shipped("profiles")


def config_home() -> Path:
    """The user's own recipes (images/) and profiles (profiles/); K0SLAB_CONFIG moves it."""
    if "K0SLAB_CONFIG" in os.environ:
        return Path(os.environ["K0SLAB_CONFIG"])
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "k0slab"


def yaml_folders(shipped: Path) -> list[Path]:
    """Where named YAML files of one kind are looked up: the user's folder first, so that their own
    file wins over a shipped one of the same name, then the shipped folder."""
    return [config_home() / shipped.name, shipped]


def find_yaml(shipped: Path, name: str) -> Path | None:
    """The file NAME.yaml in the user's or the shipped folder, or None."""
    return next((f / f"{name}.yaml" for f in yaml_folders(shipped) if (f / f"{name}.yaml").is_file()), None)


def yaml_names(shipped: Path) -> list[str]:
    """Every name find_yaml knows, for error hints and listings."""
    return sorted({p.stem for folder in yaml_folders(shipped) for p in folder.glob("*.yaml")})


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


def check_file(path: Path, flag: str) -> Path:
    """A file a user asked k0slab to write: refused up front when it is a folder or sits under a file."""
    if path.is_dir():
        raise K0slabError(f"{flag} {str(path)!r} is a folder", "give a file path, e.g. out/report.xml")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise K0slabError(f"{flag} {str(path)!r}: {parent} is a file, not a folder", "give a path in a folder")
            break
    return path


def check_folder(path: Path, flag: str) -> Path:
    """A folder a user asked k0slab to write into: refused up front when it or a parent is a file."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise K0slabError(f"{flag} {str(path)!r}: {candidate} is a file, not a folder",
                                  "give a folder path, e.g. out/logs")
            break
    return path


def crash_report_path() -> Path:
    """Where the CLI keeps the traceback of a failure k0slab did not expect, one file per run."""
    return data_home() / "crash" / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.txt"
