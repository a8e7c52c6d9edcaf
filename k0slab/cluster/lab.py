"""A lab's whole lifecycle in a few verbs (the shape of kubetest2's deployer):
up, down, status (whose nodes say whether it is up), kubeconfig, dump_logs.

`up` is an ordered list of phases (see phases.py): resolve the k0s binary, create the network
and VMs, wait for SSH, push binary and config, make the CA and join token, start the
controller, start the workers, wait until the cluster is ready, fetch the kubeconfig.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import shlex
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import paramiko
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from k0slab.vms import image as imagemod
from k0slab.cluster import kubeconfig, pki
from k0slab.checks import diagnose, smoke
from k0slab.cluster import backup as backupmod
from k0slab.cluster import snapshots, upgrade, users
from k0slab.vms import vm as vmmod
from k0slab.vms.backend import VMBackend
from k0slab.core.errors import K0slabError
from k0slab.cluster.k0s import airgap, bootstrap
from k0slab.cluster.k0s import release
from k0slab.cluster.k0s import token, versions
from k0slab.cluster.k0s.config import CONFIG_PATH, cluster_config, render
from k0slab.vms.arch import host_arch
from k0slab.vms.network import allocate_subnet, node_ip
from k0slab.core import cancel, timeline
from k0slab.core.phases import Phase, PhaseManager
from k0slab.core.profile import CONTROLLER_ROLES, NodeSpec, Profile
from k0slab.vms.remote import RemoteCommandError
from k0slab.vms.ssh import RemoteTally, SSHNode, tallied
from k0slab.core.paths import data_home, labs_dir, vm_disks_dir
from k0slab.core.state import LabDir, LabState, NodeState, all_labs, write_private
from k0slab.core.units import format_size, parse_size
from k0slab.core.waits import NotYet, Requirement

log = logging.getLogger("k0slab")
T = TypeVar("T")
# Errors of the connection itself (not of the remote command): the step can be repeated.
SSH_TRANSPORT_ERRORS = (paramiko.SSHException, EOFError, OSError)
SSH_STEP_ATTEMPTS = 3
Progress = Callable[[str], None]
# QEMU's own memory per VM on top of the guest's (TCG translation cache and device state).
QEMU_OVERHEAD_BYTES = 300 << 20
JOIN_TOKEN_TTL = dt.timedelta(hours=2)
# Left in a lab.dump-logs folder: its files are k0slab's own, so the next dump may replace them.
DUMP_MARKER = ".k0slab-dump"
# Files of the lab's logs folder that a dump copies as they are.
DUMPED_LAB_LOGS = ("up-timings.json", "up-timeline.svg", "vagrant.log")


@dataclass
class UpOptions:
    profile: Profile
    k0s_binary: Path | None = None
    dry_run: bool = False
    restore: backupmod.Backup | None = None  # lab.restore: the controller starts from this backup
    airgap: bool = False  # download the release's airgap bundle for each arch
    airgap_bundles: list[Path] = field(default_factory=list)  # local image archives for every kubelet node


@dataclass
class _Run:
    """What the phases of one `up` share."""

    options: UpOptions
    state: LabState
    version: str = ""
    binaries: dict[str, Path] = field(default_factory=dict)  # arch -> k0s binary
    binary_disks: dict[str, Path] = field(default_factory=dict)  # arch -> raw disk with the binary
    payloads: dict[str, bootstrap.BinaryPayload] = field(default_factory=dict)  # arch -> what nodes check
    bundles: dict[str, airgap.BundleSet] = field(default_factory=dict)  # arch -> airgap archives and disk
    new_nodes: list[NodeState] = field(default_factory=list)
    join_token: str | None = None
    unjoined: list[str] | None = None  # workers with no k0s unit yet (None: not asked yet)
    ssh_seconds: dict[str, float] = field(default_factory=dict)


def host_memory_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


class Lab:
    def __init__(self, name: str, backend: VMBackend | None = None) -> None:
        self.dir = LabDir(name)
        self.name = self.dir.name
        self._backend = backend
        self._manager: PhaseManager | None = None  # while `up` runs: node steps are drawn on its timeline

    @property
    def backend(self) -> VMBackend:
        if self._backend is None:
            state = self.dir.load_or_none()
            self._backend = vmmod.backend_of(state)
        return self._backend

    # --- verbs -------------------------------------------------------------------------------
    def up(self, options: UpOptions, progress: Progress) -> dict[str, float]:
        """Bring the lab to a ready cluster; returns phase timings. Re-running on a ready lab is a no-op."""
        profile = options.profile
        existing = self.dir.load_or_none()
        self._validate(options, existing)
        if options.dry_run:
            self._print_plan(options, existing, progress)
            return {}
        self._backend = self._backend or vmmod.get_backend(profile.provider)
        with self.dir.locked():
            # A restored lab never reuses the old lab's subnet: the drill is a restore onto new IPs.
            avoid = frozenset({options.restore.subnet_index}) if options.restore else frozenset()
            state = existing or vmmod.open_or_create_lab(self.dir, self.backend, profile=profile.name,
                                                         avoid_subnets=avoid)
            state.profile, state.provider, state.box = profile.name, profile.provider, profile.box
            state.profile_spec = json.loads(profile.model_dump_json())
            state.egress = profile.egress
            for spec in profile.nodes:
                if spec.name in state.nodes:
                    # VMs made with vm.launch join the cluster in the role the profile gives them.
                    state.nodes[spec.name].role = spec.role
            self.dir.save(state)
            run = _Run(options=options, state=state)
            if self._unchanged_and_ready(run, progress):
                return {"check a ready lab": 0.0}
            manager = PhaseManager(progress)
            self._manager = manager
            with tallied(lambda: manager.current) as tally:
                try:
                    manager.run(self._phases(run, progress))
                finally:
                    self._manager = None
                    self._write_timings(manager, run, tally)
            self._summary(state, progress)
            return manager.timings

    def _write_timings(self, manager: PhaseManager, run: _Run, tally: RemoteTally) -> None:
        """up-timings.json (with the SSH connections and commands each node took, per phase), and the
        same run per node as a picture: up-timeline.svg."""
        spans = manager.timeline.spans
        write_private(self.dir.logs_dir / "up-timings.json", json.dumps(
            {"phases": manager.timings, "ssh_ready_s": run.ssh_seconds, "remote": tally.by_node(),
             "spans": [dataclasses.asdict(span) for span in spans]}, indent=2), mode=0o644)
        write_private(self.dir.logs_dir / "up-timeline.svg", timeline.svg(spans, f"lab.up {self.name}"), mode=0o644)

    def down(self, progress: Progress) -> None:
        """Remove everything of the lab: VMs, network, disks, keys, files. Safe on a half-made lab,
        and on one whose state file is corrupt: what libvirt holds is found by its lab metadata."""
        try:
            state = self.dir.load_or_none()
        except K0slabError as corrupt:
            progress(f"{corrupt.message}: removing what libvirt knows of lab {self.name}")
            state = None
        if state is None and not self.dir.path.exists() and not self.dir.disks_dir.exists():
            progress(f"no lab {self.name}: nothing to remove")
            return
        with self.dir.locked():
            backend = self._backend or vmmod.backend_of(state)
            if state is not None:
                with ThreadPoolExecutor(max_workers=max(1, len(state.nodes))) as pool:
                    list(pool.map(lambda n: backend.delete_vm(self.dir, state, n), state.nodes.values()))
                backend.remove_network(state)
            # Anything libvirt holds for this lab that the state did not record (a crash between
            # creating and saving) goes too.
            for resource in backend.owned_resources():
                if resource.lab == self.name:
                    backend.remove_resource(resource)
            self.dir.remove()
        kubeconfig.forget(self.name, progress)
        progress(f"lab {self.name} removed")

    def upgrade(self, options: upgrade.UpgradeOptions, progress: Progress) -> str:
        """Move every node to another k0s version (upgrade.py); returns the version reached."""
        upgrade.validate_options(options)
        self.require_up()  # before the lock, which would create the lab's folders
        with self.dir.locked():
            return upgrade.LabUpgrade(self, options, progress).run()

    def backup(self, output: Path | None, progress: Progress) -> Path:
        """`k0s backup` on the controller, fetched and checked, wrapped with the profile and k0s.yaml."""
        state, controller = self.require_up()
        if state.profile_spec is None:
            raise K0slabError(f"lab {self.name!r} does not record its profile (made by an older k0slab)",
                              f"run invoke lab.up --lab {self.name} with the same options once, then back up")
        profile = Profile.model_validate(state.profile_spec)
        output = output or backupmod.default_output(self.name)
        with self.dir.locked(), contextlib.closing(self.ssh(controller)) as ssh:
            progress(f"==> k0s backup on {controller.name}")
            remote, remote_sum = backupmod.run_k0s_backup(ssh)
            fetched = self.dir.path / backupmod.K0S_ARCHIVE
            try:
                ssh.get_file(remote, fetched)
                if hashlib.sha256(fetched.read_bytes()).hexdigest() != remote_sum:
                    raise K0slabError(f"the k0s archive from {controller.name} arrived damaged (sha256 differs)",
                                      f"run invoke lab.backup --lab {self.name} again")
                config = ssh.run(f"cat {CONFIG_PATH}").stdout
                backupmod.write_backup(output, k0s_archive=fetched, config_text=config, state=state,
                                       profile=profile, progress=progress)
            finally:
                fetched.unlink(missing_ok=True)
                ssh.run(f"rm -rf {backupmod.REMOTE_DIR}", check=False)
        progress(f"backup of lab {self.name} (k0s {state.k0s_version}): {output}")
        return output

    def restore(self, archive: Path, k0s_binary: Path | None, progress: Progress) -> dict[str, float]:
        """A new lab from a backup: checked before any VM exists, then lab.up with `k0s restore`
        on the first controller before its first start. A lab this archive began may be resumed."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="k0slab-restore-") as folder:
            restored = backupmod.read_backup(archive, Path(folder))
            existing = self.dir.load_or_none()
            if existing is not None and existing.restored_from != restored.sha256 or (
                    existing is None and self.dir.path.exists()):
                raise K0slabError(f"lab {self.name!r} already exists: a backup is restored into a new lab only",
                                  f"choose another --lab, or remove it first: invoke lab.down --lab {self.name}")
            old = restored.metadata
            progress(f"restoring lab {old['lab']} (k0s {old['k0s_version']}, backup of {old['created_at']}) "
                     f"as lab {self.name}")
            timings = self.up(UpOptions(profile=restored.profile(), k0s_binary=k0s_binary, restore=restored),
                              progress)
        self._report_stale_nodes(progress)
        return timings

    def _report_stale_nodes(self, progress: Progress) -> None:
        """The restored etcd still holds the old lab's Node objects; the ones the new lab has no VM
        for are deleted, and said so (nodes with the same names re-registered with their new IPs)."""
        state, controller = self.require_up()
        with contextlib.closing(self.ssh(controller)) as ssh:
            listed = [item["metadata"]["name"] for item in bootstrap.nodes(ssh)]
            for name in backupmod.stale_nodes(listed, list(state.nodes)):
                ssh.run(f"{bootstrap.KUBECTL} delete node {name} --ignore-not-found", timeout=60)
                progress(f"    removed Node {name}: it belonged to the old lab and has no VM here")

    def kubeconfig(self) -> Path:
        if not self.dir.kubeconfig.exists():
            raise K0slabError(
                f"lab {self.name!r} has no kubeconfig yet", f"bring it up: invoke lab.up --lab {self.name}"
            )
        return self.dir.kubeconfig

    def status(self) -> dict[str, Any]:
        state = self.dir.load()
        backend = self.backend
        controller = self._controller_node(state)
        vm_states = {n.name: backend.vm_state(state, n) for n in state.nodes.values()}

        def k0s_versions(node: NodeState) -> bootstrap.NodeVersions | str:
            if vm_states[node.name] != "Running":
                return "-"
            try:
                with contextlib.closing(self.ssh(node)) as ssh:
                    return bootstrap.node_versions(ssh)
            except Exception as exc:  # noqa: BLE001 - any SSH failure means "unreachable", said as such
                return f"unreachable ({type(exc).__name__})"

        with ThreadPoolExecutor(max_workers=max(1, len(state.nodes))) as pool:
            found = dict(zip(state.nodes, pool.map(k0s_versions, state.nodes.values()), strict=True))
        k0s_states = {name: v if isinstance(v, str) else v.state for name, v in found.items()}
        listed: dict[str, dict[str, Any]] = {}
        if controller is not None and k0s_states.get(controller.name) == "running":
            ssh = self.ssh(controller)
            with contextlib.suppress(NotYet, RemoteCommandError, OSError):
                listed = {item["metadata"]["name"]: item for item in bootstrap.nodes(ssh)}
            ssh.close()
        rows = []
        for node in sorted(state.nodes.values(), key=lambda n: n.index):
            item = listed.get(node.name)
            ready, condition = bootstrap.node_ready(item) if item else (False, "not registered")
            rows.append({
                "name": node.name, "role": node.role, "arch": node.arch, "ip": node.ip,
                "vm_state": vm_states[node.name], "k0s_state": k0s_states[node.name], "ready": ready,
                "condition": condition,
                "version": (item or {}).get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "-"),
                # After an interrupted upgrade these two differ: the binary is new, the process old.
                "k0s_on_disk": getattr(found[node.name], "on_disk", None) or "-",
                "k0s_running": getattr(found[node.name], "running", None) or "-",
            })
        return {
            "lab": self.name, "profile": state.profile, "k0s_version": state.k0s_version,
            "upgrade_target": state.upgrade_target,
            "kubeconfig": str(self.dir.kubeconfig) if self.dir.kubeconfig.exists() else None,
            "nodes": rows,
        }

    def logs(self, node_name: str) -> str:
        state = self.dir.load()
        node = vmmod.find_node(state, node_name)
        ssh = self.ssh(node)
        try:
            text = bootstrap.journal(ssh)
        finally:
            ssh.close()
        write_private(self.dir.logs_dir / f"{node_name}.k0s.log", text, mode=0o644)
        return text

    def dump_logs(self, folder: Path, force: bool = False) -> list[Path]:
        """Console logs, k0s journals and state of every node into `folder` (for CI artifacts).
        A folder an earlier dump wrote (it holds DUMP_MARKER) is refreshed; files of the same names
        that k0slab did not write are never replaced without force."""
        state = self.dir.load()
        names = [f"{n.name}{suffix}" for n in state.nodes.values() for suffix in (".console.log", ".k0s.log")]
        names += [*DUMPED_LAB_LOGS, "state.json"]
        taken = sorted(name for name in names if (folder / name).exists())
        if taken and not force and not (folder / DUMP_MARKER).exists():
            more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
            raise K0slabError(f"--dir {folder} already holds {taken[0]}{more}, which k0slab did not write there",
                              "give an empty or new folder, or pass --force to replace those files")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DUMP_MARKER).write_text(f"written by k0slab lab.dump-logs for lab {self.name}\n")
        written = []
        for node in state.nodes.values():
            console = self.dir.console_log(node.name)
            if console.exists():
                written.append(Path(shutil.copy(console, folder / console.name)))
            if self.backend.vm_state(state, node) == "Running":
                with contextlib.suppress(Exception):
                    target = folder / f"{node.name}.k0s.log"
                    target.write_text(self.logs(node.name))
                    written.append(target)
        for extra in DUMPED_LAB_LOGS:
            source = self.dir.logs_dir / extra
            if source.exists():
                written.append(Path(shutil.copy(source, folder / extra)))
        summary = folder / "state.json"
        summary.write_text(state.model_dump_json(indent=2))
        written.append(summary)
        return written

    def ssh(self, node: NodeState) -> SSHNode:
        return SSHNode(node.name, node.ip, self.dir.ssh_key, self.dir.known_hosts)

    def require_up(self) -> tuple[LabState, NodeState]:
        """The state and first controller of a lab that lab.up finished, or a clear refusal."""
        state = self.dir.load()
        controller = self._controller_node(state)
        if controller is None or not self.dir.kubeconfig.exists():
            raise K0slabError(f"lab {self.name!r} is not up", f"bring it up first: invoke lab.up --lab {self.name}")
        return state, controller

    # --- users (users.py does the work; the lab supplies its CA, controller and folders) ---
    def create_user(self, name: str, groups: list[str], days: int, **binding: Any) -> users.UserRecord:
        # Everything the request alone decides is refused before the lab is even looked at.
        users.validate_user_name(name)
        users.validate_groups(groups, binding.get("superuser", False))
        pki.validate_days(days, "--days")
        users.check_output_path(binding.get("output"), binding.get("force", False))
        state, controller = self.require_up()
        cert, key = self._ca()
        ssh = self.ssh(controller) if any(binding.get(k) for k in ("clusterrole", "role")) else None
        try:
            return users.create_user(
                name, groups, days, lab_name=self.name, server_url=f"https://{controller.ip}:6443",
                ca_cert_pem=cert, ca_key_pem=key, users_dir=self.dir.users_dir, controller=ssh, **binding,
            )
        finally:
            if ssh is not None:
                ssh.close()

    def check_user(self, name: str) -> users.UserCheck:
        users.validate_user_name(name)
        _, controller = self.require_up()
        with contextlib.closing(self.ssh(controller)) as ssh:
            return users.check_user(name, users_dir=self.dir.users_dir, controller=ssh)

    def revoke_user(self, name: str) -> tuple[users.UserRecord, bool]:
        users.validate_user_name(name)
        _, controller = self.require_up()
        with contextlib.closing(self.ssh(controller)) as ssh:
            return users.revoke_user(name, users_dir=self.dir.users_dir, controller=ssh)

    def users(self) -> list[users.UserRecord]:
        return users.list_users(self.dir.users_dir)

    def smoke(self, only: list[str] | None, user: str | None, progress: Progress,
              settings: smoke.SmokeSettings | None = None) -> smoke.SmokeReport:
        """Run the smoke checks on the controller; rbac uses a lab user (the first one by default)."""
        smoke.select_checks(only)
        state, controller = self.require_up()
        records = self.users()
        record = next((r for r in records if r.name == user), None) if user else (records[0] if records else None)
        if user and record is None:
            raise K0slabError(f"no user {user!r} in lab {self.name!r}", f"create it: invoke lab.user {user} --group G")
        expectation = smoke.ClusterExpectation.from_lab(state, cni=state.cni)
        with contextlib.closing(self.ssh(controller)) as ssh:
            # An unreachable controller is one error, not every check failing in turn.
            ssh.run("true")
            remote_kubeconfig = None
            if record is not None:
                remote_kubeconfig = f"/root/.k0slab-smoke-{record.name}.kubeconfig"
                ssh.put_text(record.kubeconfig.read_text(), remote_kubeconfig, mode=0o600)
            try:
                return smoke.run_smoke(ssh, expectation, only, remote_kubeconfig, settings=settings,
                                       progress=progress)
            finally:
                if remote_kubeconfig:
                    ssh.run(f"rm -f {shlex.quote(remote_kubeconfig)}", check=False)

    # --- validation (before anything is created) ---------------------------------------------
    def _validate(self, options: UpOptions, existing: LabState | None) -> None:
        profile = options.profile
        if existing is not None and existing.profile not in (None, profile.name):
            raise K0slabError(
                f"lab {self.name!r} was made with profile {existing.profile!r}, not {profile.name!r}",
                f"use another --lab name, or remove it first: invoke lab.down --lab {self.name}",
            )
        imagemod.load_recipe(profile.image)
        if options.k0s_binary is None:
            requested = release.resolve_version(profile.k0s_version)
            if existing is not None and existing.k0s_version and versions.older_than(requested, existing.k0s_version):
                raise K0slabError(
                    f"lab {self.name!r} runs k0s {existing.k0s_version}; lab.up would push the older {requested}",
                    f"pass --k0s-version {existing.k0s_version} (k0s does not support downgrades)",
                )
        else:
            for arch in {profile.node_arch(n) for n in profile.nodes}:
                release.check_local_binary(options.k0s_binary, arch)
        self._validate_airgap(options)
        if existing is not None and existing.nodes and existing.provider != profile.provider:
            # The provider is fixed when the lab is made: its VMs exist only to the backend that made them.
            raise K0slabError(
                f"lab {self.name!r} runs on provider {existing.provider}, not {profile.provider}",
                f"use --provider {existing.provider}, another --lab name, "
                f"or remove it: invoke lab.down --lab {self.name}",
            )
        if existing is not None and existing.nodes and existing.egress != profile.egress:
            raise K0slabError(
                f"lab {self.name!r} has egress {existing.egress}, not {profile.egress}: its network is made",
                f"use --egress {existing.egress}, another --lab name, or remove it: invoke lab.down --lab {self.name}",
            )
        if existing is not None:
            for spec in profile.nodes:
                have = existing.nodes.get(spec.name)
                if have is not None and have.role not in (spec.role, "none"):
                    raise K0slabError(
                        f"node {spec.name} is a {have.role} in lab {self.name!r}, the profile says {spec.role}",
                        f"use another --lab name, or remove it first: invoke lab.down --lab {self.name}",
                    )
        new = [n for n in profile.nodes if existing is None or n.name not in existing.nodes]
        # Each VM's own checks (memory, disk against the image) here, not after the lab folder exists.
        unsaved = LabState(name=self.name, subnet_index=1, network="", bridge="")
        for spec in new:
            vmmod.plan_node(unsaved, _vm_request(profile, spec))
        needed = sum(parse_size(profile.node_memory(n)) + QEMU_OVERHEAD_BYTES for n in new)
        available = host_memory_available()
        if needed > available:
            raise K0slabError(
                f"profile {profile.name!r} needs {format_size(needed)} of memory for {len(new)} new VMs, "
                f"the host has {format_size(available)} available",
                "use fewer --nodes or a smaller --memory (k0s needs 1G per controller, 0.5G per worker)",
            )

    def _validate_airgap(self, options: UpOptions) -> None:
        if options.profile.egress == "none" and not (options.airgap or options.airgap_bundles):
            raise K0slabError(
                "--egress none without images: the nodes could pull nothing and never become Ready",
                "add --airgap (the release's bundle), or --airgap-bundle PATH (an image archive), or use --egress nat",
            )
        if options.airgap and options.k0s_binary is not None:
            raise K0slabError("--airgap downloads a release's bundle, but --k0s-binary has no release",
                              "give the bundle itself with --airgap-bundle PATH, or drop --k0s-binary")
        for path in options.airgap_bundles:
            if not path.is_file():
                raise K0slabError(f"--airgap-bundle {path} is not a file",
                                  "give an OCI image layout tar, or the output of docker save / ctr export")
        airgap.check_archive_names(options.airgap_bundles)

    def _print_plan(self, options: UpOptions, existing: LabState | None, progress: Progress) -> None:
        profile = options.profile
        index = existing.subnet_index if existing else allocate_subnet(vmmod.subnets_in_use(self.backend))
        controller_ip = (
            existing.nodes[profile.controller.name].ip
            if existing and profile.controller.name in existing.nodes else node_ip(index, 1)
        )
        progress(f"plan for lab {self.name} (profile {profile.name}, provider {profile.provider}); nothing is created")
        progress("phases:")
        for phase in self._phases(None, progress):
            progress(f"  {phase.title}: {phase.plan}")
        bundles = (["the release's airgap bundle"] if options.airgap else []) + [str(p) for p in options.airgap_bundles]
        progress(f"egress {profile.egress}; airgap images: {', '.join(bundles) or 'none'}")
        taken = {n.index for n in existing.nodes.values()} if existing else set()
        for position, spec in enumerate(profile.nodes, start=1):
            if existing and spec.name in existing.nodes:
                ip, note = existing.nodes[spec.name].ip, "exists"
            else:
                host = next(i for i in range(position, 200) if i not in taken)
                taken.add(host)
                ip, note = node_ip(index, host), "new"
            progress(
                f"  {spec.name:<8} {spec.role:<18} {profile.node_arch(spec):<6} {profile.node_cpus(spec)} CPU "
                f"{profile.node_memory(spec):>5} {profile.node_disk(spec):>5}  {ip}  ({note})"
            )
        progress("k0s.yaml:\n" + render(_k0s_config(profile, controller_ip)))

    # --- phases ------------------------------------------------------------------------------
    def _phases(self, run: _Run | None, progress: Progress) -> list[Phase]:
        """The bring-up; with run=None only the titles are used (dry run)."""
        def bound(method: Callable[..., Any]) -> Callable[[], Any]:
            return lambda: method(run, progress)

        def check(method: Callable[..., bool]) -> Callable[[], bool]:
            return lambda: method(run)

        return [
            Phase("resolve k0s binary", bound(self._resolve_binary),
                  plan="download and verify the release binary per arch (or check --k0s-binary), "
                       "and put it on a read-only disk"),
            Phase("check airgap bundles", bound(self._prepare_airgap), check(self._wants_airgap),
                  plan="with --airgap/--airgap-bundle: check the bundles hold every image k0s needs, "
                       "before any VM exists"),
            Phase("create network and VMs", bound(self._create_vms), check(self._vms_missing),
                  plan="define the lab network with a DHCP reservation per node, an overlay and a domain per VM"),
            Phase("wait for SSH", bound(self._wait_ssh),
                  plan="pin each node's host key from the guest agent, then wait for root SSH"),
            Phase("push k0s binary and config", bound(self._push),
                  plan="copy k0s from the binary disk on each node, /etc/k0s/k0s.yaml on the controller"),
            Phase("restore the backup on the controller", bound(self._restore_backup), check(self._restore_pending),
                  plan="lab.restore only: k0s restore on the first controller before its first start"),
            Phase("cluster CA and join token", bound(self._join_material), check(self._workers_to_join),
                  plan="make the lab CA and a worker join token for the nodes that have not joined"),
            Phase("install and start k0s on every node", bound(self._start_k0s),
                  plan="k0s install and start: the controller first, then the workers with the token"),
            Phase("wait for /readyz and every node Ready", bound(self._wait_ready),
                  plan="poll /readyz and the Node objects; fail early on a cause waiting cannot cure"),
            Phase("fetch the admin kubeconfig", bound(self._fetch_kubeconfig),
                  plan="admin.conf pointed at the controller's lab IP, with the lab's names"),
        ]

    def _fingerprint(self, run: _Run) -> str:
        """What a finished `up` was asked for: the profile and the k0s binary (by content)."""
        binary = run.options.k0s_binary
        source = hashlib.sha256(binary.read_bytes()).hexdigest() if binary else str(run.options.profile.k0s_version)
        bundles = json.dumps([run.options.airgap, [str(p.resolve()) for p in run.options.airgap_bundles]])
        return hashlib.sha256((run.options.profile.model_dump_json() + source + bundles).encode()).hexdigest()

    def _unchanged_and_ready(self, run: _Run, progress: Progress) -> bool:
        """The fast path of a re-run: same request, every VM running, every node Ready: one SSH call."""
        state = run.state
        if state.up_fingerprint != self._fingerprint(run) or not self.dir.kubeconfig.exists():
            return False
        nodes = self._wanted_nodes(run) if all(n.name in state.nodes for n in run.options.profile.nodes) else []
        if not nodes or any(self.backend.vm_state(state, n) != "Running" for n in nodes):
            return False
        ssh = self.ssh(self._controller_node(state))
        try:
            bootstrap.wait_nodes_ready(ssh, [n.name for n in nodes if n.role != "controller"])
        except (NotYet, RemoteCommandError, OSError) as exc:
            progress(f"lab {self.name} needs work: {exc}")
            return False
        finally:
            ssh.close()
        progress(f"lab {self.name} is up and unchanged: every node is Ready")
        progress(f"export KUBECONFIG={self.dir.kubeconfig}")
        return True

    def _controller_node(self, state: LabState) -> NodeState | None:
        return next((n for n in state.nodes.values() if n.role in CONTROLLER_ROLES), None)

    def _resolve_binary(self, run: _Run, progress: Progress) -> None:
        profile = run.options.profile
        run.version = release.resolve_version(profile.k0s_version) if run.options.k0s_binary is None else ""
        for arch in sorted({profile.node_arch(n) for n in profile.nodes}):
            binary = release.binary_for(run.version or None, run.options.k0s_binary, arch, progress)
            # Read and hashed once per arch: the real k0s is ~250 MB, and every node needs its sum.
            data = binary.read_bytes()
            run.binaries[arch] = binary
            run.payloads[arch] = bootstrap.BinaryPayload(hashlib.sha256(data).hexdigest(), len(data))
            run.binary_disks[arch] = self._binary_disk(data, arch)
            progress(f"    {arch}: {binary}")

    def _wants_airgap(self, run: _Run) -> bool:
        return run.options.airgap or bool(run.options.airgap_bundles)

    def _prepare_airgap(self, run: _Run, progress: Progress) -> None:
        """Before any VM exists: the bundles of every arch, checked against what k0s needs."""
        options = run.options
        controller_ip = node_ip(run.state.subnet_index, 1)  # images do not depend on it
        run.bundles = airgap.prepare(
            tag=run.version, binaries=run.binaries, config_text=render(_k0s_config(options.profile, controller_ip)),
            download=options.airgap, local=options.airgap_bundles, disks_dir=self.dir.disks_dir,
            check_complete=options.airgap or options.profile.egress == "none", host_arch=host_arch(),
            progress=progress,
        )

    def _binary_disk(self, data: bytes, arch: str) -> Path:
        """A raw disk holding the binary, attached read-only to every VM of that arch: each node
        copies k0s from it locally instead of receiving it through SSH encryption, which is
        slow under emulation."""
        disk = self.dir.disks_dir / f"k0s-{arch}.img"
        padded = data + b"\0" * (-len(data) % 512)
        if not disk.exists() or disk.read_bytes() != padded:
            tmp = disk.with_suffix(".tmp")
            tmp.write_bytes(padded)
            # Root only like the overlays: libvirt chowns it to the QEMU user while a domain uses it.
            tmp.chmod(0o600)
            tmp.replace(disk)
        return disk

    def _vms_missing(self, run: _Run) -> bool:
        state = run.state
        wanted = {n.name for n in run.options.profile.nodes}
        return any(
            name not in state.nodes or self.backend.vm_state(state, state.nodes[name]) != "Running"
            for name in wanted
        )

    def _create_vms(self, run: _Run, progress: Progress) -> None:
        profile, state = run.options.profile, run.state
        for spec in profile.nodes:
            reserved = state.nodes.get(spec.name)
            if reserved is None:
                run.new_nodes.append(vmmod.plan_node(state, _vm_request(profile, spec)))
                state.nodes[spec.name] = run.new_nodes[-1]
            elif self.backend.vm_state(state, reserved) == "Absent":
                # Reserved by a run that stopped before its VM existed (interrupted, or libvirt was
                # down): create it now with the address it already has, instead of failing to start it.
                run.new_nodes.append(reserved)
        # Bundles go only where a kubelet runs: a pure controller pulls no images.
        disks = {
            node.name: (str(run.binary_disks[node.arch]),)
            + ((str(run.bundles[node.arch].disk),) if node.arch in run.bundles and node.role != "controller" else ())
            for node in run.new_nodes
        }
        vmmod.create_nodes(self.dir, state, run.new_nodes, self.backend, progress, profile.kernel_args, disks)
        for node in state.nodes.values():
            if node not in run.new_nodes and self.backend.vm_state(state, node) != "Running":
                progress(f"    {node.name} was {self.backend.vm_state(state, node)}: starting it")
                self.backend.start_vm(state, node)
        for node in run.new_nodes:
            progress(f"    {node.name}: {node.role}, {node.arch}, {node.ip}")

    def _wanted_nodes(self, run: _Run) -> list[NodeState]:
        return [run.state.nodes[n.name] for n in run.options.profile.nodes]

    def _wait_ssh(self, run: _Run, progress: Progress) -> None:
        drawing = self._manager.timeline if self._manager else None  # None outside `up`
        started = drawing.now() if drawing else 0.0

        def ready(node: NodeState, seconds: float) -> None:
            progress(f"    {node.name}: SSH ready after {seconds:.1f}s")
            if drawing:
                drawing.add(node.name, "wait for SSH", started, started + seconds)

        run.ssh_seconds = vmmod.wait_for_ssh(
            self.dir, run.state, self._wanted_nodes(run), self.backend,
            timeout=run.options.profile.timeouts.boot, on_ready=ready,
        )

    def _on(self, node: NodeState, work: Callable[[SSHNode], T]) -> T:
        """Run a node step over a fresh SSH connection; a dropped connection retries the whole step.
        Steps check before they act (service running? unit installed?), so repeating one is safe."""
        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.info("%s: SSH failed during a step (%s: %s), retrying (attempt %d of %d)", node.name,
                     type(error).__name__, error, state.attempt_number + 1, SSH_STEP_ATTEMPTS)

        manager = self._manager
        drawn = manager.timeline.span(node.name, manager.current) if manager else contextlib.nullcontext()
        with drawn:
            for attempt in Retrying(
                retry=retry_if_exception_type(SSH_TRANSPORT_ERRORS), stop=stop_after_attempt(SSH_STEP_ATTEMPTS),
                wait=wait_random_exponential(multiplier=1, max=8), before_sleep=log_retry, reraise=True,
                sleep=cancel.sleep,
            ):
                with attempt:
                    with contextlib.closing(self.ssh(node)) as ssh:
                        return work(ssh)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _parallel(self, nodes: list[NodeState], work: Callable[[SSHNode, NodeState], T]) -> list[T]:
        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            return list(pool.map(lambda node: self._on(node, lambda ssh: work(ssh, node)), nodes))

    def _push(self, run: _Run, progress: Progress) -> None:
        def push(ssh: SSHNode, node: NodeState) -> str:
            how = bootstrap.install_binary_from_disk(ssh, run.payloads[node.arch])
            if how == "stale":
                ssh.put_file(run.binaries[node.arch], bootstrap.K0S_BINARY, mode=0o755)
                how = "sftp"
            version = bootstrap.k0s_version(ssh)
            progress(f"    {node.name}: k0s {version} ({how})")
            return version

        def push_and_place(ssh: SSHNode, node: NodeState) -> str:
            version = push(ssh, node)
            bundle = run.bundles.get(node.arch)
            if bundle is not None and node.role != "controller":
                how = airgap.place_bundles(ssh, bundle.sizes)
                progress(f"    {node.name}: airgap bundles in {airgap.IMAGES_DIR} ({how})")
            return version

        nodes = self._wanted_nodes(run)
        versions = dict(zip((n.name for n in nodes), self._parallel(nodes, push_and_place), strict=True))
        controller = self._controller_node(run.state)
        config = _k0s_config(run.options.profile, controller.ip)
        self._on(controller, lambda ssh: bootstrap.place_config(ssh, render(config)))
        run.state.cni = config["spec"].get("network", {}).get("provider", "kuberouter")
        # What the binary says, not what was asked: a local binary has no tag of its own.
        run.state.k0s_version = versions[controller.name]
        self.dir.save(run.state)

    def _restore_pending(self, run: _Run | None) -> bool:
        if run is None or run.options.restore is None:
            return False
        return not self._on(self._controller_node(run.state), backupmod.restored_already)

    def _restore_backup(self, run: _Run, progress: Progress) -> None:
        """Before the controller's first start: the backup's CA becomes the lab's (kubeconfigs and
        join tokens are signed by it), then `k0s restore` fills the data dir."""
        restored = run.options.restore
        cert, key = restored.ca()
        write_private(self.dir.pki_dir / "ca.key", key)
        write_private(self.dir.pki_dir / "ca.crt", cert, mode=0o644)
        controller = self._controller_node(run.state)

        def restore(ssh: SSHNode) -> None:
            backupmod.restore_on_controller(ssh, restored, lambda local, remote: ssh.put_file(local, remote))

        self._on(controller, restore)
        run.state.restored_from = restored.sha256
        self.dir.save(run.state)
        progress(f"    {controller.name}: k0s restore done (archived config kept in {backupmod.RESTORED_CONFIG})")

    def _workers_to_join(self, run: _Run) -> bool:
        """Whether any worker still lacks its k0s unit; asked once per run, then kept up to date."""
        if run.unjoined is None:
            workers = [n for n in self._wanted_nodes(run) if n.role == "worker"]
            states = self._parallel(workers, lambda ssh, node: bootstrap.service_state(ssh, "worker"))
            run.unjoined = [n.name for n, state in zip(workers, states, strict=True) if state == "absent"]
        return bool(run.unjoined)

    def _ca(self) -> tuple[bytes, bytes]:
        cert, key = self.dir.pki_dir / "ca.crt", self.dir.pki_dir / "ca.key"
        if not cert.exists():
            cert_pem, key_pem = pki.create_ca()
            write_private(key, key_pem)
            write_private(cert, cert_pem, mode=0o644)
        return cert.read_bytes(), key.read_bytes()

    def _join_material(self, run: _Run, progress: Progress) -> None:
        """A pre-shared worker token the controller learns from its manifests folder at start, so
        workers can start joining while the controller is still coming up."""
        controller = self._controller_node(run.state)
        ca_cert, _ = self._ca()
        token_id, secret = token.new_bootstrap_token()
        expiry = dt.datetime.now(dt.UTC) + JOIN_TOKEN_TTL
        manifest = token.bootstrap_secret_manifest(token_id, secret, "worker", expiry, "k0slab worker join")
        self._on(controller, lambda ssh: bootstrap.place_join_secret(ssh, token_id, manifest))
        run.state.join_token_id = token_id
        self.dir.save(run.state)
        run.join_token = token.worker_token(ca_cert, f"https://{controller.ip}:6443", token_id, secret)
        progress(f"    join token {token_id} valid until {expiry:%H:%M} UTC (invalidated after the join)")

    def _start_k0s(self, run: _Run, progress: Progress) -> None:
        """Controller and workers at once: workers retry their join until the controller's API
        answers, which the pre-shared token makes possible."""
        join_token = run.join_token

        def start(ssh: SSHNode, node: NodeState) -> None:
            state = bootstrap.service_state(ssh, node.role)
            if state == "running":
                progress(f"    {node.name}: k0s already running")
                return
            if state == "absent":
                if node.role == "worker":
                    if join_token is None:
                        raise K0slabError(f"{node.name}: no join token made in this run", "run lab.up again")
                    bootstrap.install_worker(ssh, join_token, node.ip)
                else:
                    cert, key = self._ca()
                    bootstrap.place_ca(ssh, cert, key)
                    bootstrap.install_controller(ssh, node.role, node.ip)
            bootstrap.start(ssh)
            progress(f"    {node.name}: k0s {node.role} started" + (", joining" if node.role == "worker" else ""))

        self._parallel(self._wanted_nodes(run), start)
        run.unjoined = []

    def _wait_ready(self, run: _Run, progress: Progress) -> None:
        controller = self._controller_node(run.state)
        expected = [n.name for n in self._wanted_nodes(run) if n.role != "controller"]
        timeout = run.options.profile.timeouts.ready
        hint = (f"k0s journals and kubectl get pods -A -o wide are saved in {self.dir.logs_dir} "
                f"(invoke lab.logs NODE --lab {self.name})")
        ssh = self.ssh(controller)

        def fresh_on_drop(probe: Callable[[SSHNode], T]) -> Callable[[], T]:
            # A dropped connection is one more reason "not yet": reconnect on the next attempt.
            def attempt() -> T:
                try:
                    return probe(ssh)
                except SSH_TRANSPORT_ERRORS as exc:
                    ssh.close()
                    raise NotYet(f"SSH to {controller.name}: {type(exc).__name__}: {exc}") from None
            return attempt

        try:
            try:
                Requirement(f"the API server of {controller.name} to answer /readyz with ok", hint,
                            timeout_s=timeout).wait(fresh_on_drop(bootstrap.readyz))
                ready_or_cause = self._ready_or_definite_cause(run, expected, hint)

                def ready_here(c: SSHNode) -> dict[str, dict[str, Any]]:
                    listed = ready_or_cause(c)
                    if run.options.restore is not None:
                        # The restored etcd holds each node's old Node object, Ready and with the old
                        # IP, until the new kubelet updates it: wait for that, do not fail on it.
                        moved = [n for n in expected if bootstrap.internal_ip(listed[n]) != run.state.nodes[n].ip]
                        if moved:
                            raise NotYet(f"{', '.join(moved)} still carry the old lab's INTERNAL-IP")
                    return listed

                listed = Requirement(f"nodes {', '.join(expected)} to be Ready", hint, timeout_s=timeout).wait(
                    fresh_on_drop(ready_here)
                )
            except K0slabError:
                self._save_journals(run)
                raise
            self._check_node_ips(run, listed, expected)
            token_id = run.state.join_token_id
            if token_id and not self._workers_to_join(run):
                bootstrap.remove_join_secret(ssh, token_id)
                run.state.join_token_id = None
                self.dir.save(run.state)
        finally:
            ssh.close()

    def _check_node_ips(self, run: _Run, listed: dict[str, dict[str, Any]], expected: list[str]) -> None:
        for name in expected:
            ip = bootstrap.internal_ip(listed[name])
            if ip != run.state.nodes[name].ip:
                raise K0slabError(
                    f"node {name} advertises INTERNAL-IP {ip}, not its lab IP {run.state.nodes[name].ip}",
                    "kubelet must get --node-ip; check the unit's ExecStart with: invoke lab.ssh " + name,
                )

    def _ready_or_definite_cause(self, run: _Run, expected: list[str], hint: str) -> Callable[[SSHNode], Any]:
        """A Ready probe that gives up early when the pods show that waiting cannot help (diagnose.py)."""
        watch = diagnose.StallWatch(diagnose.stall_window([n.accel for n in self._wanted_nodes(run)]))

        def probe(controller: SSHNode) -> dict[str, dict[str, Any]]:
            items = bootstrap.nodes(controller)
            try:
                return bootstrap.check_nodes_ready(items, expected)
            except NotYet:
                pods = bootstrap.pods(controller)
                cause = diagnose.definite_cause(
                    pods, run.state.egress, lambda ns, pod, c: bootstrap.previous_log(controller, ns, pod, c),
                    bootstrap.events(controller))
                if cause is not None:
                    raise K0slabError(cause.message, f"{cause.fix}; {hint}") from None
                stalled = watch.stalled_for(diagnose.progress_signature(pods, items))
                if stalled is not None:
                    raise K0slabError(
                        f"no progress for {stalled:.0f}s: {diagnose.not_ready_summary(items)}",
                        f"the nodes likely cannot get their images: check egress or the airgap bundle; {hint}",
                    ) from None
                raise

        return probe

    def _save_journals(self, run: _Run) -> None:
        for node in self._wanted_nodes(run):
            with contextlib.suppress(Exception):
                self.logs(node.name)
        controller = self._controller_node(run.state)
        with contextlib.suppress(Exception), contextlib.closing(self.ssh(controller)) as ssh:
            write_private(self.dir.logs_dir / "pods-wide.txt", bootstrap.pods_wide(ssh), mode=0o644)

    def _fetch_kubeconfig(self, run: _Run, progress: Progress) -> None:
        controller = self._controller_node(run.state)
        text = self._on(controller, lambda ssh: bootstrap.admin_kubeconfig(ssh, controller.ip, self.name))
        write_private(self.dir.kubeconfig, text)
        run.state.up_fingerprint = self._fingerprint(run)
        self.dir.save(run.state)

    def _summary(self, state: LabState, progress: Progress) -> None:
        for node in sorted(state.nodes.values(), key=lambda n: n.index):
            progress(f"    {node.name:<8} {node.role:<18} {node.arch:<6} {node.ip}")
        progress(f"lab {self.name} is ready: export KUBECONFIG={self.dir.kubeconfig}")


def _k0s_config(profile: Profile, controller_ip: str) -> dict[str, Any]:
    return cluster_config(controller_ip, profile.k0s, telemetry=profile.telemetry, pull_never=profile.egress == "none")


def _vm_request(profile: Profile, spec: NodeSpec) -> vmmod.VMRequest:
    return vmmod.VMRequest(
        name=spec.name, cpus=profile.node_cpus(spec), memory=profile.node_memory(spec),
        disk=profile.node_disk(spec), arch=profile.node_arch(spec), image=profile.image, role=spec.role,
    )


def prune(progress: Progress, backends: list[VMBackend] | None = None) -> list[str]:
    """Remove what k0slab created that no lab state owns (after a crash or a lost state file).
    Only resources carrying k0slab's libvirt metadata, Vagrant machines in k0slab's lab folders,
    and k0slab's own folders are touched."""
    if backends is None:
        backends = [vmmod.get_backend("libvirt")]
        if shutil.which("vagrant"):
            backends.insert(0, vmmod.get_backend("vagrant"))  # its machines go before their folders
    owners: dict[str, LabState] = {}
    for folder in all_labs():
        try:
            if (state := folder.load_or_none()) is not None:
                owners[folder.name] = state
        except K0slabError:
            pass  # a corrupt state owns nothing
    removed = []
    for backend in backends:
        for resource in backend.owned_resources():
            orphan = resource.lab not in owners or snapshots.is_orphan(resource, owners.get(resource.lab))
            if orphan and f"{resource.kind} {resource.name}" not in removed:
                backend.remove_resource(resource)
                removed.append(f"{resource.kind} {resource.name}")
    for folder in (labs_dir(), vm_disks_dir(), data_home() / "locks"):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            name = entry.name.removesuffix(".lock")
            if name not in owners:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
                removed.append(str(entry))
    for item in removed:
        progress(f"removed {item}")
    progress(f"prune: {len(removed)} leftovers removed" if removed else "prune: nothing to remove")
    return removed
