"""A dropped SSH connection in the middle of a node step repeats the step on a new connection
(issue 9: "SSH dropping during a command ... survived by retries; each retry logged")."""
from __future__ import annotations

import logging

import pytest

from k0slab.cluster import lab as labmod
from k0slab.vms.remote import CommandResult, RemoteCommandError
from k0slab.core.state import NodeState


class DroppingConnection:
    """Drops (EOFError, as paramiko does when sshd goes away) on the first `drops` commands."""

    drops = 0
    opened = 0

    def __init__(self) -> None:
        type(self).opened += 1

    def run(self, command: str, **_kwargs: object) -> CommandResult:
        if type(self).drops:
            type(self).drops -= 1
            raise EOFError("connection closed by remote host")
        return CommandResult(command, 0, "running\n", "")

    def close(self) -> None:
        pass


@pytest.fixture
def lab(monkeypatch, tmp_path):
    monkeypatch.setenv("K0SLAB_HOME", str(tmp_path))
    monkeypatch.setattr(labmod, "wait_random_exponential", lambda **_: lambda _state: 0)
    target = labmod.Lab("unit")
    monkeypatch.setattr(target, "ssh", lambda _node: DroppingConnection())
    DroppingConnection.opened = 0
    return target


NODE = NodeState(name="node2", index=2, arch="amd64", cpus=1, memory_mib=1024, disk_bytes=5 << 30,
                 image="debian-12", mac="52:54:00:d5:01:02", ip="10.213.1.12", role="worker")


def test_a_dropped_connection_repeats_the_step_and_logs_why(lab, caplog):
    DroppingConnection.drops = 2
    with caplog.at_level(logging.INFO, logger="k0slab"):
        state = lab._on(NODE, lambda ssh: ssh.run("systemctl is-active k0sworker").stdout.strip())
    assert state == "running"
    assert DroppingConnection.opened == 3
    retries = [r.getMessage() for r in caplog.records if "SSH failed during a step" in r.getMessage()]
    assert len(retries) == 2 and "EOFError: connection closed by remote host" in retries[0]


def test_a_connection_that_keeps_dropping_gives_up_after_three_attempts(lab):
    DroppingConnection.drops = 10
    with pytest.raises(EOFError):
        lab._on(NODE, lambda ssh: ssh.run("true"))
    assert DroppingConnection.opened == labmod.SSH_STEP_ATTEMPTS


def test_a_failing_command_is_not_retried(lab):
    def failing(ssh):
        raise RemoteCommandError("node2", CommandResult("k0s start", 1, "", "Error: already running"))

    with pytest.raises(RemoteCommandError, match="already running"):
        lab._on(NODE, failing)
    assert DroppingConnection.opened == 1

