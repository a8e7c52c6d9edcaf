"""A catalogue of bad inputs, each through the real command line.

Every case runs `python -m invoke ...` from the repository root with K0SLAB_HOME and K0SLAB_CACHE in
a fresh temporary folder and libvirt's in-process test driver, and asserts what a user should see:
a non-zero exit, exactly one stderr line `error: <message> (<hint>)` naming the bad value and the
fix, no traceback, and no file created or changed anywhere under the temporary folder.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from backup_files import backup_file

from k0slab.vms import image as imagemod
from k0slab.cluster import pki
from k0slab.vms.arch import host_arch
from k0slab.core.paths import REPO_ROOT
from tests.standin.standin_build import standin_binary

# A case that slips past validation would start creating a lab; fail it instead of waiting on a boot.
COMMAND_TIMEOUT_S = 30
OTHER_ARCH = {"amd64": "arm64", "arm64": "amd64"}
ELF_MACHINE = {"amd64": 62, "arm64": 183}


@dataclass(frozen=True)
class Sandbox:
    """The temporary world one case runs in; `work` holds inputs (profiles, binaries), not k0slab files."""

    root: Path
    home: Path
    cache: Path
    work: Path


Setup = Callable[[Sandbox], None]


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]  # after `invoke`; "{work}" is replaced by the sandbox's input folder, "{standin}" by
    # the k0s stand-in built for the current sources
    names: str  # the bad value as the error must quote it
    hint: str  # part of the fix in the parenthesised hint
    setup: tuple[Setup, ...] = field(default_factory=tuple)


# --- setups -------------------------------------------------------------------------------------


def cached_image(box: Sandbox) -> None:
    """A cache entry for the current debian-12 recipe, as image.build leaves it, without building:
    a real (empty) qcow2 so that the disk-size check can ask qemu-img for its virtual size."""
    recipe = imagemod.load_recipe("debian-12")
    arch = host_arch()
    folder = box.cache / "images" / f"debian-12-{arch}-{recipe.cache_key(arch)}"
    folder.mkdir(parents=True)
    (folder / "image.json").write_text(json.dumps({
        "name": "debian-12", "arch": arch, "source": "test", "key": recipe.cache_key(arch),
        "built_at": "2026-01-01T00:00:00+00:00", "build_seconds": 1.0,
    }))
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(folder / "base.qcow2"), recipe.disk_size],
                   check=True)


def profile_file(name: str, text: str) -> Setup:
    def write(box: Sandbox) -> None:
        (box.work / name).write_text(text)

    return write


def non_executable_binary(box: Sandbox) -> None:
    (box.work / "k0s").write_bytes(b"#!/bin/sh\n")
    (box.work / "k0s").chmod(0o644)


def other_arch_binary(box: Sandbox) -> None:
    """A minimal little-endian ELF header (e_ident, e_type, e_machine) for the arch the host is not."""
    machine = ELF_MACHINE[OTHER_ARCH[host_arch()]]
    header = b"\x7fELF\x02\x01\x01" + bytes(9) + (2).to_bytes(2, "little") + machine.to_bytes(2, "little")
    (box.work / "k0s").write_bytes(header + bytes(44))
    (box.work / "k0s").chmod(0o755)


def _state(name: str, profile: str | None, nodes: dict[str, object] | None = None) -> str:
    return json.dumps({
        "version": 1, "name": name, "subnet_index": 7, "network": f"k0slab-{name}", "bridge": "k0slab7",
        "profile": profile, "nodes": nodes or {},
    }, indent=2)


def lab_of_other_profile(box: Sandbox) -> None:
    folder = box.home / "labs" / "taken"
    folder.mkdir(parents=True, mode=0o700)
    (folder / "state.json").write_text(_state("taken", "single"))


def up_lab(box: Sandbox) -> None:
    """A lab that looks up to lab.user: a controller in its state, a kubeconfig, and its CA, so that a
    rejected request has nothing left to create."""
    folder = box.home / "labs" / "default"
    (folder / "pki").mkdir(parents=True)
    controller = {
        "name": "node1", "index": 11, "arch": host_arch(), "cpus": 2, "memory_mib": 2048, "disk_bytes": 5 << 30,
        "image": "debian-12", "mac": "52:54:00:d5:07:0b", "ip": "10.213.7.11", "role": "controller+worker",
    }
    (folder / "state.json").write_text(_state("default", "default", {"node1": controller}))
    (folder / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    cert, key = pki.create_ca()
    (folder / "pki" / "ca.crt").write_bytes(cert)
    (folder / "pki" / "ca.key").write_bytes(key)


def corrupt_state(box: Sandbox) -> None:
    folder = box.home / "labs" / "default"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text('{"name": "default", "subnet_in')


def backup_in_work(box: Sandbox) -> None:
    backup_file(box.work)


def truncated_backup(box: Sandbox) -> None:
    path = backup_file(box.work)
    path.write_bytes(path.read_bytes()[:-6000])  # into the last members, past the zero blocks at the end


def altered_backup(box: Sandbox) -> None:
    path = backup_file(box.work)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


NODE1 = "  - {name: node1, role: controller+worker}\n"

CASES = [
    # --- vm.launch ---
    Case("vm.launch-memory-unit", ["vm.launch", "node1", "--memory", "2X"], "'2X'", "e.g. 2G or 512M"),
    Case("vm.launch-memory-too-small", ["vm.launch", "node1", "--memory", "100M"], "'100M'", "at least 256M"),
    Case("vm.launch-cpus-zero", ["vm.launch", "node1", "--cpus", "0"], "--cpus 0", "from 1 to 64"),
    Case("vm.launch-cpus-not-a-number", ["vm.launch", "node1", "--cpus", "two"], "'two'", "whole number"),
    Case("vm.launch-arch", ["vm.launch", "node1", "--arch", "sparc"], "'sparc'", "amd64, arm64"),
    Case("vm.launch-image", ["vm.launch", "node1", "--image", "nope"], "'nope'", "choose one of: debian-12"),
    Case("vm.launch-name", ["vm.launch", "Node_1"], "'Node_1'", "lowercase letters"),
    Case("vm.launch-lab-name", ["vm.launch", "node1", "--lab", "Bad_Name"], "'Bad_Name'", "lowercase letters"),
    Case("vm.launch-disk-below-cached-image", ["vm.launch", "node1", "--disk", "1G"], "'1G'", "--disk 3G or more",
         (cached_image,)),
    # Without a cached image the recipe's size decides, before anything is built.
    Case("vm.launch-disk-below-recipe", ["vm.launch", "node1", "--disk", "1G"], "'1G'", "--disk 3G or more"),
    # --- lab.up: command line ---
    Case("lab.up-nodes-zero", ["lab.up", "--nodes", "0"], "--nodes 0", "at least 1 node"),
    Case("lab.up-nodes-not-a-number", ["lab.up", "--nodes", "three"], "'three'", "whole number"),
    Case("lab.up-profile-unknown", ["lab.up", "--profile", "nope"], "'nope'", "one of: "),
    Case("lab.up-memory-unit", ["lab.up", "--memory", "2X"], "'2X'", "e.g. 2G or 512M"),
    Case("lab.up-arch", ["lab.up", "--arch", "sparc"], "'sparc'", "amd64, arm64"),
    Case("lab.up-k0s-version-malformed", ["lab.up", "--k0s-version", "1.31"], "'1.31'", "v<major>.<minor>"),
    Case("lab.up-k0s-binary-missing", ["lab.up", "--k0s-binary", "/missing/k0s"], "/missing/k0s",
         "path of a k0s binary"),
    Case("lab.up-k0s-binary-not-executable", ["lab.up", "--k0s-binary", "{work}/k0s"], "{work}/k0s", "chmod +x",
         (non_executable_binary,)),
    Case("lab.up-k0s-binary-other-arch", ["lab.up", "--k0s-binary", "{work}/k0s"],
         f"built for {OTHER_ARCH[host_arch()]}", f"k0s-<version>-{host_arch()}", (other_arch_binary,)),
    Case("lab.up-lab-name", ["lab.up", "--lab", "Bad_Name"], "'Bad_Name'", "lowercase letters"),
    Case("lab.up-lab-of-other-profile", ["lab.up", "--lab", "taken"], "'single'", "lab.down --lab taken",
         (lab_of_other_profile,)),
    # The stand-in k0s binary keeps a case that slipped past validation off the network.
    Case("lab.up-disk-below-image", ["lab.up", "--disk", "1G", "--k0s-binary", "{standin}"], "'1G'",
         "--disk 3G or more"),
    Case("lab.up-memory-too-small", ["lab.up", "--memory", "100M", "--k0s-binary", "{standin}"], "'100M'",
         "at least 256M"),
    Case("lab.up-host-memory", ["lab.up", "--memory", "100T"], "memory", "smaller --memory"),
    # --- lab.up: profile files ---
    Case("profile-unknown-field", ["lab.up", "--profile", "{work}/p.yaml"], "'colour'", "profiles/default.yaml",
         (profile_file("p.yaml", "name: p\ncolour: blue\nnodes:\n" + NODE1),)),
    Case("profile-no-nodes", ["lab.up", "--profile", "{work}/p.yaml"], "nodes: a lab needs at least one node",
         "profiles/default.yaml",
         (profile_file("p.yaml", "name: p\nnodes: []\n"),)),
    Case("profile-duplicate-names", ["lab.up", "--profile", "{work}/p.yaml"], "'node1'", "profiles/default.yaml",
         (profile_file("p.yaml", "name: p\nnodes:\n" + NODE1 + "  - {name: node1}\n"),)),
    Case("profile-two-controllers", ["lab.up", "--profile", "{work}/p.yaml"], "found 2", "profiles/default.yaml",
         (profile_file("p.yaml", "name: p\nnodes:\n" + NODE1 + "  - {name: node2, role: controller}\n"),)),
    Case("profile-first-node-worker", ["lab.up", "--profile", "{work}/p.yaml"], "(node2)", "profiles/default.yaml",
         (profile_file("p.yaml", "name: p\nnodes:\n  - {name: node2}\n" + NODE1),)),
    Case("profile-memory-unit", ["lab.up", "--profile", "{work}/p.yaml"], "'2X'", "profiles/default.yaml",
         (profile_file("p.yaml", "name: p\nnodes:\n  - {name: node1, role: controller+worker, memory: 2X}\n"),)),
    Case("profile-arch", ["lab.up", "--profile", "{work}/p.yaml"], "'sparc'", "profiles/default.yaml",
         (profile_file("p.yaml", "name: p\ndefaults: {arch: sparc}\nnodes:\n" + NODE1),)),
    Case("profile-node-name", ["lab.up", "--profile", "{work}/p.yaml"], "'Node_1'", "lowercase letters",
         (profile_file("p.yaml", "name: p\nnodes:\n  - {name: Node_1, role: controller+worker}\n"),)),
    Case("profile-invalid-yaml", ["lab.up", "--profile", "{work}/p.yaml"], "{work}/p.yaml", "fix the YAML near line",
         (profile_file("p.yaml", "name: p\nnodes: [\n"),)),
    # --- lab.user / lab.smoke ---
    Case("lab.user-reserved-name", ["lab.user", "admin", "--group", "dev"], "'admin'", "pick another name"),
    Case("lab.user-invalid-name", ["lab.user", "Bad_User", "--group", "dev"], "'Bad_User'", "lowercase letters"),
    Case("lab.user-no-action", ["lab.user", "demo"], "'demo'", "--group G"),
    Case("lab.user-empty-group", ["lab.user", "demo", "--group", ""], "group ''", "give each group separately",
         (up_lab,)),
    Case("lab.user-days-zero", ["lab.user", "demo", "--group", "dev", "--days", "0"], "--days 0", "at least 1",
         (up_lab,)),
    Case("lab.user-days-not-a-number", ["lab.user", "demo", "--group", "dev", "--days", "ten"], "'ten'",
         "whole number"),
    Case("lab.user-lab-missing", ["lab.user", "demo", "--group", "dev"], "'default'", "invoke lab.up"),
    Case("lab.smoke-unknown-check", ["lab.smoke", "--only", "nodes,bogus"], "'bogus'", "valid checks: nodes"),
    # --- lab.upgrade / lab.backup / lab.restore ---
    Case("lab.upgrade-lab-not-up", ["lab.upgrade", "--k0s-version", "v1.34.1+k0s.0", "--lab", "nolab"], "'nolab'",
         "invoke lab.up"),
    Case("lab.upgrade-two-sources", ["lab.upgrade", "--k0s-version", "v1.34.1+k0s.0", "--k0s-binary", "{work}/k0s"],
         "exactly one of --k0s-version and --k0s-binary", "e.g. invoke lab.upgrade"),
    Case("lab.upgrade-bad-version", ["lab.upgrade", "--k0s-version", "1.34.1"], "'1.34.1'", "k0s release tag like"),
    Case("lab.upgrade-concurrency", ["lab.upgrade", "--k0s-version", "v1.34.1+k0s.0", "--concurrency", "0"],
         "--concurrency 0", "how many workers"),
    Case("lab.backup-lab-missing", ["lab.backup", "--lab", "nolab"], "'nolab'", "invoke lab.up"),
    Case("lab.restore-missing-archive", ["lab.restore", "{work}/nope.tar", "--lab", "new"], "{work}/nope.tar",
         "the file lab.backup wrote"),
    Case("lab.restore-truncated-archive", ["lab.restore", "{work}/lab.backup.tar", "--lab", "new"],
         "{work}/lab.backup.tar", "damaged or truncated", (truncated_backup,)),
    Case("lab.restore-altered-archive", ["lab.restore", "{work}/lab.backup.tar", "--lab", "new"],
         "does not match its sha256", "damaged or truncated", (altered_backup,)),
    Case("lab.restore-into-existing-lab", ["lab.restore", "{work}/lab.backup.tar", "--lab", "default"],
         "'default' already exists", "choose another --lab", (up_lab, backup_in_work)),
    # --- other tasks ---
    Case("lab.kubeconfig-lab-missing", ["lab.kubeconfig"], "'default'", "invoke lab.up --lab default"),
    Case("lab.status-corrupt-state", ["lab.status"], "state.json is corrupt", "invoke lab.prune", (corrupt_state,)),
    Case("vm.exec-no-command", ["vm.exec", "node1"], "no command given", "put it after --"),
    Case("vm.transfer-no-vm-side", ["vm.transfer", "./a", "./b"], "'./a' -> './b'", "node1:/path"),
]


def _snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under root with its mode, size and mtime: any created, removed or rewritten file shows."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        found[str(path.relative_to(root))] = (info.st_mode, info.st_size if path.is_file() else 0, info.st_mtime_ns)
    return found


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run in a session of its own, so that a timeout also ends what it started (an image build)."""
    with subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"{argv[3:]} ran {COMMAND_TIMEOUT_S}s: it got past validation and started creating")
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clear_line_and_creates_nothing(case: Case, tmp_path: Path) -> None:
    box = Sandbox(root=tmp_path, home=tmp_path / "home", cache=tmp_path / "cache", work=tmp_path / "work")
    box.work.mkdir()
    if cached_image in case.setup and shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is needed to make a cached image")
    for setup in case.setup:
        setup(box)
    before = _snapshot(tmp_path)
    env = {
        **os.environ, "K0SLAB_HOME": str(box.home), "K0SLAB_CACHE": str(box.cache),
        "LIBVIRT_DEFAULT_URI": "test:///default", "COLUMNS": "500",
    }
    argv = [word.replace("{work}", str(box.work)).replace("{standin}", str(standin_binary())) for word in case.argv]
    result = _run([sys.executable, "-m", "invoke", *argv], env)
    lines = result.stderr.splitlines()
    assert result.returncode != 0, f"exit 0 for {argv}: {result.stdout}"
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert case.names.replace("{work}", str(box.work)) in lines[0] and case.hint in lines[0], lines[0]
    assert lines[0].endswith(")"), f"no hint: {lines[0]}"
    assert _snapshot(tmp_path) == before, "files were created or changed"
