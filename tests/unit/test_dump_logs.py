"""lab.dump-logs never replaces a file it did not write, but refreshes its own earlier dump (issue 15)."""
from __future__ import annotations

import pytest

from k0slab.cluster import lab as labmod
from k0slab.core.errors import K0slabError
from k0slab.core.state import LabDir, LabState, NodeState


class StoppedVMs:
    def vm_state(self, _state, _node) -> str:
        return "Stopped"  # no journal to fetch: only the console log and the state are written


@pytest.fixture
def lab(monkeypatch, tmp_path) -> labmod.Lab:
    monkeypatch.setenv("K0SLAB_HOME", str(tmp_path / "home"))
    folder = LabDir("unit")
    folder.create()
    node = NodeState(name="node1", index=11, arch="amd64", cpus=1, memory_mib=1024, disk_bytes=5 << 30,
                     image="debian-12", mac="52:54:00:d5:01:0b", ip="10.213.1.11", role="controller+worker")
    folder.save(LabState(name="unit", subnet_index=1, network="k0slab-unit", bridge="k0slab1", nodes={"node1": node}))
    folder.console_log("node1").write_text("boot\n")
    return labmod.Lab("unit", backend=StoppedVMs())


def test_a_users_file_is_kept_unless_forced(lab, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "node1.console.log").write_text("my notes\n")
    with pytest.raises(K0slabError, match="already holds node1.console.log, which k0slab did not write"):
        lab.dump_logs(out)
    assert sorted(p.name for p in out.iterdir()) == ["node1.console.log"]
    assert (out / "node1.console.log").read_text() == "my notes\n"
    lab.dump_logs(out, force=True)
    assert (out / "node1.console.log").read_text() == "boot\n"


def test_an_earlier_dump_is_refreshed(lab, tmp_path):
    out = tmp_path / "logs"
    first = lab.dump_logs(out)
    assert {p.name for p in first} == {"node1.console.log", "state.json"}
    lab.dir.console_log("node1").write_text("boot\nlater\n")
    lab.dump_logs(out)
    assert (out / "node1.console.log").read_text() == "boot\nlater\n"
