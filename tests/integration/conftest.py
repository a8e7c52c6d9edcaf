"""The VM test harness: real libvirt, real QEMU guests, real SSH.

scripts/test.sh runs pytest where libvirt was found (scripts/harness.sh): inside k0slab's network
namespace, so every bridge and every packet to a VM stays there, or, with the system's libvirtd
(a GitHub runner), in the main namespace. These tests refuse to run anywhere else (they fail, never
skip: a skipped VM test must not look like a passing one).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import libvirt
import pytest

from k0slab.vms import hostenv
from tests.standin.standin_build import node_standin_binary

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
    # Labs live where the harness found libvirt: in k0slab's namespace, or with the system's libvirtd.
    found = hostenv.find_libvirt()
    if found.kind == "system" and netns:
        pytest.fail(f"K0SLAB_NETNS={netns} is set, but the system's libvirtd serves the labs: use scripts/test.sh",
                    pytrace=False)
    if found.kind != "system" and (not netns or not _inside_netns(netns)):
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
    # This session owns no lab yet: anything k0slab-made in libvirt is left over from a crashed run.
    invoke("lab.prune")
    yield home
    invoke("lab.prune", check=False)
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


# The stand-in as one executable file, built from tests/standin/k0s_standin for the current sources, with
# the Python runtimes it carries to nodes (scripts/test.sh builds it before entering the namespace).
STANDIN = node_standin_binary()


def node_exec(lab: str, node: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return invoke("vm.exec", node, "--lab", lab, "--", "sh", "-c", command, check=check)


def cluster_nodes(lab: str, controller: str = "node1") -> dict[str, dict]:
    """`k0s kubectl get nodes -o json` on the controller, by node name."""
    out = node_exec(lab, controller, "k0s kubectl get nodes -o json").stdout
    return {item["metadata"]["name"]: item for item in json.loads(out)["items"]}


def ready_of(item: dict) -> str:
    return next(c["status"] for c in item["status"]["conditions"] if c["type"] == "Ready")


def set_knobs(lab: str, node: str, knobs: dict[str, object]) -> None:
    """The stand-in's fault knobs (tests/standin/README.md), re-read live by the running stand-in."""
    text = "".join(
        f"{key}: {str(value).lower() if isinstance(value, bool) else value}\n" for key, value in knobs.items()
    )
    node_exec(lab, node, f"printf '%s' '{text}' > /etc/k0s-standin.yaml")


def lab_leftovers(lab: str) -> list[str]:
    """Everything of a lab that still exists in libvirt or on disk."""
    from k0slab.core.state import LabDir

    conn = libvirt.open("qemu:///system")
    try:
        left = k0slab_domains(conn, lab) + k0slab_networks(conn, lab)
    finally:
        conn.close()
    folder = LabDir(lab)
    return left + [str(p) for p in (folder.path, folder.disks_dir, folder.lock_file) if p.exists()]


def readable_by_nobody(path: Path) -> bool:
    """Whether another local user (nobody) can read the file, or list the folder."""
    reader = ["cat", str(path)] if path.is_file() else ["ls", str(path)]
    result = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *reader],
                            capture_output=True, check=False)
    return result.returncode == 0
