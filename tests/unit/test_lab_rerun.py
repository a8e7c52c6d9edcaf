"""A re-run of lab.up on what an earlier run left (issue 14): it finishes the job, and refuses what
cannot be changed on a made lab, before touching anything."""
from __future__ import annotations

import pytest

from k0slab.cluster import lab as labmod
from k0slab.core.errors import K0slabError
from k0slab.core.profile import load_profile
from k0slab.core.state import LabDir, LabState, NodeState

NODE = NodeState(name="node2", index=2, arch="amd64", cpus=1, memory_mib=1024, disk_bytes=5 << 30,
                 image="debian-12", mac="52:54:00:d5:01:02", ip="10.213.1.12", role="worker")


class ReservedOnlyBackend:
    """libvirt as a run that died before creating node1's VM left it: node1 reserved, no domain."""

    def vm_state(self, _state, node: NodeState) -> str:
        return "Absent" if node.name == "node1" else "Running"


def test_a_rerun_creates_a_node_that_was_reserved_but_never_created(monkeypatch, tmp_path):
    monkeypatch.setenv("K0SLAB_HOME", str(tmp_path))
    profile = load_profile("default").model_copy(update={"nodes": load_profile("default").nodes[:2]})
    reserved = NodeState(name="node1", index=1, arch="amd64", cpus=1, memory_mib=1024, disk_bytes=5 << 30,
                         image="debian-12", mac="52:54:00:d5:01:01", ip="10.213.1.11", role="controller+worker")
    running = NODE.model_copy(update={"name": "node2"})
    state = LabState(name="unit", subnet_index=1, network="k0slab-unit", bridge="k0slab1",
                     nodes={"node1": reserved, "node2": running})
    created: list[str] = []
    monkeypatch.setattr(labmod.vmmod, "create_nodes",
                        lambda _dir, _state, nodes, *_rest: created.extend(n.name for n in nodes))
    run = labmod._Run(options=labmod.UpOptions(profile=profile), state=state,
                      binary_disks={"amd64": tmp_path / "k0s.disk"})
    labmod.Lab("unit", backend=ReservedOnlyBackend())._create_vms(run, progress=lambda _m: None)
    # node1 is created with the address it was given, not "started" (which failed with "no domain").
    assert created == ["node1"] and state.nodes["node1"].ip == "10.213.1.11"


def test_a_made_lab_keeps_its_provider(monkeypatch, tmp_path):
    monkeypatch.setenv("K0SLAB_HOME", str(tmp_path))
    existing = LabState(name="unit", subnet_index=1, network="k0slab-unit", bridge="k0slab1",
                        provider="vagrant", profile="default", nodes={"node2": NODE})
    profile = load_profile("default")
    with pytest.raises(K0slabError) as refused:
        labmod.Lab("unit", backend=ReservedOnlyBackend())._validate(labmod.UpOptions(profile=profile,
                                                                                     k0s_binary=None), existing)
    assert str(refused.value).startswith("lab 'unit' runs on provider vagrant, not libvirt")
    assert "--provider vagrant" in refused.value.hint
    assert not LabDir("unit").path.exists()
