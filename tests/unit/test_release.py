"""k0s release resolution, download, verification and local-binary checks against a loopback server."""
from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tenacity import wait_none

from k0slab.core.errors import K0slabError
from k0slab.cluster.k0s import airgap, pins, release

TAG = "v1.30.4+k0s.0"


@dataclass
class FakeReleases:
    """Serves the GitHub release layout from memory and records every path asked for."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    # Statuses answered, in order, before the real content: simulates a flaky server.
    failures: list[int] = field(default_factory=list)
    # Paths whose body is cut short of its Content-Length: simulates a dropped connection.
    truncated: set[str] = field(default_factory=set)

    def publish(self, tag: str, arch: str, content: bytes, listed_sum: str | None = None) -> str:
        return self.publish_file(tag, f"k0s-{tag}-{arch}", content, listed_sum)

    def publish_file(self, tag: str, name: str, content: bytes, listed_sum: str | None = None) -> str:
        self.files[f"/{tag}/{name}"] = content
        line = f"{listed_sum or hashlib.sha256(content).hexdigest()} *{name}\n"
        sums_path = f"/{tag}/sha256sums.txt"
        self.files[sums_path] = self.files.get(sums_path, b"") + line.encode()
        return name


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        fake = self.server.fake
        fake.requests.append(self.path)
        if fake.failures:
            self.send_error(fake.failures.pop(0))
            return
        body = fake.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in fake.truncated:
            body = body[: len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    fake: FakeReleases


@pytest.fixture
def releases(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeReleases]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = FakeReleases(base=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    # A proxy from the environment would send these requests off the machine.
    for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("K0SLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(release.RELEASES_URL_ENV, server.fake.base + "/")
    monkeypatch.setenv(release.STABLE_URL_ENV, f"{server.fake.base}/stable.txt")
    monkeypatch.setattr(release, "_retry_wait", wait_none())
    yield server.fake
    server.shutdown()
    server.server_close()


def _cache_dir(tmp_path: Path, tag: str = TAG) -> Path:
    return tmp_path / "cache" / "k0s" / tag


def _elf_header(machine: int, big_endian: bool = False) -> bytes:
    """The first 20 bytes of a 64-bit ELF executable: e_ident, e_type, e_machine."""
    order = "big" if big_endian else "little"
    ident = b"\x7fELF" + bytes([2, 2 if big_endian else 1, 1]) + bytes(9)
    return ident + (2).to_bytes(2, order) + machine.to_bytes(2, order)


def _executable(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    path.chmod(0o755)
    return path


# --- versions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["v1.31.1+k0s.0", "v1.36.2+k0s.1", "v1.30.0-rc.1+k0s.0", " v1.31.1+k0s.0\n"])
def test_release_tags_are_accepted(tag: str) -> None:
    assert release.resolve_version(tag) == tag.strip()


def test_no_version_means_the_pinned_default() -> None:
    assert release.resolve_version(None) == release.DEFAULT_K0S_VERSION == "v1.36.4+k0s.1"


@pytest.mark.parametrize("bad", ["latest", "v1.31", "v1.31.1", "v1.31.1-k0s.0", "v1.31.1+k3s.1", ""])
def test_malformed_version_names_it_and_the_shape(bad: str) -> None:
    with pytest.raises(K0slabError) as caught:
        release.resolve_version(bad)
    assert repr(bad) in caught.value.message
    assert "v<major>.<minor>.<patch>+k0s.<n>" in caught.value.hint


def test_version_without_v_suggests_the_tag() -> None:
    with pytest.raises(K0slabError, match=r"did you mean v1\.31\.1\+k0s\.0\?"):
        release.resolve_version("1.31.1+k0s.0")


def test_stable_is_read_from_stable_txt(releases: FakeReleases) -> None:
    releases.files["/stable.txt"] = b"v1.33.4+k0s.0\n"
    assert release.resolve_version("stable") == "v1.33.4+k0s.0"
    assert releases.requests == ["/stable.txt"]


def test_stable_txt_with_garbage_is_refused(releases: FakeReleases) -> None:
    releases.files["/stable.txt"] = b"<html>moved</html>"
    with pytest.raises(K0slabError, match="does not hold a k0s release tag") as caught:
        release.resolve_version("stable")
    assert release.DEFAULT_K0S_VERSION in caught.value.hint


def test_stable_then_fetch_downloads_that_release(releases: FakeReleases) -> None:
    releases.files["/stable.txt"] = b"v1.33.4+k0s.0\n"
    releases.publish("v1.33.4+k0s.0", "amd64", b"stable k0s")
    path = release.binary_for("stable", None, "amd64", progress=lambda _: None)
    assert path.name == "k0s-v1.33.4+k0s.0-amd64"
    assert path.read_bytes() == b"stable k0s"


# --- downloads ----------------------------------------------------------------------------------


def test_download_verifies_caches_and_is_reused_offline(releases: FakeReleases, tmp_path: Path) -> None:
    content = b"\x7fELF fake k0s " * 100_000
    name = releases.publish(TAG, "amd64", content)
    releases.publish(TAG, "arm64", b"other arch")
    lines: list[str] = []

    path = release.fetch_binary(TAG, "amd64", progress=lines.append)

    assert path == _cache_dir(tmp_path) / name
    assert path.read_bytes() == content
    assert path.stat().st_mode & 0o777 == 0o755
    digest = hashlib.sha256(content).hexdigest()
    assert (path.parent / f"{name}.sha256").read_text() == f"{digest} *{name}\n"
    assert releases.requests == [f"/{TAG}/sha256sums.txt", f"/{TAG}/{name}"]
    assert any("of 1.3M" in line for line in lines), lines
    assert any("downloaded 1.3M" in line for line in lines), lines
    assert sorted(p.name for p in path.parent.iterdir()) == [name, f"{name}.sha256"]

    assert release.fetch_binary(TAG, "amd64", progress=lines.append) == path
    assert len(releases.requests) == 2, "a cached binary must not touch the network"


def test_damaged_cache_is_downloaded_again(releases: FakeReleases) -> None:
    releases.publish(TAG, "amd64", b"good k0s")
    path = release.fetch_binary(TAG, "amd64", progress=lambda _: None)
    path.write_bytes(b"bit rot")
    assert release.fetch_binary(TAG, "amd64", progress=lambda _: None).read_bytes() == b"good k0s"
    assert len(releases.requests) == 4


def test_checksum_mismatch_deletes_the_download(releases: FakeReleases, tmp_path: Path) -> None:
    releases.publish(TAG, "amd64", b"tampered k0s", listed_sum="ab" * 32)
    with pytest.raises(K0slabError, match="checksum mismatch for k0s-v1.30.4\\+k0s.0-amd64") as caught:
        release.fetch_binary(TAG, "amd64", progress=lambda _: None)
    assert "deleted" in caught.value.hint
    assert list(_cache_dir(tmp_path).iterdir()) == []
    # A checksum error is not retried.
    assert len(releases.requests) == 2


def test_unknown_version_is_one_line_naming_it(releases: FakeReleases) -> None:
    with pytest.raises(K0slabError) as caught:
        release.fetch_binary("v1.99.0+k0s.0", "amd64", progress=lambda _: None)
    text = str(caught.value)
    assert "k0s v1.99.0+k0s.0 is not a published release" in text
    assert release.RELEASES_PAGE in text and "--k0s-binary" in text
    assert "\n" not in text
    # A 404 is not retried.
    assert releases.requests == ["/v1.99.0+k0s.0/sha256sums.txt"]


def test_arch_missing_from_release(releases: FakeReleases) -> None:
    releases.publish(TAG, "amd64", b"k0s")
    with pytest.raises(K0slabError, match="publishes no k0s-v1.30.4\\+k0s.0-arm64"):
        release.fetch_binary(TAG, "arm64", progress=lambda _: None)


def test_unknown_arch_is_refused_before_any_request(releases: FakeReleases) -> None:
    with pytest.raises(K0slabError, match="unknown arch 'riscv64'"):
        release.fetch_binary(TAG, "riscv64", progress=lambda _: None)
    assert releases.requests == []


def test_transient_errors_are_retried(releases: FakeReleases) -> None:
    releases.publish(TAG, "amd64", b"k0s")
    releases.failures = [503, 502]
    assert release.fetch_binary(TAG, "amd64", progress=lambda _: None).read_bytes() == b"k0s"
    assert len(releases.requests) == 4


def test_dropped_connections_leave_nothing_and_say_how_to_work_offline(
    releases: FakeReleases, tmp_path: Path
) -> None:
    name = releases.publish(TAG, "amd64", b"k0s binary bytes")
    releases.truncated.add(f"/{TAG}/{name}")
    with pytest.raises(K0slabError, match="connection closed after") as caught:
        release.fetch_binary(TAG, "amd64", progress=lambda _: None)
    assert "--k0s-binary PATH" in caught.value.hint
    assert list(_cache_dir(tmp_path).iterdir()) == []
    assert releases.requests.count(f"/{TAG}/{name}") == release._ATTEMPTS


def test_unreachable_server_says_how_to_work_offline(releases: FakeReleases, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv(release.RELEASES_URL_ENV, f"http://127.0.0.1:{closed_port}")
    with pytest.raises(K0slabError, match="cannot download the checksums of k0s") as caught:
        release.fetch_binary(TAG, "amd64", progress=lambda _: None)
    assert "work offline" in caught.value.hint and "--k0s-binary PATH" in caught.value.hint


def test_stale_part_file_of_a_dead_process_is_removed(releases: FakeReleases, tmp_path: Path) -> None:
    name = releases.publish(TAG, "amd64", b"k0s")
    folder = _cache_dir(tmp_path)
    folder.mkdir(parents=True)
    # Above the kernel's pid_max, so no live process has it.
    (folder / f".{name}.99999999.part").write_bytes(b"half")
    release.fetch_binary(TAG, "amd64", progress=lambda _: None)
    assert sorted(p.name for p in folder.iterdir()) == [name, f"{name}.sha256"]


# --- local binaries -----------------------------------------------------------------------------


def test_elf_arch_reads_e_machine(tmp_path: Path) -> None:
    assert release.elf_arch(_executable(tmp_path / "a", _elf_header(62))) == "amd64"
    assert release.elf_arch(_executable(tmp_path / "b", _elf_header(183))) == "arm64"
    assert release.elf_arch(_executable(tmp_path / "c", _elf_header(183, big_endian=True))) == "arm64"
    assert release.elf_arch(_executable(tmp_path / "d", _elf_header(8))) == "ELF machine 8"
    assert release.elf_arch(_executable(tmp_path / "e", b"#!/bin/sh\necho v1.31.1+k0s.0\n")) is None
    assert release.elf_arch(_executable(tmp_path / "f", b"\x7fELF")) is None


@pytest.mark.parametrize(("machine", "arch"), [(62, "amd64"), (183, "arm64")])
def test_local_binary_of_the_node_arch_is_accepted(tmp_path: Path, machine: int, arch: str) -> None:
    path = _executable(tmp_path / "k0s", _elf_header(machine) + bytes(100))
    assert release.check_local_binary(path, arch) == path


@pytest.mark.parametrize(("machine", "node", "built"), [(62, "arm64", "amd64"), (183, "amd64", "arm64")])
def test_local_binary_of_another_arch_names_both(tmp_path: Path, machine: int, node: str, built: str) -> None:
    path = _executable(tmp_path / "k0s", _elf_header(machine))
    with pytest.raises(K0slabError, match=f"is built for {built}, but the node is {node}"):
        release.check_local_binary(path, node)


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_local_script_is_arch_neutral(tmp_path: Path, arch: str) -> None:
    path = _executable(tmp_path / "k0s", b"#!/bin/sh\necho v1.31.1+k0s.0\n")
    assert release.check_local_binary(path, arch) == path


def test_local_binary_missing(tmp_path: Path) -> None:
    with pytest.raises(K0slabError, match="does not exist"):
        release.check_local_binary(tmp_path / "nope", "amd64")


def test_local_binary_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(K0slabError, match="is not a regular file"):
        release.check_local_binary(tmp_path, "amd64")


def test_local_binary_not_executable_hints_chmod(tmp_path: Path) -> None:
    path = tmp_path / "k0s"
    path.write_bytes(_elf_header(62))
    path.chmod(0o644)
    with pytest.raises(K0slabError, match="is not executable") as caught:
        release.check_local_binary(path, "amd64")
    assert caught.value.hint == f"run: chmod +x {path}"


def test_local_file_that_is_no_program(tmp_path: Path) -> None:
    path = _executable(tmp_path / "k0s.tar.gz", b"\x1f\x8b\x08\x00 not a program")
    with pytest.raises(K0slabError, match="neither an ELF binary nor a script"):
        release.check_local_binary(path, "amd64")


def test_binary_for_prefers_the_local_binary(releases: FakeReleases, tmp_path: Path) -> None:
    path = _executable(tmp_path / "k0s", _elf_header(183))
    assert release.binary_for("v1.31.1+k0s.0", path, "arm64", progress=lambda _: None) == path
    assert releases.requests == []


def test_binary_for_downloads_the_default_without_a_version(releases: FakeReleases) -> None:
    releases.publish(release.DEFAULT_K0S_VERSION, "arm64", b"default k0s")
    path = release.binary_for(None, None, "arm64", progress=lambda _: None)
    assert path.name == f"k0s-{release.DEFAULT_K0S_VERSION}-arm64"
    assert path.read_bytes() == b"default k0s"


def test_a_mirror_that_changes_binary_and_sums_is_refused_by_the_pins(
    releases: FakeReleases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = releases.publish(TAG, "amd64", b"a compromised k0s")  # its sums file agrees with it
    pins_file = tmp_path / "pins.json"
    pins_file.write_text(json.dumps({"verified": True, "versions": {TAG: {name: "cd" * 32}}}))
    monkeypatch.setattr(pins, "PINS_FILE", pins_file)
    with pytest.raises(K0slabError, match=f"k0slab pins {'cd' * 32}"):
        release.fetch_binary(TAG, "amd64", progress=lambda _: None)
    assert not _cache_dir(tmp_path).exists() or list(_cache_dir(tmp_path).iterdir()) == []


def test_shipped_pins_invent_no_sums() -> None:
    """k0slab's build host cannot fetch the real sums: the shipped file says so and pins nothing."""
    shipped = pins.load_pins()
    assert shipped["verified"] is False and shipped["versions"] == {}


def test_pin_check_prints_what_the_release_lists(releases: FakeReleases, capsys: pytest.CaptureFixture[str]) -> None:
    name = releases.publish(TAG, "amd64", b"k0s")
    assert pins.main([TAG]) == 0
    assert json.loads(capsys.readouterr().out) == {TAG: {name: hashlib.sha256(b"k0s").hexdigest()}}


def test_airgap_bundle_is_downloaded_verified_and_cached_with_progress(releases: FakeReleases, tmp_path: Path) -> None:
    tag = "v1.36.4+k0s.1"
    name = releases.publish_file(tag, "k0s-airgap-bundle-v1.36.4+k0s.1-linux-arm64.tar", b"bundle" * 4096)
    lines: list[str] = []
    path = airgap.fetch_bundle(tag, "arm64", progress=lines.append)
    assert path == _cache_dir(tmp_path, tag) / name and path.read_bytes() == b"bundle" * 4096
    assert any(line.startswith(f"downloading {name}") for line in lines)
    assert f"{name}: verified sha256 {hashlib.sha256(b'bundle' * 4096).hexdigest()}" in lines
    asked = len(releases.requests)
    assert airgap.fetch_bundle(tag, "arm64", progress=lines.append) == path
    assert len(releases.requests) == asked  # from the cache, no request


def test_airgap_bundle_with_a_wrong_sum_is_refused_and_deleted(releases: FakeReleases, tmp_path: Path) -> None:
    tag = "v1.35.2+k0s.0"  # before v1.36 the asset has no extension and no "linux-"
    releases.publish_file(tag, "k0s-airgap-bundle-v1.35.2+k0s.0-amd64", b"bundle", listed_sum="0" * 64)
    with pytest.raises(K0slabError, match="checksum mismatch for k0s-airgap-bundle-v1.35.2\\+k0s.0-amd64") as info:
        airgap.fetch_bundle(tag, "amd64", progress=lambda _: None)
    assert not (_cache_dir(tmp_path, tag) / "k0s-airgap-bundle-v1.35.2+k0s.0-amd64").exists()
    assert info.value.hint.startswith("the download was deleted")


def test_missing_airgap_bundle_names_the_local_flag(releases: FakeReleases) -> None:
    releases.publish(TAG, "amd64", b"binary")
    with pytest.raises(K0slabError, match="publishes no k0s-airgap-bundle-v1.30.4\\+k0s.0-amd64") as info:
        airgap.fetch_bundle(TAG, "amd64", progress=lambda _: None)
    assert "--airgap-bundle PATH" in info.value.hint
