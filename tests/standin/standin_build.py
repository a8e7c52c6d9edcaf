"""Build the k0s stand-in (the `k0s_standin` package next to this file) into one executable file.

Two forms, one source:
- the zipapp (`#!/usr/bin/env python3`), which the host-mode tests run in temporary roots under the
  host's Python: `build`, `standin_binary()`;
- the node binary, which is what travels to a node's /usr/local/bin/k0s: a shell header, Debian's
  python3.11 with python3-cryptography for amd64 and arm64 (node_runtime.py), then the zipapp. The node
  image has no Python; the first run on a node unpacks its arch's runtime. `build_node_binary`,
  `node_standin_binary()`.
Both are built once per source state into a cache folder; built files are never committed.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zipapp
from pathlib import Path

try:  # imported as tests.standin.standin_build (integration tests, bench)
    from .node_runtime import ARCHES, runtime_archive
except ImportError:  # imported from this folder (its scripts, the host-mode tests' conftest)
    from node_runtime import ARCHES, runtime_archive

PACKAGE = Path(__file__).with_name("k0s_standin")
INTERPRETER = "/usr/bin/env python3"
ENTRY_POINT = "k0s_standin.cli:run"


def _sources() -> list[Path]:
    """The stand-in's modules and the files that pack them: a change to either makes a new build."""
    builders = [Path(__file__), Path(__file__).with_name("node_runtime.py")]
    return sorted(PACKAGE.glob("*.py")) + builders


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


# The node binary's header. Each part is unpacked into a folder named by its content's hash, so another
# stand-in (an upgrade, a make-version build) never runs on a stale copy, and an unpack that two runs
# race on, or that is cut off, never leaves a half folder behind: it appears whole by a rename or not.
# K0S_STANDIN_ROOT moves it under a host-mode root, like every other path of the stand-in.
NODE_HEADER = """#!/bin/sh
# The k0s stand-in for test nodes (tests/standin/README.md). This shell header is followed by Debian's
# python3.11 and python3-cryptography, one gzip'd tar per arch, and then the stand-in's zipapp. The first
# run on a node unpacks the runtime for its arch: the node image has no Python.
set -eu
case "$(uname -m)" in
{cases}
  *) echo "k0s stand-in: this file carries no Python runtime for $(uname -m)" >&2; exit 1 ;;
esac
home="${{K0S_STANDIN_ROOT:-}}/opt/k0s-standin"
if [ ! -e "$home/$runtime/python/bin/python3.11" ]; then
  mkdir -p "$home"
  staging=$(mktemp -d "$home/.unpack.XXXXXX")
  if ! tail -c "+$((offset + 1))" "$0" | head -c "$size" | tar -xzf - -C "$staging"; then
    rm -rf "$staging"
    echo "k0s stand-in: cannot unpack its Python runtime into $home/$runtime" >&2
    exit 1
  fi
  mv -T "$staging" "$home/$runtime" 2>/dev/null || rm -rf "$staging"
fi
if [ ! -e "$home/{app}.pyz" ]; then
  tail -c "+$(({app_offset} + 1))" "$0" | head -c {app_size} > "$home/.{app}.$$"
  mv -f "$home/.{app}.$$" "$home/{app}.pyz"
fi
# cryptography loads OpenSSL's legacy provider, which OpenSSL looks for in its own modules folder.
export PYTHONHOME="$home/$runtime/python" OPENSSL_MODULES="$home/$runtime/lib/ossl-modules"
exec "$home/$runtime/lib/$loader" --library-path "$home/$runtime/lib" \\
  "$PYTHONHOME/bin/python3.11" -s "$home/{app}.pyz" "$@"
"""
NODE_CASE = "  {machine}) runtime={runtime} offset={offset} size={size} loader={loader} ;;"
UNAME_MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}


def _node_header(runtimes: list[tuple[str, Path]], app: bytes) -> bytes:
    """The header, whose numbers are byte offsets into the file it starts: rendered until its own length,
    which the offsets include, stops changing (the digits of the offsets change it by a few bytes)."""
    app_id = f"k0s-{hashlib.sha256(app).hexdigest()[:16]}"
    length = 0
    while True:
        offset, cases = length, []
        for arch, archive in runtimes:
            size = archive.stat().st_size
            cases.append(NODE_CASE.format(machine=UNAME_MACHINE[arch], runtime=archive.name.removesuffix(".tar.gz"),
                                          offset=offset, size=size, loader=ARCHES[arch][1]))
            offset += size
        header = NODE_HEADER.format(cases="\n".join(cases), app=app_id, app_offset=offset,
                                    app_size=len(app)).encode()
        if len(header) == length:
            return header
        length = len(header)


def build_node_binary(out: Path, version: str | None = None) -> Path:
    """Write the node binary to OUT (mode 0755), atomically: the header, each arch's runtime, the zipapp."""
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="k0s-standin-node-") as staging:
        app = build(Path(staging) / "k0s.pyz", version).read_bytes()
        runtimes = [(arch, runtime_archive(arch, _cache())) for arch in ARCHES]
        partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
        with open(partial, "wb") as binary:
            binary.write(_node_header(runtimes, app))
            for _arch, archive in runtimes:
                with open(archive, "rb") as part:
                    shutil.copyfileobj(part, binary)
            binary.write(app)
        os.chmod(partial, 0o755)
        os.replace(partial, out)
    return out


def _cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "k0slab-standin"


def standin_binary() -> Path:
    """The zipapp for the current sources (host mode), built on first use and cached by their hash."""
    binary = _cache() / f"k0s-{source_hash()}.pyz"
    if not binary.exists():
        build(binary)
    return binary


def node_standin_binary() -> Path:
    """The node binary for the current sources, what tests hand k0slab as --k0s-binary; cached likewise."""
    binary = _cache() / f"k0s-node-{source_hash()}"
    if not binary.exists():
        build_node_binary(binary)
    return binary
