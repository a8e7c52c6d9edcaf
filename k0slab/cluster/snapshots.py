"""Lab snapshots: a ready lab saved as one point in time, and brought back in seconds.

A snapshot is an internal qcow2 snapshot of every VM with its memory state (libvirt 9.0 cannot
revert external snapshots; the probe results are in docs/snapshots.md). All VMs are suspended
before the first is saved and resumed after the last, so the nodes agree on one moment. A revert
restores every VM paused, resumes them together, corrects their clocks, and returns only once the
API answers and every node is Ready, both asked from the host through the lab's own kubeconfig
(apiclient.LabAPI), so that the kubeconfig is proven too.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from k0slab.cluster.apiclient import LabAPI
from k0slab.cluster.k0s import bootstrap
from k0slab.core.errors import K0slabError
from k0slab.core.phases import Phase, PhaseManager
from k0slab.core.profile import CONTROLLER_ROLES
from k0slab.core.state import LabState, NodeState, RevertRecord, SnapshotRecord
from k0slab.core.units import format_size
from k0slab.core.waits import NotYet, Requirement
from k0slab.vms.backend import OwnedResource, SnapshotBackend, snapshot_backend
from k0slab.vms.domain import domain_name

if TYPE_CHECKING:
    from k0slab.cluster.lab import Lab

Progress = Callable[[str], None]
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,38}[a-z0-9])?$")
# A restored VM runs at once; what remains is heartbeats after the clock jump (kubelet: every 10 s,
# node-monitor grace 40 s) and the API's own checks. Generous for TCG on a loaded machine.
REVERT_READY_TIMEOUT_S = 180.0
GUEST_AGENT_TIMEOUT_S = 30.0


def validate_snapshot_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise K0slabError(
            f"snapshot name {name!r} is not valid",
            "use 1-40 lowercase letters, digits, '.', '_' and '-', starting and ending with a letter or digit",
        )
    return name


def node_identity(node: NodeState) -> str:
    """What a node must still be for its snapshot to fit: a revert restores exactly this VM."""
    return f"{node.role} {node.arch} {node.cpus}cpu {node.memory_mib}MiB {node.mac}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def is_orphan(resource: OwnedResource, state: LabState | None) -> bool:
    """A libvirt snapshot of an existing lab that its state does not record (a crash mid-snapshot)."""
    if resource.kind != "snapshot" or state is None:
        return False
    domain, snapshot = resource.name.split("/", 1)
    recorded = {domain_name(state.name, n.name) for n in state.nodes.values()}
    return snapshot not in state.snapshots or domain not in recorded


class Snapshots:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.dir = lab.dir

    # --- verbs -------------------------------------------------------------------------------
    def take(self, name: str, progress: Progress, *, force: bool = False) -> SnapshotRecord:
        validate_snapshot_name(name)
        backend = snapshot_backend(self.lab.backend)
        # Bad input is refused before the lock: a refusal creates nothing, not even the lock file.
        self._check_takeable(self.dir.load(), name, force)
        with self.dir.locked():
            state = self.dir.load()
            self._check_takeable(state, name, force)
            nodes = self._require_ready(state, backend)
            if name in state.snapshots:
                self._delete_everywhere(state, backend, name)
                del state.snapshots[name]
                self.dir.save(state)
            added = self._save_all(state, backend, nodes, name, progress)
            record = SnapshotRecord(
                name=name, created=_now(), profile=state.profile, k0s_version=state.k0s_version,
                nodes={n.name: node_identity(n) for n in nodes}, added_bytes=added,
            )
            state.snapshots[name] = record
            self.dir.save(state)
        progress(f"snapshot {name} of lab {self.dir.name}: {len(nodes)} VMs, "
                 f"{format_size(sum(added.values()))} on disk")
        return record

    def delete(self, name: str, progress: Progress) -> None:
        validate_snapshot_name(name)
        backend = snapshot_backend(self.lab.backend)
        self._record(self.dir.load(), name)
        with self.dir.locked():
            state = self.dir.load()
            self._record(state, name)
            self._delete_everywhere(state, backend, name)
            del state.snapshots[name]
            if state.last_revert is not None and state.last_revert.snapshot == name:
                state.last_revert = None
            self.dir.save(state)
        progress(f"snapshot {name} of lab {self.dir.name} removed")

    def list(self) -> list[dict[str, Any]]:
        state = self.dir.load()
        last = state.last_revert.snapshot if state.last_revert else None
        return [
            {
                "name": record.name, "created": record.created, "k0s_version": record.k0s_version or "-",
                "size": format_size(sum(record.added_bytes.values())),
                "size_bytes": sum(record.added_bytes.values()), "nodes": len(record.nodes),
                "last_reverted": record.name == last,
            }
            for record in sorted(state.snapshots.values(), key=lambda r: r.created)
        ]

    def revert(self, name: str, progress: Progress) -> dict[str, float]:
        """Bring every VM back to the snapshot; returns the time each step to a usable lab took."""
        validate_snapshot_name(name)
        backend = snapshot_backend(self.lab.backend)
        state = self.dir.load()
        self._fitting_nodes(state, self._record(state, name))
        # No queueing: reverting under another command (an `up` adding a worker) would undo its work.
        with self.dir.locked(wait_s=0):
            state = self.dir.load()
            record = self._record(state, name)
            nodes = self._fitting_nodes(state, record)
            missing = [n.name for n in nodes if name not in backend.vm_snapshots(state, n)]
            if missing:
                raise K0slabError(
                    f"snapshot {name!r} is recorded but libvirt has none for {', '.join(missing)}",
                    f"remove the record with: invoke lab.snapshot {name} --delete --lab {self.dir.name}",
                )
            manager = PhaseManager(progress)
            manager.run(self._revert_phases(state, backend, nodes, name, self._api(state)))
            state.last_revert = RevertRecord(snapshot=name, k0s_version=record.k0s_version, at=_now())
            if state.k0s_version != record.k0s_version:
                # The VMs run the snapshot's k0s now: a re-run of lab.up must not take the lab as unchanged.
                state.k0s_version, state.up_fingerprint = record.k0s_version, None
            self.dir.save(state)
        total = sum(manager.timings.values())
        progress(f"lab {self.dir.name} is back at snapshot {name} (k0s {record.k0s_version or '-'}) "
                 f"and ready in {total:.1f}s")
        return manager.timings

    # --- steps -------------------------------------------------------------------------------
    def _revert_phases(self, state: LabState, backend: SnapshotBackend, nodes: list[NodeState], name: str,
                       api: LabAPI) -> list[Phase]:
        """Restore, then each thing a user needs of the lab, in the order it becomes true."""
        hint = (f"k0s journals: invoke lab.logs NODE --lab {self.dir.name}; "
                f"VMs: invoke lab.status --lab {self.dir.name}")
        registered = [n.name for n in nodes if n.role not in ("controller", "none")]

        def wait(description: str, probe_once: Callable[[], Any], timeout_s: float = REVERT_READY_TIMEOUT_S) -> None:
            Requirement(description, hint, timeout_s=timeout_s, min_interval_s=0.2, max_interval_s=2.0).wait(
                probe_once)

        return [
            Phase("restore every VM's memory and disk", lambda: self._restore_all(state, backend, nodes, name)),
            Phase("correct the guest clocks", lambda: _parallel(nodes, lambda n: wait(
                f"the guest agent of {n.name} to set its clock", lambda: backend.set_guest_time(state, n),
                GUEST_AGENT_TIMEOUT_S))),
            Phase("API answers /readyz through the lab's kubeconfig", lambda: wait(
                f"the API server at {api.host}:{api.port} to answer /readyz with ok ({self.dir.kubeconfig})",
                api.readyz)),
            Phase("every node Ready", lambda: wait(
                f"nodes {', '.join(registered)} to be Ready",
                lambda: bootstrap.check_nodes_ready(api.nodes(), registered))),
        ]

    def _record(self, state: LabState, name: str) -> SnapshotRecord:
        if name not in state.snapshots:
            known = ", ".join(sorted(state.snapshots)) or "none"
            raise K0slabError(
                f"lab {self.dir.name!r} has no snapshot {name!r} (it has: {known})",
                f"list them with: invoke lab.snapshots --lab {self.dir.name}",
            )
        return state.snapshots[name]

    def _fitting_nodes(self, state: LabState, record: SnapshotRecord) -> list[NodeState]:
        now = {n.name: node_identity(n) for n in state.nodes.values()}
        if record.profile != state.profile or record.nodes != now:
            changed = sorted(k for k in set(now) | set(record.nodes) if now.get(k) != record.nodes.get(k))
            raise K0slabError(
                f"snapshot {record.name!r} was taken with profile {record.profile!r} and nodes "
                f"{', '.join(sorted(record.nodes))}; lab {self.dir.name!r} now has profile {state.profile!r}"
                + (f" and differs in {', '.join(changed)}" if changed else ""),
                "bring the lab back to that node set, or take a new snapshot of this one",
            )
        return sorted(state.nodes.values(), key=lambda n: n.index)

    def _check_takeable(self, state: LabState, name: str, force: bool) -> None:
        if name in state.snapshots and not force:
            raise K0slabError(
                f"snapshot {name!r} of lab {self.dir.name!r} already exists "
                f"(taken {state.snapshots[name].created})",
                f"pick another name, replace it with --force, or remove it: invoke lab.snapshot {name} "
                f"--delete --lab {self.dir.name}",
            )
        if _controller(state) is None or not self.dir.kubeconfig.exists():
            raise K0slabError(
                f"lab {self.dir.name!r} is not up (no cluster was brought up in it)",
                f"bring it up first: invoke lab.up --lab {self.dir.name}",
            )

    def _require_ready(self, state: LabState, backend: SnapshotBackend) -> list[NodeState]:
        nodes = sorted(state.nodes.values(), key=lambda n: n.index)
        registered = [n.name for n in nodes if n.role not in ("controller", "none")]
        try:
            stopped = [f"{n.name} {vm}" for n in nodes if (vm := backend.vm_state(state, n)) != "Running"]
            if stopped:
                raise NotYet("VMs not running: " + ", ".join(stopped))
            bootstrap.check_nodes_ready(self._api(state).nodes(), registered)
        except NotYet as exc:
            raise K0slabError(
                f"lab {self.dir.name!r} is not ready ({exc}): "
                "a snapshot is only taken of a lab whose nodes are all Ready",
                f"repair it with: invoke lab.up --lab {self.dir.name}, then snapshot again",
            ) from None
        return nodes

    def _api(self, state: LabState) -> LabAPI:
        if _controller(state) is None or not self.dir.kubeconfig.exists():
            raise K0slabError(f"lab {self.dir.name!r} has no controller or no kubeconfig",
                              f"bring it up: invoke lab.up --lab {self.dir.name}")
        return LabAPI(self.dir.kubeconfig)

    def _save_all(self, state: LabState, backend: SnapshotBackend, nodes: list[NodeState], name: str,
                  progress: Progress) -> dict[str, int]:
        """Suspend all, save each, resume all: one point in time. A failure leaves no part behind."""
        added: dict[str, int] = {}
        try:
            _parallel(nodes, lambda n: backend.suspend_vm(state, n))
            for node in nodes:
                added[node.name] = backend.snapshot_vm(self.dir, state, node, name)
                progress(f"    {node.name}: saved ({format_size(added[node.name])})")
        except BaseException:
            self._delete_everywhere(state, backend, name)
            raise
        finally:
            _parallel(nodes, lambda n: backend.resume_vm(state, n))
        return added

    def _restore_all(self, state: LabState, backend: SnapshotBackend, nodes: list[NodeState], name: str) -> None:
        _parallel(nodes, lambda n: backend.revert_vm(state, n, name))
        _parallel(nodes, lambda n: backend.resume_vm(state, n))

    @staticmethod
    def _delete_everywhere(state: LabState, backend: SnapshotBackend, name: str) -> None:
        _parallel(list(state.nodes.values()), lambda n: backend.delete_snapshot(state, n, name))


def _controller(state: LabState) -> NodeState | None:
    return next((n for n in state.nodes.values() if n.role in CONTROLLER_ROLES), None)


def _parallel(nodes: list[NodeState], work: Callable[[NodeState], Any]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        return list(pool.map(work, nodes))
