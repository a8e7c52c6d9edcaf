"""image.pull against a loopback HTTP server laid out like a cloud image mirror (issue 2)."""
from __future__ import annotations

import functools
import hashlib
import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from k0slab.vms import image as imagemod
from k0slab.core.errors import K0slabError


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "mirror"
    root.mkdir()
    for variable in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("K0SLAB_CACHE", str(tmp_path / "cache"))
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def _publish(root: Path, content: bytes, listed: str | None = None, style: str = "gnu") -> None:
    (root / "debian-12-genericcloud-amd64.qcow2").write_bytes(content)
    digest = listed or hashlib.sha512(content).hexdigest()
    line = (f"{digest}  debian-12-genericcloud-amd64.qcow2\n" if style == "gnu"
            else f"SHA512 (debian-12-genericcloud-amd64.qcow2) = {digest}\n")
    (root / "SHA512SUMS").write_text("0" * 128 + "  other.qcow2\n" + line)


def _qcow2(tmp_path: Path, backing: Path | None = None) -> bytes:
    """The bytes of a small real qcow2, optionally with a backing file."""
    disk = tmp_path / "made.qcow2"
    disk.unlink(missing_ok=True)
    options = ["-F", "qcow2", "-b", str(backing)] if backing else []
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *options, str(disk), "64M"], check=True)
    return disk.read_bytes()


@pytest.mark.parametrize("style", ["gnu", "bsd"])
def test_pull_verifies_and_caches(mirror, style, tmp_path):
    base, root = mirror
    content = _qcow2(tmp_path)
    _publish(root, content, style=style)
    pulled = imagemod.pull(f"{base}/debian-12-genericcloud-amd64.qcow2", f"{base}/SHA512SUMS", "cloud", "amd64",
                           progress=lambda _m: None)
    assert pulled.disk.read_bytes() == content
    assert [i.name for i in imagemod.list_images()] == ["cloud"]
    assert oct(pulled.disk.stat().st_mode & 0o777) == "0o644"


def test_wrong_checksum_is_a_clear_error_and_leaves_no_file(mirror):
    base, root = mirror
    _publish(root, b"tampered", listed="f" * 128)
    with pytest.raises(K0slabError, match=r"checksum mismatch for debian-12-genericcloud-amd64.qcow2") as error:
        imagemod.pull(f"{base}/debian-12-genericcloud-amd64.qcow2", f"{base}/SHA512SUMS", "cloud", "amd64",
                      progress=lambda _m: None)
    assert "the download was removed" in str(error.value)
    assert [p.name for p in imagemod.images_cache().iterdir()] == []


def test_image_missing_from_the_checksum_file_is_refused(mirror):
    base, root = mirror
    _publish(root, b"x")
    with pytest.raises(K0slabError, match="lists no checksum for 'nope.qcow2'"):
        imagemod.pull(f"{base}/nope.qcow2", f"{base}/SHA512SUMS", "cloud", "amd64", progress=lambda _m: None)


def test_raw_bytes_and_backing_files_are_refused(mirror, tmp_path):
    base, root = mirror
    url, sums = f"{base}/debian-12-genericcloud-amd64.qcow2", f"{base}/SHA512SUMS"
    _publish(root, b"not a disk image at all" * 100)
    with pytest.raises(K0slabError, match="'raw', not qcow2"):
        imagemod.pull(url, sums, "cloud", "amd64", progress=lambda _m: None)
    secret = tmp_path / "secret.qcow2"
    secret.write_bytes(_qcow2(tmp_path))
    _publish(root, _qcow2(tmp_path, backing=secret))
    with pytest.raises(K0slabError, match="has a backing file"):
        imagemod.pull(url, sums, "cloud", "amd64", progress=lambda _m: None)
    assert [p.name for p in imagemod.images_cache().iterdir()] == []


@pytest.mark.parametrize("url", ["not a url", "ftp://example.org/x.qcow2", "http://example.org/x.qcow2",
                                 "http://10.0.0.1/x.qcow2", "file:///etc/passwd", "https://"])
def test_only_https_loopback_http_and_asked_for_file_urls(url):
    with pytest.raises(K0slabError, match="is not an https URL"):
        imagemod.check_download_url(url, "--url")


def test_file_urls_when_asked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("K0SLAB_CACHE", str(tmp_path / "cache"))
    content = _qcow2(tmp_path)
    (tmp_path / "cloud.qcow2").write_bytes(content)
    (tmp_path / "SHA256SUMS").write_text(f"{hashlib.sha256(content).hexdigest()}  cloud.qcow2\n")
    pulled = imagemod.pull(f"file://{tmp_path}/cloud.qcow2", f"file://{tmp_path}/SHA256SUMS", "cloud", "amd64",
                           progress=lambda _m: None, allow_file=True)
    assert pulled.disk.read_bytes() == content


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "x\n", "", "UPPER"])
def test_image_names_cannot_leave_the_cache(name):
    with pytest.raises(K0slabError, match="name .* is not valid"):
        imagemod.pull("https://example.org/x.qcow2", "https://example.org/SUMS", name, "amd64")
