"""lab.down on labs that are half there: a corrupt state file, or no lab at all."""
from __future__ import annotations

from k0slab.vms.backend import OwnedResource
from k0slab.cluster.lab import Lab
from k0slab.core.state import LabDir


class RecordingBackend:
    name = "fake"

    def __init__(self, owned: list[OwnedResource]) -> None:
        self.owned = owned
        self.removed: list[str] = []

    def owned_resources(self) -> list[OwnedResource]:
        return self.owned

    def remove_resource(self, resource: OwnedResource) -> None:
        self.removed.append(resource.name)


def test_down_with_a_corrupt_state_removes_what_libvirt_tags_with_the_lab(tmp_path, monkeypatch):
    monkeypatch.setenv("K0SLAB_HOME", str(tmp_path))
    folder = LabDir("bad")
    folder.create()
    folder.state_file.write_text('{"name": "ba')
    backend = RecordingBackend([OwnedResource("domain", "k0slab-bad-node1", "bad"),
                                OwnedResource("network", "k0slab-other", "other")])
    messages: list[str] = []
    Lab("bad", backend=backend).down(messages.append)
    assert backend.removed == ["k0slab-bad-node1"]
    assert not folder.path.exists() and not folder.disks_dir.exists()
    assert "is corrupt" in messages[0] and messages[-1] == "lab bad removed"


def test_down_of_a_lab_that_does_not_exist_says_so_and_touches_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("K0SLAB_HOME", str(tmp_path))
    backend = RecordingBackend([OwnedResource("domain", "k0slab-other-node1", "other")])
    messages: list[str] = []
    Lab("nope", backend=backend).down(messages.append)
    assert messages == ["no lab nope: nothing to remove"] and backend.removed == []
    assert list(tmp_path.iterdir()) == []
