"""A catalogue of bad and hostile inputs, each through the real command line (issue 15).

Every case runs invoke's own Program (`invoke -r REPO ...`, forked from this process so that imports
are paid once) in a sandbox of its own: K0SLAB_HOME, K0SLAB_CACHE, a
fake HOME with a ~/.kube/config, and the working directory all live in a fresh temporary folder;
libvirt is an unreachable socket and K0SLAB_NETNS a namespace that does not exist, so a case that
slipped past validation fails at once instead of creating a VM or sending a packet. Each case must
show what a user should see: a non-zero exit, exactly one stderr line `error: <message> (<hint>)`
naming the bad value and the fix, no traceback, and nothing created, changed or deleted anywhere
in the sandbox. The cases run in parallel processes, so the catalogue takes seconds, not minutes.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from invoke.main import program as invoke_program
from backup_files import backup_file

from k0slab.vms import image as imagemod
from k0slab.cluster import pki, users
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

    @property
    def user_home(self) -> Path:
        """HOME for the case: a ~/.kube/config that no case may touch."""
        return self.root / "user"

    @property
    def cwd(self) -> Path:
        return self.root / "cwd"


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


def archive_file(box: Sandbox) -> None:
    (box.work / "a.tar").write_bytes(b"")


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
        "profile": profile, "nodes": nodes or {}, "k0s_version": "v1.31.1+k0s.0",
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


def corrupt_image_json(box: Sandbox) -> None:
    recipe = imagemod.load_recipe("debian-12")
    arch = host_arch()
    folder = box.cache / "images" / f"debian-12-{arch}-{recipe.cache_key(arch)}"
    folder.mkdir(parents=True)
    (folder / "image.json").write_text('{"name": "debian-12", "arch": ')


def work_file(name: str, data: bytes = b"not a folder\n") -> Setup:
    def write(box: Sandbox) -> None:
        (box.work / name).write_bytes(data)

    return write


def lab_user_demo(box: Sandbox) -> None:
    """A user of up_lab's lab, signed by its CA as lab.user would (no controller is needed for that)."""
    folder = box.home / "labs" / "default"
    users.create_user("demo", ["dev"], 30, lab_name="default", server_url="https://10.213.7.11:6443",
                      ca_cert_pem=(folder / "pki" / "ca.crt").read_bytes(),
                      ca_key_pem=(folder / "pki" / "ca.key").read_bytes(), users_dir=folder / "users")


def _with_snapshot(box: Sandbox, nodes: dict[str, str], **state: object) -> None:
    """The up lab with a snapshot s1 recorded, taken with `nodes`."""
    up_lab(box)
    path = box.home / "labs" / "default" / "state.json"
    data = json.loads(path.read_text())
    data.update(state)
    data["snapshots"] = {"s1": {
        "name": "s1", "created": "2026-01-01T00:00:00+00:00", "profile": "default", "k0s_version": "v1.31.1+k0s.0",
        "nodes": nodes, "added_bytes": {name: 1 << 20 for name in nodes},
    }}
    path.write_text(json.dumps(data))


NODE1_IDENTITY = f"controller+worker {host_arch()} 2cpu 2048MiB 52:54:00:d5:07:0b"


def snapshotted_lab(box: Sandbox) -> None:
    _with_snapshot(box, {"node1": NODE1_IDENTITY})


def snapshot_of_more_nodes(box: Sandbox) -> None:
    _with_snapshot(box, {"node1": NODE1_IDENTITY, "node2": "worker amd64 1cpu 1024MiB 52:54:00:d5:07:0c"})


def snapshotted_vagrant_lab(box: Sandbox) -> None:
    _with_snapshot(box, {"node1": NODE1_IDENTITY}, provider="vagrant")


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

P = ["lab.up", "--profile", "{work}/p.yaml", "--dry-run"]


def profile_case(case_id: str, text: str, names: str, hint: str = "profiles/default.yaml") -> Case:
    """A profile file that lab.up --dry-run must refuse (a dry run is the cheapest path that parses it)."""
    return Case(case_id, P, names, hint, (profile_file("p.yaml", text),))


def user_case(case_id: str, extra: list[str], names: str, hint: str, setup: tuple[Setup, ...] = ()) -> Case:
    return Case(case_id, ["lab.user", "demo", *extra], names, hint, setup)


NODES = "nodes:\n" + NODE1
LAB_HINT = "lowercase letters, digits and '-'"
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b]\n"

# The issue's hostile catalogue (issue 15), grouped as the issue lists them.
HOSTILE = [
    # --- groups: no accidental superusers ---
    user_case("group-system-masters", ["--group", "system:masters"], "'system:masters'", "--superuser"),
    user_case("group-system-nodes", ["--group", "system:nodes"], "'system:nodes'", "--superuser"),
    user_case("group-newline-smuggles-masters", ["--group", "dev\nsystem:masters"], "'dev\\nsystem:masters'",
              "control characters"),
    user_case("group-comma-smuggles-masters", ["--group", "dev,system:masters"], "'system:masters'", "--superuser"),
    user_case("group-65-chars", ["--group", "g" * 65], "65 characters", "at most 64"),
    user_case("group-tab", ["--group", "dev\tops"], "'dev\\tops'", "control characters"),
    user_case("group-space", ["--group", " dev"], "' dev'", "without spaces"),
    user_case("group-slash", ["--group", "dev/ops"], "'dev/ops'", "give each group separately"),
    # --- names: full-string matching, nothing outside k0slab's folders ---
    Case("lab-name-trailing-newline", ["lab.status", "--lab", "lab1\n"], "'lab1\\n'", LAB_HINT),
    Case("lab-name-dotdot", ["lab.status", "--lab", "../../etc"], "'../../etc'", LAB_HINT),
    Case("lab-name-slash", ["lab.down", "--lab", "a/b"], "'a/b'", LAB_HINT),
    Case("lab-name-21-chars", ["lab.status", "--lab", "a" * 21], "'" + "a" * 21 + "'", LAB_HINT),
    Case("lab-name-leading-dash", ["lab.status", "--lab=-x"], "'-x'", LAB_HINT),
    Case("lab-name-unicode", ["lab.status", "--lab", "läb"], "'läb'", LAB_HINT),
    Case("lab.kubeconfig-newline", ["lab.kubeconfig", "--lab", "x\n"], "'x\\n'", LAB_HINT),
    Case("lab.users-bad-lab", ["lab.users", "--lab", "Bad"], "'Bad'", LAB_HINT),
    Case("vm-name-trailing-newline", ["vm.launch", "node1\n"], "'node1\\n'", "lowercase letters"),
    Case("vm-name-dotdot", ["vm.launch", "../../x"], "'../../x'", "lowercase letters"),
    Case("vm-name-64-chars", ["vm.launch", "n" * 64], "'" + "n" * 64 + "'", "at most 63"),
    Case("vm.launch-dash-name", ["vm.launch", "-node"], "'-node'", "long options"),
    Case("vm.launch-dash-lab", ["vm.launch", "node1", "-lab"], "'-lab'", "long options"),
    Case("vm.launch-lab-empty", ["vm.launch", "node1", "--lab="], "--lab ''", "give a value"),
    Case("vm.launch-image-dotdot", ["vm.launch", "node1", "--image", "../../etc/passwd"], "'../../etc/passwd'",
         "choose one of"),
    Case("user-name-trailing-newline", ["lab.user", "demo\n", "--group", "dev"], "'demo\\n'", "lowercase letters"),
    Case("user-name-dotdot", ["lab.user", "../x", "--group", "dev"], "'../x'", "lowercase letters"),
    Case("user-name-revoke-dotdot", ["lab.user", "../../x", "--revoke"], "'../../x'", "lowercase letters"),
    Case("image.pull-name-dotdot", ["image.pull", "--url", "https://example.org/x.qcow2", "--checksums",
                                    "https://example.org/SUMS", "--name", "../../x"], "'../../x'", "lowercase letters"),
    Case("image.pull-name-slash", ["image.pull", "--url", "https://example.org/x.qcow2", "--checksums",
                                   "https://example.org/SUMS", "--name", "a/b"], "'a/b'", "lowercase letters"),
    Case("image.pull-name-newline", ["image.pull", "--url", "https://example.org/x.qcow2", "--checksums",
                                     "https://example.org/SUMS", "--name", "x\n"], "'x\\n'", "lowercase letters"),
    Case("image.build-dotdot", ["image.build", "--image", "../../etc/x"], "'../../etc/x'", "choose one of"),
    Case("image.box-dotdot", ["image.box", "--image", "../x"], "'../x'", "choose one of"),
    Case("host.down-netns-dotdot", ["host.down", "--netns", "../../tmp/x"], "'../../tmp/x'", "letters, digits"),
    Case("host.down-netns-space", ["host.down", "--netns", "a b"], "'a b'", "letters, digits"),
    Case("host.down-netns-newline", ["host.down", "--netns", "k0slab\n"], "'k0slab\\n'", "letters, digits"),
    Case("host.up-netns-dotdot", ["host.up", "--netns", "../x"], "'../x'", "letters, digits"),
    Case("lab.up-profile-name-dotdot", ["lab.up", "--profile", "../../etc/passwd"], "'../../etc/passwd'",
         "one of: default"),
    # --- overwrites ---
    user_case("user-output-existing-kubeconfig", ["--group", "dev", "--output", "{user}/.kube/config"],
              "{user}/.kube/config", "--force"),
    user_case("user-output-dir", ["--group", "dev", "--output", "{work}"], "{work}", "give a file path"),
    user_case("user-output-under-a-file", ["--group", "dev", "--output", "{work}/file/k.conf"], "{work}/file",
              "in a folder", (work_file("file"),)),
    # --- flags invoke would misread or drop ---
    Case("lab.up-nodes-million", ["lab.up", "--nodes", "1000000"], "--nodes 1000000", "from 1 to 100"),
    Case("lab.up-nodes-2000", ["lab.up", "--nodes", "2000"], "--nodes 2000", "from 1 to 100"),
    Case("lab.up-nodes-101", ["lab.up", "--nodes", "101"], "--nodes 101", "from 1 to 100"),
    Case("lab.up-nodes-negative", ["lab.up", "--nodes", "-1"], "--nodes -1", "from 1 to 100"),
    Case("lab.up-nodes-space", ["lab.up", "--nodes", " 3"], "' 3'", "digits only"),
    Case("lab.up-nodes-exponent", ["lab.up", "--nodes", "1e3"], "'1e3'", "digits only"),
    Case("lab.up-nodes-underscore", ["lab.up", "--nodes", "1_0"], "'1_0'", "digits only"),
    Case("vm.launch-memory-100T", ["vm.launch", "node1", "--memory", "100T"], "'100T'", "smaller --memory"),
    Case("vm.launch-memory-newline", ["vm.launch", "node1", "--memory", "2G\n"], "'2G\\n'", "e.g. 2G"),
    Case("vm.launch-memory-huge-number", ["vm.launch", "node1", "--memory", "9" * 40], "'" + "9" * 40 + "'",
         "e.g. 2G"),
    Case("vm.launch-disk-unit", ["vm.launch", "node1", "--disk", "100X"], "'100X'", "e.g. 2G"),
    Case("vm.launch-cpus-65", ["vm.launch", "node1", "--cpus", "65"], "--cpus 65", "from 1 to 64"),
    Case("vm.launch-cpus-fraction", ["vm.launch", "node1", "--cpus", "1.5"], "'1.5'", "digits only"),
    Case("lab.up-k0s-binary-empty", ["lab.up", "--k0s-binary", ""], "--k0s-binary ''", "give a value"),
    Case("lab.up-k0s-version-empty", ["lab.up", "--k0s-version", ""], "--k0s-version ''", "give a value"),
    Case("lab.up-arch-empty", ["lab.up", "--arch", ""], "--arch ''", "give a value"),
    Case("lab.up-memory-empty", ["lab.up", "--memory", " "], "--memory ' '", "give a value"),
    Case("lab.up-remainder-nodes", ["lab.up", "--", "--nodes", "50"], "'--nodes 50'", "before --"),
    Case("lab.status-remainder", ["lab.status", "--", "x"], "'x'", "before --"),
    Case("lab.down-remainder", ["lab.down", "--", "--lab", "other"], "'--lab other'", "before --"),
    Case("vm.list-remainder", ["vm.list", "--", "-a"], "'-a'", "before --"),
    Case("lab.up-box-dotdot", ["lab.up", "--provider", "vagrant", "--box", "../x"], "'../x'", "profiles/default"),
    Case("lab.up-box-space", ["lab.up", "--provider", "vagrant", "--box", "a b/c"], "'a b/c'", "profiles/default"),
    Case("lab.up-box-no-org", ["lab.up", "--provider", "vagrant", "--box", "debian12"], "'debian12'",
         "profiles/default"),
    Case("lab.up-box-without-vagrant", ["lab.up", "--box", "generic/debian12"], "provider: vagrant",
         "profiles/default"),
    Case("lab.up-provider-unknown", ["lab.up", "--provider", "qemu"], "'provider'", "profiles/default"),
    Case("lab.up-cpus-zero", ["lab.up", "--cpus", "0"], "'defaults.cpus'", "profiles/default"),
    Case("lab.up-disk-unit", ["lab.up", "--disk", "100X"], "'100X'", "e.g. 2G"),
    user_case("days-999999999", ["--group", "dev", "--days", "999999999"], "--days 999999999", "from 1 to 36500"),
    user_case("days-36501", ["--group", "dev", "--days", "36501"], "--days 36501", "from 1 to 36500"),
    user_case("days-negative", ["--group", "dev", "--days", "-1"], "--days -1", "from 1 to 36500"),
    user_case("days-fraction", ["--group", "dev", "--days", "1.5"], "'1.5'", "digits only"),
    Case("lab.smoke-timeout-abc", ["lab.smoke", "--timeout", "abc"], "'abc'", "e.g. 180"),
    Case("lab.smoke-timeout-inf", ["lab.smoke", "--timeout", "inf"], "'inf'", "from 1 to 3600"),
    Case("lab.smoke-timeout-nan", ["lab.smoke", "--timeout", "nan"], "'nan'", "from 1 to 3600"),
    Case("lab.smoke-timeout-zero", ["lab.smoke", "--timeout", "0"], "'0'", "from 1 to 3600"),
    Case("lab.smoke-timeout-negative", ["lab.smoke", "--timeout", "-5"], "'-5'", "from 1 to 3600"),
    Case("lab.smoke-junit-dir", ["lab.smoke", "--junit", "{work}"], "{work}", "give a file path"),
    Case("lab.smoke-json-dir", ["lab.smoke", "--json", "{work}"], "{work}", "give a file path"),
    Case("lab.smoke-junit-under-a-file", ["lab.smoke", "--junit", "{work}/file/r.xml"], "{work}/file",
         "in a folder", (work_file("file"),)),
    Case("lab.dump-logs-dir-file", ["lab.dump-logs", "--dir", "{work}/file"], "{work}/file", "folder path",
         (work_file("file"),)),
    Case("lab.dump-logs-dir-under-file", ["lab.dump-logs", "--dir", "{work}/file/logs"], "{work}/file",
         "folder path", (work_file("file"),)),
    # A folder of the user's own that happens to hold a file of a name the dump writes.
    Case("lab.dump-logs-would-overwrite", ["lab.dump-logs", "--dir", "{work}"], "state.json",
         "pass --force", (up_lab, work_file("state.json", b'{"mine": true}\n'))),
    # --- downloads ---
    Case("image.pull-not-a-url", ["image.pull", "--url", "not a url", "--checksums", "https://example.org/SUMS"],
         "'not a url'", "https://HOST/PATH"),
    Case("image.pull-ftp", ["image.pull", "--url", "ftp://example.org/x.qcow2", "--checksums",
                            "https://example.org/SUMS"], "'ftp://example.org/x.qcow2'", "https://HOST/PATH"),
    Case("image.pull-plain-http", ["image.pull", "--url", "http://example.org/x.qcow2", "--checksums",
                                   "https://example.org/SUMS"], "'http://example.org/x.qcow2'", "localhost"),
    Case("image.pull-http-private", ["image.pull", "--url", "http://10.0.0.1/x.qcow2", "--checksums",
                                     "https://example.org/SUMS"], "'http://10.0.0.1/x.qcow2'", "localhost"),
    Case("image.pull-file-not-asked", ["image.pull", "--url", "file:///etc/passwd", "--checksums",
                                       "https://example.org/SUMS"], "'file:///etc/passwd'", "--allow-file"),
    Case("image.pull-checksums-not-a-url", ["image.pull", "--url", "https://example.org/x.qcow2", "--checksums",
                                            "SUMS"], "--checksums 'SUMS'", "https://HOST/PATH"),
    Case("image.pull-no-host", ["image.pull", "--url", "https://", "--checksums", "https://example.org/SUMS"],
         "'https://'", "https://HOST/PATH"),
    Case("image.pull-arch", ["image.pull", "--url", "https://example.org/x.qcow2", "--checksums",
                             "https://example.org/SUMS", "--arch", "sparc"], "'sparc'", "amd64, arm64"),
    Case("image.json-corrupt-launch", ["vm.launch", "node1"], "image.json is corrupt", "build or pull the image",
         (corrupt_image_json,)),
    Case("image.json-corrupt-list", ["image.list"], "image.json is corrupt", "build or pull the image",
         (corrupt_image_json,)),
    # --- unreachable controller: one line, no traceback ---
    user_case("user-check-unreachable", ["--check"], "cannot reach node1", "vm.start node1", (up_lab, lab_user_demo)),
    Case("lab.smoke-unreachable", ["lab.smoke"], "cannot reach node1", "vm.start node1", (up_lab,)),
    Case("vm.exec-unreachable", ["vm.exec", "node1", "--", "true"], "cannot reach node1", "vm.start node1",
         (up_lab,)),
    Case("vm.transfer-unreachable", ["vm.transfer", "node1:/etc/hostname", "{work}/h"], "cannot reach node1",
         "vm.start node1", (up_lab,)),
    Case("lab.logs-unreachable", ["lab.logs", "node1"], "cannot reach node1", "vm.start node1", (up_lab,)),
    # --- profiles: limited YAML, unknown keys named, k0s partials that undo k0slab ---
    profile_case("profile-typo-flavour", "name: p\nflavour: huge\n" + NODES, "'flavour'"),
    profile_case("profile-typo-without-name", "flavour: huge\n" + NODES, "'flavour'"),
    profile_case("profile-typo-nmae", "nmae: p\n" + NODES, "'nmae'"),
    profile_case("profile-typo-in-node", "name: p\nnodes:\n  - {name: node1, rolee: worker}\n", "'nodes.0.rolee'"),
    profile_case("profile-typo-in-timeouts", "name: p\ntimeouts: {redy: 5}\n" + NODES, "'timeouts.redy'"),
    profile_case("profile-alias-bomb", "name: p\n" + NODES + "k0s:\n  x: &a [1, 2]\n  y: *a\n", "anchors",
                 "fix the YAML near line"),
    profile_case("profile-alias-bomb-deep", "name: p\n" + NODES + "k0s:\n" + "".join("  " + line + "\n"
                 for line in BOMB.splitlines()), "anchors", "fix the YAML near line"),
    profile_case("profile-duplicate-key", "name: p\nname: q\n" + NODES, "duplicate key 'name'",
                 "fix the YAML near line"),
    profile_case("profile-duplicate-nested-key", "name: p\nnodes:\n  - {name: node1, name: node2}\n",
                 "duplicate key 'name'", "fix the YAML near line"),
    profile_case("profile-spec-null", "name: p\n" + NODES + "k0s: {spec: null}\n", "k0s.spec is null"),
    profile_case("profile-network-null", "name: p\n" + NODES + "k0s: {spec: {network: null}}\n",
                 "k0s.spec.network is null"),
    profile_case("profile-deep-null", "name: p\n" + NODES + "k0s: {spec: {network: {kubeProxy: null}}}\n",
                 "k0s.spec.network.kubeProxy is null"),
    profile_case("profile-spec-list", "name: p\n" + NODES + "k0s: {spec: []}\n", "k0s.spec must be a mapping"),
    profile_case("profile-api-string", "name: p\n" + NODES + "k0s: {spec: {api: x}}\n",
                 "k0s.spec.api must be a mapping"),
    profile_case("profile-api-address", "name: p\n" + NODES + "k0s: {spec: {api: {address: 10.0.0.5}}}\n",
                 "k0s.spec.api.address"),
    profile_case("profile-podcidr-in-lab", "name: p\n" + NODES + "k0s: {spec: {network: {podCIDR: 10.213.5.0/24}}}\n",
                 "k0s.spec.network.podCIDR 10.213.5.0/24"),
    profile_case("profile-servicecidr-covers-lab",
                 "name: p\n" + NODES + "k0s: {spec: {network: {serviceCIDR: 10.0.0.0/8}}}\n",
                 "k0s.spec.network.serviceCIDR 10.0.0.0/8"),
    profile_case("profile-cidr-garbage", "name: p\n" + NODES + "k0s: {spec: {network: {podCIDR: lots}}}\n",
                 "'lots' is not a CIDR"),
    profile_case("profile-k0s-null", "name: p\n" + NODES + "k0s: null\n", "'k0s'"),
    profile_case("profile-k0s-kind", "name: p\n" + NODES + "k0s: {kind: Pod}\n", "k0s.kind is 'Pod'"),
    profile_case("profile-k0s-inf", "name: p\n" + NODES + "k0s: {spec: {x: .inf}}\n", "k0s.spec.x is inf"),
    profile_case("profile-ready-inf", "name: p\n" + NODES + "timeouts: {ready: .inf}\n", "'timeouts.ready'"),
    profile_case("profile-ready-nan", "name: p\n" + NODES + "timeouts: {ready: .nan}\n", "'timeouts.ready'"),
    profile_case("profile-ready-huge", "name: p\n" + NODES + "timeouts: {ready: 1e9}\n", "'timeouts.ready'"),
    profile_case("profile-boot-negative", "name: p\n" + NODES + "timeouts: {boot: -1}\n", "'timeouts.boot'"),
    profile_case("profile-kernel-sshkey", "name: p\n" + NODES + "kernel_args: k0slab.sshkey=AAAA\n",
                 "'k0slab.sshkey=AAAA'"),
    profile_case("profile-kernel-nameserver", "name: p\n" + NODES + "kernel_args: quiet k0slab.nameserver=1.2.3.4\n",
                 "'quiet'"),
    profile_case("profile-kernel-root", "name: p\n" + NODES + "kernel_args: root=/dev/vdb\n", "'root=/dev/vdb'"),
    profile_case("profile-kernel-hostname", "name: p\n" + NODES + "kernel_args: systemd.hostname=evil\n",
                 "'systemd.hostname=evil'"),
    profile_case("profile-kernel-newline", "name: p\n" + NODES + 'kernel_args: "a\\nb"\n', "control character"),
    profile_case("profile-name-dotdot", "name: ../x\n" + NODES, "'../x'"),
    profile_case("profile-name-newline", 'name: "p\\n"\n' + NODES, "'p\\n'"),
    profile_case("profile-node-newline", 'name: p\nnodes:\n  - {name: "node1\\n", role: controller+worker}\n',
                 "'node1\\n'", "lowercase letters"),
    profile_case("profile-101-nodes", "name: p\nnodes:\n" + NODE1 + "".join(f"  - {{name: w{i}}}\n"
                 for i in range(100)), "101 nodes"),
    profile_case("profile-cpus-1000", "name: p\nnodes:\n  - {name: node1, role: controller+worker, cpus: 1000}\n",
                 "'nodes.0.cpus'"),
    profile_case("profile-box-bad", "name: p\nprovider: vagrant\nbox: x\n" + NODES, "'x'"),
    profile_case("profile-not-a-mapping", "- a\n- b\n", "not a mapping"),
    profile_case("profile-empty", "", "not a mapping"),
    profile_case("profile-tabs", "name: p\n\tnodes: []\n", "not valid YAML", "fix the YAML near line"),
    Case("profile-binary", P, "not a readable UTF-8 text file", "give a YAML profile",
         (work_file("p.yaml", bytes(range(256)) * 4),)),
    Case("profile-nul-bytes", P, "NUL bytes", "give a YAML profile", (work_file("p.yaml", b"name: p\0\n"),)),
    Case("profile-too-big", P, "more than 65536", "short YAML file",
         (work_file("p.yaml", b"# padding\n" * 7000),)),
]


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
    Case("lab.up-egress-none-without-images", ["lab.up", "--egress", "none"], "--egress none without images",
         "add --airgap (the release's bundle), or --airgap-bundle PATH"),
    Case("lab.up-egress-unknown", ["lab.up", "--egress", "open"], "field 'egress'", "profiles/default.yaml"),
    Case("lab.up-airgap-bundle-missing", ["lab.up", "--airgap-bundle", "{work}/nope.tar"],
         "--airgap-bundle {work}/nope.tar is not a file", "OCI image layout tar"),
    Case("lab.up-airgap-bundle-twice", ["lab.up", "--airgap-bundle", "{work}/a.tar", "--airgap-bundle", "{work}/a.tar"],
         "two airgap bundles are named a.tar", "rename one", (archive_file,)),
    Case("lab.smoke-image-unpinned", ["lab.smoke", "--image", "busybox"], "smoke image 'busybox' is not pinned",
         "docker.io/library/busybox:1.36.1"),
    Case("lab.up-nodes-zero", ["lab.up", "--nodes", "0"], "--nodes 0", "from 1 to 100 nodes"),
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
    Case("lab.user-days-zero", ["lab.user", "demo", "--group", "dev", "--days", "0"], "--days 0", "from 1 to 36500",
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
    # --- snapshots (each refused before libvirt, SSH or the lab's lock is touched) ---
    Case("lab.snapshot-name-invalid", ["lab.snapshot", "Bad_Snap"], "'Bad_Snap'", "lowercase letters",
         (snapshotted_lab,)),
    Case("lab.snapshot-lab-missing", ["lab.snapshot", "s1"], "'default'", "invoke lab.up"),
    Case("lab.snapshot-lab-not-up", ["lab.snapshot", "s1", "--lab", "taken"], "'taken' is not up",
         "invoke lab.up --lab taken", (lab_of_other_profile,)),
    Case("lab.snapshot-name-taken", ["lab.snapshot", "s1"], "'s1'", "replace it with --force", (snapshotted_lab,)),
    Case("lab.snapshot-delete-unknown", ["lab.snapshot", "nope", "--delete"], "'nope'", "invoke lab.snapshots",
         (snapshotted_lab,)),
    Case("lab.revert-unknown-snapshot", ["lab.revert", "nope"], "'nope' (it has: s1)", "invoke lab.snapshots",
         (snapshotted_lab,)),
    Case("lab.revert-lab-missing", ["lab.revert", "s1"], "'default'", "invoke lab.up"),
    Case("lab.revert-other-node-set", ["lab.revert", "s1"], "differs in node2", "take a new snapshot",
         (snapshot_of_more_nodes,)),
    Case("lab.revert-vagrant", ["lab.revert", "s1"], "vagrant provider cannot take memory snapshots",
         "--provider libvirt", (snapshotted_vagrant_lab,)),
    # --- other tasks ---
    Case("lab.kubeconfig-lab-missing", ["lab.kubeconfig"], "'default'", "invoke lab.up --lab default"),
    Case("lab.status-corrupt-state", ["lab.status"], "state.json is corrupt", "invoke lab.prune", (corrupt_state,)),
    Case("vm.exec-no-command", ["vm.exec", "node1"], "no command given", "put it after --"),
    Case("vm.transfer-no-vm-side", ["vm.transfer", "./a", "./b"], "'./a' -> './b'", "node1:/path"),
    *HOSTILE,
]


def _snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under root with its mode, size and mtime: any created, removed or rewritten file shows."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        found[str(path.relative_to(root))] = (info.st_mode, info.st_size if path.is_file() else 0, info.st_mtime_ns)
    return found


@dataclass(frozen=True)
class Outcome:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    changed: bool


def _fill(word: str, box: Sandbox) -> str:
    filled = word.replace("{work}", str(box.work)).replace("{user}", str(box.user_home))
    return filled.replace("{standin}", str(standin_binary())) if "{standin}" in filled else filled


def _prepare(case: Case, box: Sandbox) -> dict[str, tuple[int, int, int]]:
    for folder in (box.work, box.user_home / ".kube", box.cwd):
        folder.mkdir(parents=True)
    (box.user_home / ".kube" / "config").write_text("apiVersion: v1\nkind: Config\n# the user's own\n")
    for setup in case.setup:
        setup(box)
    return _snapshot(box.root)


def _environment(box: Sandbox) -> dict[str, str]:
    return {
        **os.environ, "K0SLAB_HOME": str(box.home), "K0SLAB_CACHE": str(box.cache), "HOME": str(box.user_home),
        # Nothing to talk to: a case that slipped past validation fails instead of creating VMs, and
        # SSH goes through `ip netns exec` of a namespace that does not exist, so no packet leaves.
        "LIBVIRT_DEFAULT_URI": f"qemu+unix:///system?socket={box.root}/no-libvirt.sock",
        "K0SLAB_NETNS": "k0slab-catalogue-none", "COLUMNS": "500",
    }


def _fork_cli(argv: list[str], box: Sandbox, output: Path) -> int:
    """Run invoke's own Program (what `python -m invoke` runs) in a forked child: the imports are
    already done in this process, so a case costs milliseconds instead of a Python start-up."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setsid()  # its own session, so that a timeout also ends anything it started
        os.environ.clear()
        os.environ.update(_environment(box))
        os.chdir(box.cwd)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            target = os.open(output / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
        sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
        sys.argv = ["invoke", "-r", str(REPO_ROOT), *argv]
        try:
            invoke_program.run()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:
            traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Sandbox, Outcome]]:
    """Every case at once, each in a forked child with its own sandbox, environment and cwd."""
    root = tmp_path_factory.mktemp("catalogue")
    # What tasks.py imports, loaded once here so that every forked case shares it.
    for module in ("k0slab.cluster.lab", "k0slab.checks.smoke", "k0slab.vms.hostenv", "k0slab.vms.vagrant_box"):
        importlib.import_module(module)
    started: dict[str, tuple[Sandbox, list[str], Path, dict[str, tuple[int, int, int]], int]] = {}
    for case in CASES:
        if cached_image in case.setup and shutil.which("qemu-img") is None:
            continue
        box = Sandbox(root=root / case.id, home=root / case.id / "home", cache=root / case.id / "cache",
                      work=root / case.id / "work")
        output = root / f"{case.id}.out"  # outside the watched sandbox
        output.mkdir()
        before = _prepare(case, box)
        argv = [_fill(word, box) for word in case.argv]
        started[case.id] = (box, argv, output, before, _fork_cli(argv, box, output))
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    results = {}
    for case_id, (box, argv, output, before, pid) in started.items():
        while (status := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        if status[0] == 0:
            os.killpg(pid, signal.SIGKILL)
            status = os.waitpid(pid, 0)
            (output / "stderr").write_text(f"ran {COMMAND_TIMEOUT_S}s: it got past validation and started creating")
        results[case_id] = (box, Outcome(argv, os.waitstatus_to_exitcode(status[1]), (output / "stdout").read_text(),
                                         (output / "stderr").read_text(), _snapshot(box.root) != before))
    return results


def test_catalogue_covers_the_issue() -> None:
    """Issue 15 asks for at least 120 hostile invocations; ids must be unique to be reported apart."""
    assert len(CASES) >= 120 and len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clear_line_and_creates_nothing(
    case: Case, outcomes: dict[str, tuple[Sandbox, Outcome]],
) -> None:
    if case.id not in outcomes:
        pytest.fail("qemu-img is needed to make a cached image")
    box, result = outcomes[case.id]
    lines = result.stderr.splitlines()
    assert result.returncode != 0, f"exit 0 for {result.argv}: {result.stdout}"
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert _fill(case.names, box) in lines[0] and case.hint in lines[0], lines[0]
    assert lines[0].endswith(")"), f"no hint: {lines[0]}"
    assert not result.changed, "files were created, changed or deleted"
