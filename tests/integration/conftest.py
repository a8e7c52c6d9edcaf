"""The VM test harness: real libvirt, real QEMU guests, real SSH.

scripts/test.sh creates a network namespace, starts libvirtd inside it and runs pytest there,
so every bridge and every packet to a VM stays in that namespace. These tests refuse to run
anywhere else (they fail, never skip: a skipped VM test must not look like a passing one).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import libvirt
import pytest

REPO = Path(__file__).resolve().parents[2]
INVOKE = [sys.executable, "-m", "invoke"]


def _inside_netns(netns: str) -> bool:
    try:
        return os.stat(f"/run/netns/{netns}").st_ino == os.stat("/proc/self/ns/net").st_ino
    except FileNotFoundError:
        return False


@pytest.fixture(scope="session", autouse=True)
def harness():
    netns = os.environ.get("K0SLAB_NETNS", "")
    if not netns or not _inside_netns(netns):
        pytest.fail("VM tests must run inside the test network namespace: use scripts/test.sh", pytrace=False)
    try:
        libvirt.open("qemu:///system").close()
    except libvirt.libvirtError as exc:
        pytest.fail(f"libvirt is not reachable ({exc}); scripts/test.sh starts it", pytrace=False)
    # Lab folders are 0700, but the disks folder must be reachable by QEMU's user: /var/tmp, not
    # pytest's private tmp.
    home = Path(tempfile.mkdtemp(prefix="k0slab-tests-", dir="/var/tmp"))
    home.chmod(0o755)
    os.environ["K0SLAB_HOME"] = str(home)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def invoke(*args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as a user would."""
    result = subprocess.run(
        [*INVOKE, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"invoke {' '.join(args)} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def k0slab_domains(conn: libvirt.virConnect, lab: str) -> list[str]:
    return [d.name() for d in conn.listAllDomains(0) if d.name().startswith(f"k0slab-{lab}-")]


def k0slab_networks(conn: libvirt.virConnect, lab: str) -> list[str]:
    return [n.name() for n in conn.listAllNetworks(0) if n.name() == f"k0slab-{lab}"]
