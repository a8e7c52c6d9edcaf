"""The k0s binary a lab runs on its nodes, and the other files of a k0s release (airgap bundles).

Either a release (the pinned default, an explicit tag, or `stable`) downloaded once per version and
arch into the cache and verified against that release's sha256sums.txt, or a local file given with
`--k0s-binary`, checked to be executable and built for the node's arch. Neither get.k0s.sh nor
k0sctl verifies downloads; k0slab does, and keeps the verified sum next to the binary so a cached
copy is reused, and re-checked, without the network.
"""
from __future__ import annotations

import http.client
import io
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from k0slab.cluster.k0s import pins
from k0slab.vms.arch import arch_settings
from k0slab.core.checksums import checksum_for, sha256_file
from k0slab.core.errors import K0slabError
from k0slab.vms.image import Progress
from k0slab.core.paths import cache_home
from k0slab.core.units import format_size

# The newest v1.36 patch published (k0s-contract §8 covers v1.36 asset names): tagged at
# https://github.com/k0sproject/k0s/releases/tag/v1.36.4%2Bk0s.1.
DEFAULT_K0S_VERSION = "v1.36.4+k0s.1"
RELEASES_URL_ENV = "K0SLAB_K0S_RELEASES_URL"
STABLE_URL_ENV = "K0SLAB_K0S_STABLE_URL"
DEFAULT_RELEASES_URL = "https://github.com/k0sproject/k0s/releases/download"
DEFAULT_STABLE_URL = "https://docs.k0sproject.io/stable.txt"
RELEASES_PAGE = "https://github.com/k0sproject/k0s/releases"

# Release tags, pre-releases included: v1.31.1+k0s.0, v1.30.0-rc.1+k0s.0.
_TAG_RE = re.compile(r"v\d+\.\d+\.\d+(-(alpha|beta|rc)\.\d+)?\+k0s\.\d+")
_TAG_SHAPE = f"v<major>.<minor>.<patch>+k0s.<n>, e.g. {DEFAULT_K0S_VERSION}"

# urllib's timeout bounds each connect and each read, not the whole download of a ~250 MB binary.
_TIMEOUT_SECONDS = 30
_ATTEMPTS = 4
# Backoff between attempts; a module attribute so tests can make retries instant.
_retry_wait = wait_exponential(multiplier=1, max=10)
_CHUNK = 1 << 20
REPORT_EVERY_S = 5.0

# ELF e_machine values, named as k0s names its release arches.
_ELF_MACHINES = {62: "amd64", 183: "arm64", 40: "arm"}
_ELF_HEADER_BYTES = 20  # e_ident (16), e_type (2), e_machine (2)

_T = TypeVar("_T")


class _NotFound(Exception):
    """HTTP 404: the version or file does not exist, so retrying cannot help."""


class _Transient(Exception):
    """A failure that may pass on its own: refused or reset connections, timeouts, 5xx, short bodies."""


def resolve_version(version: str | None) -> str:
    """The release tag to use: the pinned default for None, `stable` looked up online, else a checked tag."""
    if version is None:
        return DEFAULT_K0S_VERSION
    version = version.strip()
    if version == "stable":
        return _stable_version()
    if not _TAG_RE.fullmatch(version):
        hint = f"use a k0s release tag like {_TAG_SHAPE}, or `stable`"
        if _TAG_RE.fullmatch(f"v{version}"):
            hint = f"did you mean v{version}?"
        raise K0slabError(f"k0s version {version!r} is not a k0s release tag", hint)
    return version


def fetch_binary(version: str, arch: str, progress: Progress = print) -> Path:
    """The verified k0s release binary for arch, from the cache or downloaded into it."""
    tag = resolve_version(version)
    arch_settings(arch)
    return fetch_asset(tag, f"k0s-{tag}-{arch}", progress, mode=0o755)


def fetch_asset(tag: str, name: str, progress: Progress = print, *, mode: int = 0o644) -> Path:
    """A file of release `tag`, verified against its sha256sums.txt, from the cache or downloaded
    into it; the verified sum is kept next to it so a cached copy is re-checked offline."""
    folder = cache_home() / "k0s" / tag
    target = folder / name
    record = folder / f"{name}.sha256"
    if _cache_is_valid(target, record):
        return target
    base = _url_from_env(RELEASES_URL_ENV, DEFAULT_RELEASES_URL)
    expected = _expected_sha256(f"{base}/{tag}/sha256sums.txt", tag, name)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(folder)
    _download_verified(f"{base}/{tag}/{name}", target, expected, progress, mode)
    # Written after the file is in place: a file without its record is downloaded again.
    record.write_text(f"{expected} *{name}\n")
    return target


def elf_arch(path: Path) -> str | None:
    """The arch an ELF file is built for (k0s arch names), or None when it is not ELF."""
    with open(path, "rb") as handle:
        return _elf_arch_from_header(handle.read(_ELF_HEADER_BYTES))


def check_local_binary(path: Path, arch: str) -> Path:
    """A `--k0s-binary` file that can run on a node of arch, as an absolute path."""
    arch_settings(arch)
    path = Path(path).expanduser()
    if not path.exists():
        raise K0slabError(
            f"--k0s-binary {path} does not exist", f"give the path of a k0s binary for {arch} from {RELEASES_PAGE}"
        )
    if not path.is_file():
        raise K0slabError(f"--k0s-binary {path} is not a regular file", "give the path of the k0s binary itself")
    if not os.access(path, os.X_OK):
        raise K0slabError(f"--k0s-binary {path} is not executable", f"run: chmod +x {path}")
    with open(path, "rb") as handle:
        header = handle.read(_ELF_HEADER_BYTES)
    # A script (such as a test stand-in) runs wherever its interpreter does.
    if header.startswith(b"#!"):
        return path.resolve()
    found = _elf_arch_from_header(header)
    if found is None:
        raise K0slabError(
            f"--k0s-binary {path} is neither an ELF binary nor a script", f"give a Linux k0s binary for {arch}"
        )
    if found != arch:
        raise K0slabError(
            f"--k0s-binary {path} is built for {found}, but the node is {arch}",
            f"use the k0s-<version>-{arch} release file, or a lab whose nodes are {found}",
        )
    return path.resolve()


def binary_for(version: str | None, local_binary: Path | None, arch: str, progress: Progress = print) -> Path:
    """The k0s binary for nodes of arch: the local one when given (no download), else the release."""
    if local_binary is not None:
        return check_local_binary(local_binary, arch)
    return fetch_binary(resolve_version(version), arch, progress)


def _elf_arch_from_header(header: bytes) -> str | None:
    if len(header) < _ELF_HEADER_BYTES or not header.startswith(b"\x7fELF"):
        return None
    # e_ident[EI_DATA] is 2 for big-endian files; e_machine is in the file's byte order.
    machine = int.from_bytes(header[18:20], "big" if header[5] == 2 else "little")
    return _ELF_MACHINES.get(machine, f"ELF machine {machine}")


def _url_from_env(variable: str, default: str) -> str:
    return (os.environ.get(variable) or default).rstrip("/")


def _local_flag(name: str) -> str:
    """The lab.up flag that gives a local copy of release file `name` instead."""
    return "--airgap-bundle PATH" if name.startswith("k0s-airgap-bundle-") else "--k0s-binary PATH"


def _offline_hint(name: str) -> str:
    return (
        f"to work offline, get {name} on a connected machine and pass {_local_flag(name)}; "
        f"{RELEASES_URL_ENV} can point at a mirror"
    )


def _stable_version() -> str:
    url = _url_from_env(STABLE_URL_ENV, DEFAULT_STABLE_URL)
    hint = f"pin a version such as {DEFAULT_K0S_VERSION}, or pass --k0s-binary PATH to work offline"
    try:
        text = _fetch_text(url)
    except _NotFound:
        raise K0slabError(f"no stable k0s version at {url} (HTTP 404)", hint) from None
    except _Transient as exc:
        raise K0slabError(f"cannot look up the stable k0s version: {exc}", hint) from None
    tag = text.strip()
    if not _TAG_RE.fullmatch(tag):
        raise K0slabError(f"{url} does not hold a k0s release tag: {tag[:40]!r}", hint)
    return tag


def _expected_sha256(sums_url: str, tag: str, name: str) -> str:
    try:
        sums = _fetch_text(sums_url)
    except _NotFound:
        raise K0slabError(
            f"k0s {tag} is not a published release (HTTP 404 for {sums_url})",
            f"pick a version from {RELEASES_PAGE}, or pass {_local_flag(name)}",
        ) from None
    except _Transient as exc:
        raise K0slabError(f"cannot download the checksums of k0s {tag}: {exc}", _offline_hint(name)) from None
    expected = checksum_for(sums, name)
    if expected is None:
        raise K0slabError(
            f"k0s {tag} publishes no {name}: {sums_url} does not list it",
            f"see {RELEASES_PAGE} for the arches of that release, or pass {_local_flag(name)}",
        )
    pins.check_against_pins(tag, name, expected)
    return expected


def release_sums(tag: str) -> dict[str, str]:
    """Every `sha256  asset` line of a release's sha256sums.txt (the lab workflow's pin check)."""
    base = _url_from_env(RELEASES_URL_ENV, DEFAULT_RELEASES_URL)
    sums: dict[str, str] = {}
    for line in _fetch_text(f"{base}/{resolve_version(tag)}/sha256sums.txt").splitlines():
        fields = line.split()
        if len(fields) == 2:
            sums[fields[1].lstrip("*")] = fields[0].lower()
    return sums


def _cache_is_valid(target: Path, record: Path) -> bool:
    if not (target.is_file() and record.is_file()):
        return False
    expected = checksum_for(record.read_text(), target.name)
    if expected is not None and sha256_file(target) == expected:
        return True
    # A damaged cache entry is dropped and downloaded again rather than trusted.
    target.unlink(missing_ok=True)
    record.unlink(missing_ok=True)
    return False


def _remove_stale_parts(folder: Path) -> None:
    """A download killed hard leaves its .part file; remove those whose process is gone."""
    for part in folder.glob(".*.part"):
        pid = part.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            part.unlink(missing_ok=True)


def _download_verified(url: str, target: Path, expected: str, progress: Progress, mode: int) -> None:
    """Download to a temporary file and rename it into place only once its sha256 matches."""
    name = target.name
    part = target.with_name(f".{name}.{os.getpid()}.part")
    progress(f"downloading {name} from {url}")
    try:
        with open(part, "wb") as sink:
            _with_retries(lambda: _stream(url, sink, lambda line: progress(f"{name}: {line}")))
        actual = sha256_file(part)
        if actual != expected:
            raise K0slabError(
                f"checksum mismatch for {name}: downloaded sha256 {actual}, the release lists {expected}",
                "the download was deleted; retry, and if it persists check the network path or "
                f"{RELEASES_URL_ENV}",
            )
        part.chmod(mode)
        os.replace(part, target)
    except _NotFound:
        raise K0slabError(
            f"{url} does not exist (HTTP 404)", f"see {RELEASES_PAGE}, or pass {_local_flag(name)}"
        ) from None
    except _Transient as exc:
        raise K0slabError(f"cannot download {name}: {exc}", _offline_hint(name)) from None
    finally:
        part.unlink(missing_ok=True)
    progress(f"{name}: verified sha256 {expected}")


def _fetch_text(url: str) -> str:
    sink = io.BytesIO()
    _with_retries(lambda: _stream(url, sink))
    return sink.getvalue().decode()


def _with_retries(action: Callable[[], _T]) -> _T:
    retrying = Retrying(
        retry=retry_if_exception_type(_Transient),
        stop=stop_after_attempt(_ATTEMPTS),
        wait=_retry_wait,
        reraise=True,
    )
    return retrying(action)


def _open(url: str) -> http.client.HTTPResponse:
    try:
        return urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 404:
            raise _NotFound(url) from None
        if exc.code == 429 or exc.code >= 500:
            raise _Transient(f"HTTP {exc.code} from {url}") from None
        raise K0slabError(
            f"{url} answered HTTP {exc.code} {exc.reason}", _offline_hint(url.rsplit("/", 1)[-1])
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Transient(f"{url}: {getattr(exc, 'reason', None) or exc}") from None


def _stream(url: str, sink: BinaryIO, report: Callable[[str], None] | None = None) -> None:
    """One attempt at copying url into sink; the sink is emptied first so a retry starts clean."""
    sink.seek(0)
    sink.truncate()
    with _open(url) as response:
        total = response.length  # None without a Content-Length
        # About ten lines per download, or one per 32 MiB when the size is unknown, and one at least
        # every REPORT_EVERY_S on a slow link, so a download is never silent for long.
        step = max(total // 10, _CHUNK) if total else 32 * _CHUNK
        done, next_report = 0, step
        started = last_report = time.monotonic()
        try:
            while chunk := response.read(_CHUNK):
                sink.write(chunk)
                done += len(chunk)
                now = time.monotonic()
                if report is not None and (done >= next_report or now - last_report >= REPORT_EVERY_S):
                    amount = f"{format_size(done)} of {format_size(total)}" if total else format_size(done)
                    report(f"{amount}, {now - started:.0f}s")
                    last_report = now
                    while next_report <= done:
                        next_report += step
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(f"{url}: download interrupted after {format_size(done)}: {exc}") from None
    # http.client ends a read early without an error when the server closes the connection.
    if total is not None and done < total:
        raise _Transient(f"{url}: connection closed after {format_size(done)} of {format_size(total)}")
    if report is not None:
        report(f"downloaded {format_size(done)}")
