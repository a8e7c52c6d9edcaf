"""The wheel, installed outside the checkout, is a working `k0slab` command (issue 19).

One wheel is built from this checkout (offline: no build isolation, no dependencies) and installed
into a fresh venv under a temporary folder. The venv sees the test venv's dependencies through a
.pth line, which does not run the checkout's editable-install hook, so every k0slab module it
imports comes from the wheel. Commands run from a folder that is not the checkout.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from k0slab.core.paths import PACKAGE_DIR, REPO_ROOT

BUILD_TIMEOUT_S = 120
RUN_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: setuptools leaves a build/ folder in the source tree, which must not linger
    # in the checkout (a later build would pick up its stale files).
    source = tmp_path_factory.mktemp("source")
    shutil.copy2(REPO_ROOT / "pyproject.toml", source)
    for name in ("k0slab", "images", "profiles"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(out), str(source)], check=True, timeout=BUILD_TIMEOUT_S,
                   capture_output=True, text=True)
    (built,) = out.glob("k0slab-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a fresh venv holding only the wheel."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, timeout=BUILD_TIMEOUT_S, capture_output=True, text=True)
    return env_dir / "bin"


def _k0slab(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "K0SLAB_HOME": str(cwd / "home"), "K0SLAB_CACHE": str(cwd / "cache"),
           "K0SLAB_CONFIG": str(cwd / "config"), "LIBVIRT_DEFAULT_URI": "test:///default", "COLUMNS": "200"}
    return subprocess.run([bin_dir / "k0slab", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)


def test_wheel_carries_every_module_recipe_and_profile(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in PACKAGE_DIR.rglob("*.py"):
        assert f"k0slab/{module.relative_to(PACKAGE_DIR)}" in names, f"{module} is not in the wheel"
    for folder in ("images", "profiles"):
        for recipe in (REPO_ROOT / folder).glob("*.yaml"):
            assert f"k0slab/{folder}/{recipe.name}" in names
    for guest_file in (PACKAGE_DIR / "vms" / "guest").iterdir():
        assert f"k0slab/vms/guest/{guest_file.name}" in names  # copied into every node image
    assert any(name.endswith("entry_points.txt") for name in names)


def test_installed_command_lists_the_namespaced_tasks(installed: Path, tmp_path: Path) -> None:
    result = _k0slab(installed, tmp_path, "--list")
    assert result.returncode == 0, result.stderr
    for name in ("lab.up", "lab.down", "lab.kubeconfig", "image.build", "vm.exec", "host.up"):
        assert name in result.stdout


def test_installed_command_plans_a_lab_from_another_folder(installed: Path, tmp_path: Path) -> None:
    result = _k0slab(installed, tmp_path, "lab.up", "--dry-run", "--nodes", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "node2" in out and "node3" not in out
    assert "kind: ClusterConfig" in out, out
    assert not (tmp_path / "home" / "labs").exists(), "a dry run created a lab"


def test_installed_command_finds_the_users_own_profile(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "config" / "profiles").mkdir(parents=True)
    (tmp_path / "config" / "profiles" / "mine.yaml").write_text(
        (REPO_ROOT / "profiles" / "single.yaml").read_text().replace("name: single", "name: mine"))
    result = _k0slab(installed, tmp_path, "lab.up", "--dry-run", "--profile", "mine")
    assert result.returncode == 0, result.stderr
    assert "kind: ClusterConfig" in result.stdout + result.stderr


def test_installed_command_prints_a_completion_script(installed: Path, tmp_path: Path) -> None:
    result = _k0slab(installed, tmp_path, "--print-completion-script", "bash")
    assert result.returncode == 0, result.stderr
    assert "complete -F" in result.stdout and "k0slab" in result.stdout
