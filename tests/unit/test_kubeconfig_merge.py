"""lab.kubeconfig --merge and lab.down's removal, read back by a real kubectl in a temporary HOME."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from k0slab.cluster import kubeconfig
from k0slab.cluster.k0s import bootstrap
from k0slab.core.errors import K0slabError

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
pytestmark = pytest.mark.skipif(not Path(KUBECTL).is_file(),
                                reason="no kubectl client (Debian's kubernetes-client package has one)")
# The shape of /var/lib/k0s/pki/admin.conf (k0s-facts §2, §3), with dummy key data.
ADMIN_CONF = """apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: Q0EK
    server: https://localhost:6443
  name: local
contexts:
- context:
    cluster: local
    user: user
  name: Default
current-context: Default
kind: Config
preferences: {}
users:
- name: user
  user:
    client-certificate-data: Q0VSVAo=
    client-key-data: S0VZCg==
"""


class FakeController:
    def run(self, command: str, **_: object) -> subprocess.CompletedProcess[str]:
        assert command == f"cat {bootstrap.ADMIN_KUBECONFIG}"
        return subprocess.CompletedProcess(command, 0, ADMIN_CONF, "")


def lab_kubeconfig(tmp_path: Path, lab: str) -> Path:
    """The kubeconfig lab.up writes for a lab, made by the same code."""
    path = tmp_path / f"{lab}.kubeconfig"
    path.write_text(bootstrap.admin_kubeconfig(FakeController(), "10.213.1.11", lab))
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return home


def kubectl(*args: str) -> str:
    return subprocess.run([KUBECTL, "config", *args], check=True, capture_output=True, text=True, timeout=30).stdout


def contexts() -> list[str]:
    return kubectl("get-contexts", "-o", "name").split()


def test_merge_adds_only_the_labs_entries_and_down_removes_them(home: Path, tmp_path: Path) -> None:
    kubectl("set-cluster", "theirs", "--server", "https://example.invalid:6443")
    kubectl("set-credentials", "theirs", "--token", "secret")
    kubectl("set-context", "theirs", "--cluster", "theirs", "--user", "theirs")
    kubectl("use-context", "theirs")
    target = kubeconfig.merge("ci", lab_kubeconfig(tmp_path, "ci"))

    assert target == home / ".kube" / "config"
    assert sorted(contexts()) == ["k0slab-ci", "theirs"]
    assert kubectl("current-context").strip() == "theirs"  # the user's choice stays
    server = kubectl("view", "--context", "k0slab-ci", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}")
    assert server == "https://10.213.1.11:6443"
    assert not list(target.parent.glob("*.lock")) and not list(target.parent.glob(".config.*"))

    kubeconfig.merge("ci", lab_kubeconfig(tmp_path, "ci"))  # again: replaced, not doubled
    assert sorted(contexts()) == ["k0slab-ci", "theirs"]

    said: list[str] = []
    kubeconfig.forget("ci", said.append)
    assert contexts() == ["theirs"]
    assert said == [f"removed context k0slab-ci from {target}"]
    config = yaml.safe_load(target.read_text())
    assert [c["name"] for c in config["clusters"]] == ["theirs"] and [u["name"] for u in config["users"]] == ["theirs"]
    kubeconfig.forget("ci", said.append)  # nothing left to remove: silent
    assert len(said) == 1


def test_merge_into_a_new_file_selects_the_lab_and_keeps_it_private(home: Path, tmp_path: Path) -> None:
    target = kubeconfig.merge("one", lab_kubeconfig(tmp_path, "one"))
    assert kubectl("current-context").strip() == "k0slab-one"
    assert target.stat().st_mode & 0o777 == 0o600
    kubeconfig.remove("one")
    assert contexts() == []
    assert yaml.safe_load(target.read_text())["current-context"] == ""  # no context pointing at a removed lab


def test_merge_writes_to_the_first_file_of_kubeconfig(home: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    monkeypatch.setenv("KUBECONFIG", f"{first}{os.pathsep}{second}")
    assert kubeconfig.merge("two", lab_kubeconfig(tmp_path, "two")) == first
    assert not second.exists() and not (home / ".kube").exists()
    assert contexts() == ["k0slab-two"]  # kubectl reads the merged view of both files


def test_lab_down_without_a_user_kubeconfig_creates_none(home: Path) -> None:
    kubeconfig.forget("never-merged", lambda line: pytest.fail(line))
    assert not (home / ".kube").exists()


def test_a_corrupt_user_kubeconfig_is_named_and_left_alone(home: Path, tmp_path: Path) -> None:
    target = home / ".kube" / "config"
    target.parent.mkdir()
    target.write_text("clusters: [unclosed\n")
    with pytest.raises(K0slabError, match=rf"kubeconfig {target} is not valid YAML"):
        kubeconfig.merge("bad", lab_kubeconfig(tmp_path, "bad"))
    assert target.read_text() == "clusters: [unclosed\n"
    assert not target.with_name("config.lock").exists()
