"""image.pull against a loopback HTTP server laid out like a cloud image mirror (issue 2)."""
from __future__ import annotations

import functools
import hashlib
import http.server
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


@pytest.mark.parametrize("style", ["gnu", "bsd"])
def test_pull_verifies_and_caches(mirror, style):
    base, root = mirror
    _publish(root, b"qcow2 bytes " * 1000, style=style)
    pulled = imagemod.pull(f"{base}/debian-12-genericcloud-amd64.qcow2", f"{base}/SHA512SUMS", "cloud", "amd64",
                           progress=lambda _m: None)
    assert pulled.disk.read_bytes() == b"qcow2 bytes " * 1000
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
