"""Issue 4 (and 9): a controller slow to become ready and the first joins refused are survived by
retries, and the logs show them. The VMs are made first with vm.launch so the stand-in's fault
knobs are in place before k0s ever starts; lab.up then adopts them."""
from __future__ import annotations


import pytest

from .conftest import STANDIN, cluster_nodes, invoke, lab_leftovers, ready_of, set_knobs

pytestmark = pytest.mark.vm
LAB = "itfault"


@pytest.fixture(scope="module")
def faulty_lab():
    try:
        for name in ("node1", "node2"):
            invoke("vm.launch", name, "--memory", "1G", "--lab", LAB)
        set_knobs(LAB, "node1", {"ready_delay_seconds": 25, "refuse_first_joins": 3})
        yield invoke("lab.up", "--nodes", "2", "--memory", "1G", "--k0s-binary", str(STANDIN), "--lab", LAB)
    finally:
        invoke("lab.down", "--lab", LAB, check=False)


def test_slow_controller_and_refused_joins_end_ready(faulty_lab):
    ready = {name: ready_of(item) for name, item in cluster_nodes(LAB).items()}
    assert ready == {"node1": "True", "node2": "True"}


def test_retries_are_logged_with_their_reason(faulty_lab):
    # k0slab's own waits log each attempt with the reason it was not ready yet.
    assert "waiting for the API server of node1 to answer /readyz with ok: attempt" in faulty_lab.stderr
    # The worker logged the refused joins and went on retrying.
    journal = invoke("lab.logs", "node2", "--lab", LAB).stdout
    assert "refused" in journal and "retrying" in journal, journal[-2000:]


def test_adopted_vms_got_the_binary_over_sftp(faulty_lab):
    # They were launched without the binary disk, so the push fell back to SFTP.
    assert "(sftp)" in faulty_lab.stdout


def test_down_removes_the_adopted_lab(faulty_lab):
    invoke("lab.down", "--lab", LAB)
    assert lab_leftovers(LAB) == []
