"""Build the k0s stand-in (the `k0s_standin` package next to this file) into one executable zipapp.

The zipapp is what travels to a node's /usr/local/bin/k0s: one file, `#!/usr/bin/env python3`, run by the
node image's python3 with python3-cryptography and nothing else. Tests call `standin_binary()`, which builds
it once per source state into a cache folder; the built file is never committed.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zipapp
from pathlib import Path

PACKAGE = Path(__file__).with_name("k0s_standin")
INTERPRETER = "/usr/bin/env python3"
ENTRY_POINT = "k0s_standin.cli:run"


def _sources() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


def source_hash() -> str:
    digest = hashlib.sha256()
    for source in _sources():
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


VERSION_RE = re.compile(r"^v\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?\+k0s\.\d+$")


def build(out: Path, version: str | None = None) -> Path:
    """Write the zipapp to OUT (mode 0755), atomically, so a concurrent reader never sees half a file.
    With VERSION, the binary reports that release instead of the stand-in's default."""
    if version is not None and not VERSION_RE.match(version):
        raise ValueError(f"{version!r} is not a k0s release tag; use one like v1.32.1+k0s.0")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="k0s-standin-build-") as staging:
        shutil.copytree(PACKAGE, Path(staging) / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__"))
        if version is not None:
            (Path(staging) / PACKAGE.name / "_release.py").write_text(
                f'"""Written by make-version."""\nRELEASE = "{version}"\n')
        partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
        zipapp.create_archive(staging, partial, interpreter=INTERPRETER, main=ENTRY_POINT)
        os.chmod(partial, 0o755)
        os.replace(partial, out)
    return out


def standin_binary() -> Path:
    """The stand-in for the current sources, built on first use and cached by their hash."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "k0slab-standin"
    binary = cache / f"k0s-{source_hash()}"
    if not binary.exists():
        build(binary)
    return binary
