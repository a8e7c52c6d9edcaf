"""Which libvirtd the harness and host.up use, and that host.down stops only what k0slab started.

Fakes only: the pidfile folder is temporary, an "alive" daemon is a copy of sleep named libvirtd (host.down
signals a pid only when its process has the daemon's name), and every command or signal host.up /
host.down would send is intercepted. No libvirtd is ever started here.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from k0slab.vms import hostenv

DEAD_PID = 2**22 + 17  # above Linux's pid_max limit: no such process
NO_NETNS = "firstrun-unit-none"  # a namespace name that does not exist, so host.down deletes none


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(hostenv, "RUN_DIR", tmp_path)
    return tmp_path


@pytest.fixture
def no_side_effects(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record every command and signal instead of running or sending it."""
    done: list[object] = []

    def kill(pid: int, sig: int) -> None:
        if sig == 0:  # "is it alive?" stays real
            os.kill(pid, 0)
        else:
            done.append(("kill", pid, sig))

    monkeypatch.setattr(hostenv, "os", SimpleNamespace(kill=kill, environ=os.environ, geteuid=os.geteuid))
    monkeypatch.setattr(hostenv, "run", lambda argv, **_: done.append(argv))
    monkeypatch.setattr(hostenv, "_stop_guests_and_networks", lambda: done.append("stop guests") or [])
    return done


@pytest.fixture
def fake_libvirtd(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A live process whose name (/proc/PID/comm) is libvirtd: a copy of sleep."""
    binary = tmp_path / "bin" / "libvirtd"
    binary.parent.mkdir()
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    child = subprocess.Popen([str(binary), "30"])
    comm = Path(f"/proc/{child.pid}/comm")
    deadline = time.monotonic() + 5
    while comm.read_text().strip() != "libvirtd":  # until the child has exec'd the copy
        assert time.monotonic() < deadline, "the fake libvirtd did not start"
        time.sleep(0.01)
    yield child
    child.kill()
    child.wait()


def test_a_pidfile_naming_another_program_is_not_a_daemon(run_dir: Path) -> None:
    """A stale pidfile whose pid now belongs to another program must never be signalled."""
    pidfile(run_dir, "k0slab-dev", "libvirtd", os.getpid())
    assert hostenv.find_libvirt(answers=lambda: False) == hostenv.LibvirtFound("none")


def pidfile(run_dir: Path, netns: str, daemon: str, pid: int) -> None:
    (run_dir / f"{netns}-{daemon}.pid").write_text(f"{pid}\n")


def test_nothing_running_means_start_one(run_dir: Path) -> None:
    pidfile(run_dir, "old", "libvirtd", DEAD_PID)  # a stale pidfile from a crashed run does not count
    assert hostenv.find_libvirt(answers=lambda: False) == hostenv.LibvirtFound("none")


def test_k0slabs_private_libvirtd_is_found_by_its_pidfile(run_dir: Path,
                                                         fake_libvirtd: subprocess.Popen[bytes]) -> None:
    pidfile(run_dir, "k0slab-dev", "libvirtd", fake_libvirtd.pid)
    # Its socket answers from the main namespace too: the pidfile is what tells it apart.
    found = hostenv.find_libvirt(answers=lambda: True)
    assert found == hostenv.LibvirtFound("private", "k0slab-dev")
    assert "export K0SLAB_NETNS=k0slab-dev" in found.describe()


def test_a_libvirtd_without_k0slabs_pidfile_is_the_systems(run_dir: Path) -> None:
    pidfile(run_dir, "gone", "libvirtd", DEAD_PID)
    assert hostenv.find_libvirt(answers=lambda: True) == hostenv.LibvirtFound("system")


def test_host_up_uses_the_systems_libvirtd_and_starts_nothing(run_dir: Path, no_side_effects: list[object],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostenv, "libvirt_answers", lambda: True)
    monkeypatch.setattr(hostenv, "find_libvirt", lambda: hostenv.LibvirtFound("system"))
    assert "the system's libvirtd answers" in hostenv.host_up("k0slab-test")
    assert no_side_effects == []


def test_host_up_uses_k0slabs_libvirtd_in_another_namespace(run_dir: Path, no_side_effects: list[object],
                                                            fake_libvirtd: subprocess.Popen[bytes]) -> None:
    pidfile(run_dir, "k0slab-dev", "libvirtd", fake_libvirtd.pid)
    summary = hostenv.host_up("k0slab-test")
    assert "export K0SLAB_NETNS=k0slab-dev" in summary and "nothing to start" in summary
    assert no_side_effects == []


def test_host_down_leaves_a_libvirtd_it_did_not_start_alone(run_dir: Path, no_side_effects: list[object]) -> None:
    assert hostenv.host_down(NO_NETNS) == f"stopped nothing; namespace {NO_NETNS} removed"
    assert no_side_effects == []


def test_host_down_stops_what_host_up_started(run_dir: Path, no_side_effects: list[object],
                                              monkeypatch: pytest.MonkeyPatch,
                                              fake_libvirtd: subprocess.Popen[bytes]) -> None:
    child = fake_libvirtd
    pidfile(run_dir, NO_NETNS, "libvirtd", child.pid)
    # The fake kill does not end the child: host.down waits its bounded 10 s, then kills for sure.
    monkeypatch.setattr(hostenv.time, "sleep", lambda _: None)
    summary = hostenv.host_down(NO_NETNS)
    assert f"libvirtd (pid {child.pid})" in summary
    assert no_side_effects[0] == "stop guests"
    assert ("kill", child.pid, 15) in no_side_effects and ("kill", child.pid, 9) in no_side_effects
    assert not (run_dir / f"{NO_NETNS}-libvirtd.pid").exists()


def test_harness_acts_on_the_decision_for_each_case() -> None:
    """scripts/harness.sh's branches: one per kind that host.status --brief prints."""
    harness = (Path(__file__).resolve().parents[2] / "scripts" / "harness.sh").read_text()
    for branch in ("none)", '"private "*)', "system)"):
        assert f"    {branch}\n" in harness
    assert "host.status --brief" in harness


def test_kvm_probe_without_any_kernel_builds_the_image_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19: host.up before any image left libvirtd unprobed (and unmasked) on a broken /dev/kvm."""
    device = tmp_path / "kvm"
    device.touch()
    monkeypatch.setattr(hostenv, "KVM_DEVICE", device)
    monkeypatch.setattr(hostenv, "_probe_kernel", lambda: None)
    kernel = tmp_path / "vmlinuz"
    built: list[str] = []

    def build(name: str, arch: str, *, progress) -> SimpleNamespace:
        built.append(name)
        return SimpleNamespace(kernel=kernel)

    probed: list[Path] = []
    monkeypatch.setattr(hostenv.image, "build", build)
    monkeypatch.setattr(hostenv.accel, "choose_accel",
                        lambda path, arch: probed.append(path) or ("tcg", "a kernel under KVM did not finish booting"))
    said: list[str] = []
    assert hostenv._kvm_is_broken(said.append) == (True, "a kernel under KVM did not finish booting")
    assert built == [hostenv.image.DEFAULT_RECIPE] and probed == [kernel]
    assert said and "building image debian-12 first" in said[0]


def test_no_kvm_device_needs_no_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostenv, "KVM_DEVICE", tmp_path / "absent")
    monkeypatch.setattr(hostenv.image, "build", lambda *a, **k: pytest.fail("built an image for nothing"))
    assert hostenv._kvm_is_broken(lambda line: None) == (False, "no /dev/kvm")
