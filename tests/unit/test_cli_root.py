"""Root is the supported path: as another user, a task that needs root stops at once, in one line."""
from __future__ import annotations

import os

import pytest
from invoke import Exit

from k0slab.cli import image, lab


@pytest.fixture
def not_root(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("K0SLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("K0SLAB_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("call, name", [
    (lambda: lab.lab_up.body(None, nodes="2"), "lab.up"),
    (lambda: lab.lab_down.body(None, lab="x"), "lab.down"),
    (lambda: lab.lab_dump_logs.body(None, lab="x"), "lab.dump-logs"),
    (lambda: image.image_build.body(None), "image.build"),
])
def test_a_task_that_needs_root_refuses_at_once(not_root: None, tmp_path, capsys: pytest.CaptureFixture[str],
                                                call, name: str) -> None:
    with pytest.raises(Exit) as stopped:
        call()
    assert stopped.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {name} needs root"), lines
    assert "run it as root" in lines[0]
    assert not (tmp_path / "home").exists() and not (tmp_path / "cache").exists()


def test_a_dry_run_needs_no_root(not_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    lab.lab_up.body(None, nodes="2", dry_run=True)
    out = capsys.readouterr().out
    assert "kind: ClusterConfig" in out
    # Every phase says, in words, what it would do.
    assert "  create network and VMs: define the lab network with a DHCP reservation per node" in out
    lines = [line.split("s ", 1)[1] for line in out.splitlines() if line.strip()[:1].isdigit()]
    start = lines.index("phases:")
    plans = lines[start + 1:lines.index(next(x for x in lines[start:] if x.startswith("egress ")))]
    assert len(plans) == 10 and all(p.startswith("  ") and len(p.split(": ", 1)[1]) > 20 for p in plans)
