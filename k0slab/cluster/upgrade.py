"""`lab.upgrade`: move every node of a running lab to another k0s version, one minor at a time.

The order is k0sctl's (`phase/upgrade_controllers.go`, `phase/upgrade_workers.go`) and the one
k0s's version-skew policy asks for: controllers first, one at a time; then workers, a bounded
number at once, each drained, its k0s stopped, replaced and started, waited on until its Node is
Ready at the new version, then uncordoned.

The new binary reaches each node by SFTP, into `k0s.new` beside the old one, and is checked by
its sha256 before it replaces anything (see the README for why not a disk). A node's version is
two facts, the binary on its disk and the running process (`bootstrap.NodeVersions`); a re-run
skips the nodes that already run the target and never goes below a version that already ran.
"""
from __future__ import annotations

import contextlib
import hashlib
import shlex
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from k0slab.checks.smoke import kubelet_version_for
from k0slab.cluster.k0s import bootstrap, release, versions
from k0slab.core.errors import K0slabError
from k0slab.core.profile import CONTROLLER_ROLES
from k0slab.core.state import LabState, NodeState
from k0slab.core.waits import NotYet, Requirement
from k0slab.vms.remote import Runner

if TYPE_CHECKING:
    from k0slab.cluster.lab import Lab

Progress = Callable[[str], None]
STAGED_BINARY = f"{bootstrap.K0S_BINARY}.new"
DRAIN_TIMEOUT_S = 300


@dataclass
class UpgradeOptions:
    k0s_version: str | None = None  # a release tag, or
    k0s_binary: Path | None = None  # a local binary
    concurrency: int = 1  # workers upgraded at once
    drain: bool = True
    force: bool = False  # allow a downgrade
    drain_timeout_s: float = DRAIN_TIMEOUT_S
    ready_timeout_s: float = 900


@dataclass(frozen=True)
class StagedBinary:
    path: Path
    sha256: str


def validate_options(options: UpgradeOptions) -> None:
    """Flag checks that need no lab: before anything is touched."""
    if (options.k0s_version is None) == (options.k0s_binary is None):
        raise K0slabError("lab.upgrade needs exactly one of --k0s-version and --k0s-binary",
                          "e.g. invoke lab.upgrade --k0s-version v1.34.1+k0s.0")
    if options.concurrency < 1:
        raise K0slabError(f"--concurrency {options.concurrency} is not a positive number",
                          "give how many workers may be upgraded at once, e.g. --concurrency 1")
    if options.k0s_version is not None:
        versions.parse(release.resolve_version(options.k0s_version))


def upgrade_order(state: LabState) -> tuple[list[NodeState], list[NodeState]]:
    """(controllers, workers), each in node order: controllers go one at a time, before any worker."""
    nodes = sorted((n for n in state.nodes.values() if n.role != "none"), key=lambda n: n.index)
    return [n for n in nodes if n.role in CONTROLLER_ROLES], [n for n in nodes if n.role == "worker"]


def stage_binary(node: Runner, binary: StagedBinary, put_file: Callable[[Path, str], None]) -> None:
    """Copy the new binary next to the old one; a copy already there with the right sum is kept."""
    if _sha256_on_node(node, STAGED_BINARY) != binary.sha256:
        put_file(binary.path, STAGED_BINARY)
        node.run(f"chmod 755 {STAGED_BINARY}")
    if _sha256_on_node(node, STAGED_BINARY) != binary.sha256:
        node.run(f"rm -f {STAGED_BINARY}", check=False)
        raise K0slabError(f"{node.name}: the k0s binary arrived damaged (sha256 differs)",
                          "run the same lab.upgrade again; check the node's free disk with lab.ssh NODE -- df -h")


def staged_version(node: Runner) -> str:
    return node.run(f"{STAGED_BINARY} version").stdout.strip()


def discard_staged(node: Runner) -> None:
    node.run(f"rm -f {STAGED_BINARY}", check=False)


def replace_and_restart(node: Runner, role: str) -> None:
    """Stop k0s, move the staged binary over the old one, start k0s again. With no staged binary
    (the disk already holds the target) it only restarts, which is what an interrupted run needs."""
    unit = "k0sworker" if role == "worker" else "k0scontroller"
    node.run(
        f"if systemctl is-active --quiet {unit}; then {bootstrap.K0S_BINARY} stop; fi; "
        f"if [ -f {STAGED_BINARY} ]; then mv -f {STAGED_BINARY} {bootstrap.K0S_BINARY}; fi; "
        f"{bootstrap.K0S_BINARY} start",
        timeout=120,
    )


def cordon_and_drain(controller: Runner, node_name: str, timeout_s: float) -> None:
    """kubectl drain cordons first; DaemonSet pods stay, emptyDir data goes (as k0sctl drains)."""
    seconds = int(timeout_s)
    controller.run(
        f"{bootstrap.KUBECTL} drain {shlex.quote(node_name)} --ignore-daemonsets --delete-emptydir-data "
        f"--force --timeout={seconds}s",
        timeout=seconds + 30,
    )


def uncordon(controller: Runner, node_name: str) -> None:
    controller.run(f"{bootstrap.KUBECTL} uncordon {shlex.quote(node_name)}", timeout=60)


def node_at_version(item: dict, target: str) -> tuple[bool, str]:
    """Whether a Node object is Ready and its kubelet reports the target version."""
    ready, condition = bootstrap.node_ready(item)
    kubelet = item.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")
    wanted = kubelet_version_for(target)
    if kubelet != wanted:
        return False, f"kubelet {kubelet or 'unknown'}, not {wanted}"
    return ready, condition


def _sha256_on_node(node: Runner, path: str) -> str:
    result = node.run(f"sha256sum {path} 2>/dev/null | cut -d' ' -f1", check=False)
    return result.stdout.strip()


class LabUpgrade:
    """One run of lab.upgrade over a lab that is up."""

    def __init__(self, lab: Lab, options: UpgradeOptions, progress: Progress) -> None:
        self.lab, self.options, self.progress = lab, options, progress
        self.state, self.controller = lab.require_up()
        self.hint = f"k0s journals: invoke lab.logs NODE --lab {lab.name}; lab.status --lab {lab.name} shows each node"

    def run(self) -> str:
        state = self.state
        stopped = [n.name for n in state.nodes.values() if self.lab.backend.vm_state(state, n) != "Running"]
        if stopped:
            raise K0slabError(f"lab {self.lab.name!r} has VMs that are not running: {', '.join(stopped)}",
                              f"start them first: invoke lab.up --lab {self.lab.name}")
        controllers, workers = upgrade_order(state)
        nodes = controllers + workers
        seen = self._versions(nodes)
        ran = [v for pair in seen.values() for v in pair if v]
        if self.options.k0s_version:  # a tag is checked before anything is downloaded
            versions.check_path(release.resolve_version(self.options.k0s_version), ran, force=self.options.force)
        binaries = self._binaries()
        target = self._target(binaries)
        try:
            path = versions.check_path(target, ran, force=self.options.force)
        except K0slabError:
            self._discard([self.controller])  # a refused local binary leaves nothing behind
            raise
        todo = [n for n in nodes if seen[n.name] != (target, target)]
        if not todo:
            self._discard(nodes)
            self.progress(f"lab {self.lab.name}: every node already runs k0s {target}")
            self._finish(target)
            return target
        self.progress(f"upgrading lab {self.lab.name} to k0s {target} (from {path.oldest_seen}): "
                      + ", ".join(n.name for n in todo) + (" (downgrade forced)" if path.downgrade else ""))
        state.upgrade_target = target
        self.lab.dir.save(state)
        for node in todo:
            if node.arch not in binaries:
                raise K0slabError(f"no k0s binary for {node.arch} node {node.name}", "give one for every arch")
        self._parallel(todo, lambda ssh, node: stage_binary(ssh, binaries[node.arch], self._put_file(node)),
                       self.options.concurrency)
        for node in controllers:
            if node in todo:
                self._upgrade_node(node, target)
        pending = [n for n in workers if n in todo]
        failed = threading.Event()

        def worker(node: NodeState) -> None:
            if failed.is_set():
                return  # after one failure no other worker is taken down
            try:
                self._upgrade_node(node, target)
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(max_workers=self.options.concurrency) as pool:
            list(pool.map(worker, pending))
        self._finish(target)
        self.progress(f"lab {self.lab.name} runs k0s {target} on every node")
        return target

    # --- steps ---------------------------------------------------------------------------------
    def _binaries(self) -> dict[str, StagedBinary]:
        options = self.options
        version = release.resolve_version(options.k0s_version) if options.k0s_version else None
        found = {}
        for arch in sorted({n.arch for n in self.state.nodes.values()}):
            path = release.binary_for(version, options.k0s_binary, arch, self.progress)
            found[arch] = StagedBinary(path, hashlib.sha256(path.read_bytes()).hexdigest())
        return found

    def _versions(self, nodes: list[NodeState]) -> dict[str, tuple[str | None, str | None]]:
        def read(ssh: Runner, node: NodeState) -> tuple[str | None, str | None]:
            found = bootstrap.node_versions(ssh)
            return found.on_disk, found.running
        return dict(zip((n.name for n in nodes), self._parallel(nodes, read, len(nodes)), strict=True))

    def _target(self, binaries: dict[str, StagedBinary]) -> str:
        """The version to go to: the tag asked for, or what a local binary says of itself (asked on
        the controller, since the host may not be able to run it; the copy stays staged there)."""
        if self.options.k0s_version:
            return release.resolve_version(self.options.k0s_version)
        node = self.controller
        with contextlib.closing(self.lab.ssh(node)) as ssh:
            stage_binary(ssh, binaries[node.arch], self._put_file(node))
            return staged_version(ssh)

    def _upgrade_node(self, node: NodeState, target: str) -> None:
        kubelet = node.role != "controller"
        drain = self.options.drain and node.role == "worker"
        with contextlib.closing(self.lab.ssh(self.controller)) as controller:
            if drain:
                self.progress(f"    {node.name}: cordon and drain")
                cordon_and_drain(controller, node.name, self.options.drain_timeout_s)
            with contextlib.closing(self.lab.ssh(node)) as ssh:
                replace_and_restart(ssh, node.role)
            self.progress(f"    {node.name}: k0s replaced and restarted, waiting for {target}")
            self._wait_running(node, target)
            if node.role in CONTROLLER_ROLES:
                Requirement(f"the API server of {node.name} to answer /readyz with ok after the upgrade",
                            self.hint, timeout_s=self.options.ready_timeout_s).wait(
                    lambda: bootstrap.readyz(controller))
            if kubelet:
                Requirement(f"node {node.name} to be Ready at k0s {target}", self.hint,
                            timeout_s=self.options.ready_timeout_s).wait(
                    lambda: self._node_probe(controller, node.name, target))
            if drain:
                uncordon(controller, node.name)
        self.progress(f"    {node.name}: k0s {target}" + (", uncordoned" if drain else ""))

    def _wait_running(self, node: NodeState, target: str) -> None:
        def probe() -> None:
            with contextlib.closing(self.lab.ssh(node)) as ssh:
                found = bootstrap.node_versions(ssh)
            if found.running != target:
                raise NotYet(f"{node.name} runs {found.running or 'no k0s'} (binary {found.on_disk})")
        Requirement(f"{node.name} to run k0s {target}", self.hint, timeout_s=self.options.ready_timeout_s).wait(probe)

    @staticmethod
    def _node_probe(controller: Runner, name: str, target: str) -> None:
        items = {item["metadata"]["name"]: item for item in bootstrap.nodes(controller)}
        if name not in items:
            raise NotYet(f"{name} not registered")
        ok, why = node_at_version(items[name], target)
        if not ok:
            raise NotYet(f"{name}: {why}")

    def _finish(self, target: str) -> None:
        self.state.k0s_version = target
        self.state.upgrade_target = None
        self.lab.dir.save(self.state)

    def _discard(self, nodes: list[NodeState]) -> None:
        self._parallel(nodes, lambda ssh, node: discard_staged(ssh), len(nodes))

    def _put_file(self, node: NodeState) -> Callable[[Path, str], None]:
        def put(local: Path, remote: str) -> None:
            with contextlib.closing(self.lab.ssh(node)) as ssh:
                ssh.put_file(local, remote)
        return put

    def _parallel(self, nodes: list[NodeState], work: Callable[[Runner, NodeState], object], width: int) -> list:
        def one(node: NodeState) -> object:
            with contextlib.closing(self.lab.ssh(node)) as ssh:
                return work(ssh, node)
        with ThreadPoolExecutor(max_workers=max(1, width)) as pool:
            return list(pool.map(one, nodes))
