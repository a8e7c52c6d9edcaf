"""lab.upgrade (issue 17): the version-skew rules, the order of nodes, drain, and going forward only,
against fake nodes that keep a binary on disk and a running version apart."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from k0slab.cluster import upgrade
from k0slab.cluster.k0s import versions
from k0slab.core.errors import K0slabError
from k0slab.core.state import LabDir, LabState, NodeState
from k0slab.vms.remote import CommandResult, RemoteCommandError


# --- the rules -----------------------------------------------------------------------------------

def test_one_minor_up_is_allowed_and_patch_steps_too():
    assert not versions.check_path("v1.34.1+k0s.0", ["v1.33.4+k0s.0"], force=False).downgrade
    assert not versions.check_path("v1.33.5+k0s.0", ["v1.33.4+k0s.0"], force=False).downgrade


def test_skipping_a_minor_is_refused_even_with_force():
    with pytest.raises(K0slabError, match="skips minor versions") as refused:
        versions.check_path("v1.35.0+k0s.0", ["v1.33.4+k0s.0"], force=True)
    assert "latest v1.34.x" in refused.value.hint


def test_a_downgrade_is_refused_unless_forced():
    with pytest.raises(K0slabError, match="does not support downgrades") as refused:
        versions.check_path("v1.33.4+k0s.0", ["v1.34.1+k0s.0"], force=False)
    assert "lab.restore" in refused.value.hint
    assert versions.check_path("v1.33.4+k0s.0", ["v1.34.1+k0s.0"], force=True).downgrade


def test_going_back_below_a_version_that_already_ran_is_a_downgrade():
    """Half-way through: node1 runs 1.34, node2 still 1.33. Going to 1.33.9 is going back."""
    with pytest.raises(K0slabError, match="older than v1.34.1"):
        versions.check_path("v1.33.9+k0s.0", ["v1.34.1+k0s.0", "v1.33.4+k0s.0"], force=False)


def test_build_suffix_and_release_candidates_order_like_k0s_releases():
    assert versions.parse("v1.34.1+k0s.1") > versions.parse("v1.34.1+k0s.0")
    assert versions.parse("v1.34.1-rc.1+k0s.0") < versions.parse("v1.34.1+k0s.0")
    with pytest.raises(K0slabError, match="no \\+k0s.N suffix"):
        versions.parse("v1.34.1")


def test_older_than_leaves_dev_builds_alone():
    assert versions.older_than("v1.33.4+k0s.0", "v1.34.1+k0s.0")
    assert not versions.older_than("v1.33.4+k0s.0", "v1.34.1-dirty")


def test_options_need_exactly_one_source_and_a_positive_concurrency():
    with pytest.raises(K0slabError, match="exactly one"):
        upgrade.validate_options(upgrade.UpgradeOptions())
    with pytest.raises(K0slabError, match="exactly one"):
        upgrade.validate_options(upgrade.UpgradeOptions(k0s_version="v1.34.1+k0s.0", k0s_binary=Path("/k0s")))
    with pytest.raises(K0slabError, match="--concurrency 0"):
        upgrade.validate_options(upgrade.UpgradeOptions(k0s_version="v1.34.1+k0s.0", concurrency=0))


# --- a fake lab ----------------------------------------------------------------------------------

class Cluster:
    """What the nodes and the API hold: per node a binary on disk, a staged one, a running version."""

    def __init__(self, roles: dict[str, str], version: str) -> None:
        self.roles = roles
        self.disk = dict.fromkeys(roles, version)
        self.staged: dict[str, str] = {}
        self.running = dict.fromkeys(roles, version)
        self.cordoned: set[str] = set()
        self.events: list[str] = []
        self.binaries: dict[str, str] = {}  # local path -> version it reports
        self.fail_start: set[str] = set()


class FakeNode:
    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster, self.name = cluster, name

    def put_file(self, local: Path, remote: str) -> None:
        assert remote == upgrade.STAGED_BINARY
        self.cluster.staged[self.name] = self.cluster.binaries[str(local)]
        self.cluster.events.append(f"sftp {self.name}")

    def close(self) -> None:
        pass

    def run(self, command: str, *, check: bool = True, **_: object) -> CommandResult:
        code, out = self._answer(command)
        result = CommandResult(command, code, out, "" if code == 0 else "boom")
        if check and code:
            raise RemoteCommandError(self.name, result)
        return result

    def _answer(self, command: str) -> tuple[int, str]:
        c, me = self.cluster, self.name
        if "echo '|'" in command:
            return 0, f"{c.disk[me] or ''}\n|{c.running[me] or ''}\n"
        if command.startswith(f"sha256sum {upgrade.STAGED_BINARY}"):
            return 0, (_sum(c.staged[me]) + "\n") if me in c.staged else ""
        if command.startswith(f"{upgrade.STAGED_BINARY} version"):
            return 0, c.staged[me] + "\n"
        if command.startswith("chmod") or command.startswith("rm -f"):
            if command.startswith("rm -f"):
                c.staged.pop(me, None)
            return 0, ""
        if "systemctl is-active" in command:
            if me in c.fail_start:
                c.running[me] = None
                return 1, ""
            c.disk[me] = c.staged.pop(me, c.disk[me])
            c.running[me] = c.disk[me]
            c.events.append(f"restart {me}")
            return 0, ""
        if " drain " in command:
            target = command.split(" drain ")[1].split()[0]
            c.cordoned.add(target)
            c.events.append(f"drain {target}")
            return 0, ""
        if " uncordon " in command:
            target = command.split(" uncordon ")[1].split()[0]
            c.cordoned.discard(target)
            c.events.append(f"uncordon {target}")
            return 0, ""
        if "get --raw=/readyz" in command:
            return 0, "ok"
        if "get nodes -o json" in command:
            items = [_node_item(n, c.running[n]) for n, role in c.roles.items() if role != "controller"]
            return 0, json.dumps({"items": items})
        raise AssertionError(f"unexpected command: {command}")


def _sum(version: str) -> str:
    return hashlib.sha256(version.encode()).hexdigest()


def _node_item(name: str, running: str | None) -> dict:
    kubelet = versions.parse(running).public if running else ""
    return {"metadata": {"name": name}, "status": {
        "nodeInfo": {"kubeletVersion": f"v{kubelet}+k0s" if running else ""},
        "conditions": [{"type": "Ready", "status": "True" if running else "False"}]}}


class FakeBackend:
    def vm_state(self, _state: LabState, _node: NodeState) -> str:
        return "Running"


class FakeLab:
    def __init__(self, cluster: Cluster, state: LabState) -> None:
        self.cluster, self.state = cluster, state
        self.name = state.name
        self.dir = LabDir(state.name)
        self.dir.save(state)
        self.backend = FakeBackend()

    def require_up(self) -> tuple[LabState, NodeState]:
        return self.state, self.state.nodes["node1"]

    def ssh(self, node: NodeState) -> FakeNode:
        return FakeNode(self.cluster, node.name)


def _lab(tmp_path, monkeypatch, roles: dict[str, str], version: str = "v1.33.4+k0s.0") -> FakeLab:
    monkeypatch.setenv("K0SLAB_HOME", str(tmp_path / "home"))
    nodes = {
        name: NodeState(name=name, index=i, arch="amd64", cpus=1, memory_mib=1024, disk_bytes=5 << 30,
                        image="debian-12", mac=f"52:54:00:d5:01:{i:02x}", ip=f"10.213.1.{10 + i}", role=role)
        for i, (name, role) in enumerate(roles.items(), start=1)
    }
    state = LabState(name="unit", subnet_index=1, network="n", bridge="b", k0s_version=version, nodes=nodes)
    return FakeLab(Cluster(roles, version), state)


def _binary(tmp_path, lab: FakeLab, version: str) -> Path:
    path = tmp_path / f"k0s-{version}"
    path.write_text(version)  # its sha256 is what FakeNode reports for a staged copy of it
    path.chmod(0o755)
    lab.cluster.binaries[str(path)] = version
    return path


def _upgrade(lab: FakeLab, binary: Path, monkeypatch, **options: object) -> str:
    monkeypatch.setattr(upgrade.release, "binary_for", lambda _v, local, _arch, _p: local)
    return upgrade.LabUpgrade(lab, upgrade.UpgradeOptions(k0s_binary=binary, **options), lambda _m: None).run()


ROLES = {"node1": "controller+worker", "node2": "worker", "node3": "worker"}


def test_controllers_first_then_each_worker_drained_restarted_and_uncordoned(tmp_path, monkeypatch):
    lab = _lab(tmp_path, monkeypatch, ROLES)
    reached = _upgrade(lab, _binary(tmp_path, lab, "v1.34.1+k0s.0"), monkeypatch)
    assert reached == "v1.34.1+k0s.0"
    assert lab.cluster.running == dict.fromkeys(ROLES, "v1.34.1+k0s.0")
    assert lab.cluster.disk == dict.fromkeys(ROLES, "v1.34.1+k0s.0")
    order = [e for e in lab.cluster.events if not e.startswith("sftp")]
    assert order == ["restart node1", "drain node2", "restart node2", "uncordon node2",
                     "drain node3", "restart node3", "uncordon node3"]
    saved = lab.dir.load()
    assert saved.k0s_version == "v1.34.1+k0s.0" and saved.upgrade_target is None


def test_no_drain_restarts_without_cordoning(tmp_path, monkeypatch):
    lab = _lab(tmp_path, monkeypatch, ROLES)
    _upgrade(lab, _binary(tmp_path, lab, "v1.34.1+k0s.0"), monkeypatch, drain=False)
    assert not any(e.startswith(("drain", "uncordon")) for e in lab.cluster.events)


def test_a_refused_downgrade_changes_nothing_and_leaves_no_staged_binary(tmp_path, monkeypatch):
    lab = _lab(tmp_path, monkeypatch, ROLES, version="v1.34.1+k0s.0")
    with pytest.raises(K0slabError, match="does not support downgrades"):
        _upgrade(lab, _binary(tmp_path, lab, "v1.33.4+k0s.0"), monkeypatch)
    assert lab.cluster.running == dict.fromkeys(ROLES, "v1.34.1+k0s.0")
    assert lab.cluster.disk == dict.fromkeys(ROLES, "v1.34.1+k0s.0")
    assert lab.cluster.staged == {}
    assert lab.dir.load().upgrade_target is None


def test_after_a_failure_the_state_says_so_and_a_rerun_finishes_forward_only(tmp_path, monkeypatch):
    lab = _lab(tmp_path, monkeypatch, ROLES)
    binary = _binary(tmp_path, lab, "v1.34.1+k0s.0")
    lab.cluster.fail_start.add("node2")
    with pytest.raises(RemoteCommandError):
        _upgrade(lab, binary, monkeypatch)
    assert lab.cluster.running["node1"] == "v1.34.1+k0s.0"
    assert lab.cluster.running["node2"] is None and lab.cluster.staged["node2"] == "v1.34.1+k0s.0"
    assert lab.cluster.running["node3"] == "v1.33.4+k0s.0"  # not taken down after node2 failed
    assert lab.dir.load().upgrade_target == "v1.34.1+k0s.0"
    # Going back now would run 1.33 against state 1.34 already wrote: refused.
    with pytest.raises(K0slabError, match="older than v1.34.1"):
        _upgrade(lab, _binary(tmp_path, lab, "v1.33.4+k0s.0"), monkeypatch)
    lab.cluster.fail_start.clear()
    lab.cluster.events.clear()
    _upgrade(lab, binary, monkeypatch)
    assert lab.cluster.running == dict.fromkeys(ROLES, "v1.34.1+k0s.0")
    assert "restart node1" not in lab.cluster.events  # node1 was done: left alone
    assert lab.dir.load().upgrade_target is None


def test_a_lab_already_at_the_target_is_left_alone(tmp_path, monkeypatch):
    lab = _lab(tmp_path, monkeypatch, ROLES, version="v1.34.1+k0s.0")
    _upgrade(lab, _binary(tmp_path, lab, "v1.34.1+k0s.0"), monkeypatch)
    assert not any(e.startswith("restart") for e in lab.cluster.events)
    assert lab.cluster.staged == {}


def test_workers_go_in_parallel_up_to_the_concurrency(tmp_path, monkeypatch):
    roles = {"node1": "controller", **{f"node{i}": "worker" for i in range(2, 6)}}
    lab = _lab(tmp_path, monkeypatch, roles)
    _upgrade(lab, _binary(tmp_path, lab, "v1.34.1+k0s.0"), monkeypatch, concurrency=2)
    assert lab.cluster.running == dict.fromkeys(roles, "v1.34.1+k0s.0")
    assert lab.cluster.events.index("restart node1") < min(
        lab.cluster.events.index(f"drain node{i}") for i in range(2, 6))


class Answers:
    name = "node1"

    def __init__(self, stdout: str) -> None:
        self.stdout = stdout

    def run(self, command: str, **_: object) -> CommandResult:
        return CommandResult(command, 0, self.stdout, "")


@pytest.mark.parametrize(("stdout", "on_disk", "running", "state"), [
    ("v1.34.1+k0s.0\n|v1.33.4+k0s.0\n", "v1.34.1+k0s.0", "v1.33.4+k0s.0", "running"),  # replaced, not restarted
    ("v1.34.1+k0s.0\n|\n", "v1.34.1+k0s.0", None, "not running"),
    ("|\n", None, None, "not installed"),
])
def test_a_node_reports_the_binary_on_disk_and_the_running_version_apart(stdout, on_disk, running, state):
    from k0slab.cluster.k0s import bootstrap

    found = bootstrap.node_versions(Answers(stdout))
    assert (found.on_disk, found.running, found.state) == (on_disk, running, state)
