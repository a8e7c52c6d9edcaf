"""lab.snapshot and lab.revert with a recording backend: one consistent point in time, nothing left
of a failed snapshot, a held lock refused at once, orphans found by prune. The real thing runs in
tests/integration/test_snapshots.py."""
from __future__ import annotations

import fcntl

import pytest

from k0slab.cluster import snapshots as snapmod
from k0slab.cluster.lab import Lab, prune
from k0slab.cluster.snapshots import Snapshots, node_identity
from k0slab.core.errors import K0slabError
from k0slab.core.state import LabDir, LabState, NodeState, SnapshotRecord
from k0slab.vms.backend import OwnedResource, SnapshotBackend


class RecordingBackend:
    """Every call in order; `fail_snapshot_of` makes saving that node fail."""

    name = "fake"

    def __init__(self, fail_snapshot_of: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail_snapshot_of = fail_snapshot_of
        self.saved: dict[str, set[str]] = {}

    def vm_state(self, state: LabState, node: NodeState) -> str:
        return "Running"

    def suspend_vm(self, state: LabState, node: NodeState) -> None:
        self.calls.append(f"suspend {node.name}")

    def resume_vm(self, state: LabState, node: NodeState) -> None:
        self.calls.append(f"resume {node.name}")

    def snapshot_vm(self, lab: LabDir, state: LabState, node: NodeState, snapshot: str) -> int:
        self.calls.append(f"save {node.name}")
        if node.name == self.fail_snapshot_of:
            raise RuntimeError("disk full")
        self.saved.setdefault(node.name, set()).add(snapshot)
        return 3 << 20

    def revert_vm(self, state: LabState, node: NodeState, snapshot: str) -> None:
        self.calls.append(f"revert {node.name}")

    def delete_snapshot(self, state: LabState, node: NodeState, snapshot: str) -> None:
        self.calls.append(f"delete {node.name}")
        self.saved.get(node.name, set()).discard(snapshot)

    def vm_snapshots(self, state: LabState, node: NodeState) -> list[str]:
        return sorted(self.saved.get(node.name, set()))

    def set_guest_time(self, state: LabState, node: NodeState) -> None:
        self.calls.append(f"time {node.name}")

    def owned_resources(self) -> list[OwnedResource]:
        return []


def _node(name: str, index: int, role: str) -> NodeState:
    return NodeState(name=name, index=index, arch="amd64", cpus=1, memory_mib=1024, disk_bytes=5 << 30,
                     image="debian-12", mac=f"52:54:00:00:00:{index:02x}", ip=f"10.213.9.{index}", role=role)


@pytest.fixture
def up_lab(tmp_path, monkeypatch) -> LabDir:
    """A lab whose state says up (a controller, a worker, a kubeconfig); no VM, no SSH."""
    monkeypatch.setenv("K0SLAB_HOME", str(tmp_path))
    folder = LabDir("snap")
    folder.create()
    nodes = [_node("node1", 11, "controller+worker"), _node("node2", 12, "worker")]
    folder.save(LabState(name="snap", subnet_index=9, network="k0slab-snap", bridge="k0slab9", profile="default",
                         k0s_version="v1.31.1+k0s.0", nodes={n.name: n for n in nodes}))
    folder.kubeconfig.write_text("apiVersion: v1\n")
    # Readiness is asked of the API from the host, through the lab's kubeconfig: here every node is Ready.
    ReadyAPI.asked = []
    monkeypatch.setattr(snapmod, "LabAPI", ReadyAPI)
    return folder


class ReadyAPI:
    """The lab's API server as LabAPI sees it, with every node Ready; records what it was asked."""
    asked: list[str] = []
    host, port = "10.213.9.11", 6443

    def __init__(self, _kubeconfig: object) -> None:
        pass  # the fake answers for any lab

    def readyz(self) -> None:
        self.asked.append("readyz")

    def nodes(self) -> list[dict]:
        self.asked.append("nodes")
        return [{"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
                for name in ("node1", "node2")]


def test_take_suspends_every_vm_before_saving_any_and_resumes_all_after(up_lab):
    backend = RecordingBackend()
    record = Snapshots(Lab("snap", backend=backend)).take("clean", [].append)
    assert backend.calls == ["suspend node1", "suspend node2", "save node1", "save node2",
                             "resume node1", "resume node2"]
    state = up_lab.load()
    assert state.snapshots["clean"] == record
    assert record.k0s_version == "v1.31.1+k0s.0" and record.added_bytes == {"node1": 3 << 20, "node2": 3 << 20}
    assert record.nodes == {n.name: node_identity(n) for n in state.nodes.values()}


def test_a_failed_save_removes_what_was_saved_and_resumes_every_vm(up_lab):
    backend = RecordingBackend(fail_snapshot_of="node2")
    with pytest.raises(RuntimeError, match="disk full"):
        Snapshots(Lab("snap", backend=backend)).take("clean", [].append)
    assert backend.saved == {"node1": set()}
    assert {"delete node1", "delete node2", "resume node1", "resume node2"} <= set(backend.calls)
    assert backend.calls.index("delete node1") < backend.calls.index("resume node1")
    assert up_lab.load().snapshots == {}


def test_force_replaces_a_taken_name(up_lab):
    backend = RecordingBackend()
    snapshots = Snapshots(Lab("snap", backend=backend))
    first = snapshots.take("clean", [].append)
    second = snapshots.take("clean", [].append, force=True)
    assert "delete node1" in backend.calls and up_lab.load().snapshots == {"clean": second}
    assert second.created >= first.created


def test_revert_while_another_command_holds_the_lock_is_refused_at_once(up_lab):
    backend = RecordingBackend()
    Snapshots(Lab("snap", backend=backend)).take("clean", [].append)
    backend.calls.clear()
    with open(up_lab.lock_file, "a+") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        holder.truncate(0)
        holder.write("4242")
        holder.flush()
        with pytest.raises(K0slabError, match=r"lab 'snap' is busy: another k0slab command \(pid 4242\)"):
            Snapshots(Lab("snap", backend=backend)).revert("clean", [].append)
    assert backend.calls == []
    assert up_lab.load().last_revert is None


def test_revert_restores_all_paused_then_resumes_and_records_the_snapshot(up_lab, monkeypatch):
    backend = RecordingBackend()
    snapshots = Snapshots(Lab("snap", backend=backend))
    snapshots.take("clean", [].append)
    backend.calls.clear()
    ReadyAPI.asked.clear()
    timings = snapshots.revert("clean", [].append)
    assert backend.calls[:4] == ["revert node1", "revert node2", "resume node1", "resume node2"]
    assert sorted(backend.calls[4:]) == ["time node1", "time node2"]
    assert ReadyAPI.asked == ["readyz", "nodes"]
    assert list(timings) == ["restore every VM's memory and disk", "correct the guest clocks",
                             "API answers /readyz through the lab's kubeconfig", "every node Ready"]
    last = up_lab.load().last_revert
    assert last is not None and (last.snapshot, last.k0s_version) == ("clean", "v1.31.1+k0s.0")


def test_a_snapshot_without_its_libvirt_part_is_named(up_lab):
    backend = RecordingBackend()
    snapshots = Snapshots(Lab("snap", backend=backend))
    snapshots.take("clean", [].append)
    backend.saved["node2"].clear()
    with pytest.raises(K0slabError, match="libvirt has none for node2"):
        snapshots.revert("clean", [].append)


def test_prune_removes_snapshots_the_lab_does_not_record(up_lab):
    state = up_lab.load()
    state.snapshots["kept"] = SnapshotRecord(name="kept", created="2026-01-01T00:00:00+00:00", profile="default",
                                             k0s_version=None, nodes={}, added_bytes={})
    up_lab.save(state)

    class Owned(RecordingBackend):
        def __init__(self) -> None:
            super().__init__()
            self.removed: list[str] = []

        def owned_resources(self) -> list[OwnedResource]:
            return [OwnedResource("snapshot", "k0slab-snap-node1/kept", "snap"),
                    OwnedResource("snapshot", "k0slab-snap-node1/crashed", "snap"),
                    OwnedResource("domain", "k0slab-snap-node1", "snap")]

        def remove_resource(self, resource: OwnedResource) -> None:
            self.removed.append(resource.name)

    backend = Owned()
    prune([].append, backends=[backend])
    assert backend.removed == ["k0slab-snap-node1/crashed"]


def test_the_libvirt_backend_is_a_snapshot_backend_and_vagrant_is_not():
    from k0slab.vms.libvirt_backend import LibvirtBackend
    from k0slab.vms.vagrant_backend import VagrantBackend

    assert isinstance(LibvirtBackend(), SnapshotBackend)
    assert not isinstance(VagrantBackend(), SnapshotBackend)
