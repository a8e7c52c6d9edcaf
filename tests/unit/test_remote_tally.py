"""The SSH budget of a run (k0slab.vms.ssh.RemoteTally): connections, commands and transfers per node and
phase, counted from every thread while `tallied` is active and not at all outside it."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from k0slab.vms import ssh


def test_counts_per_node_and_phase_from_every_thread_with_totals():
    phase = ["wait for SSH"]
    with ssh.tallied(lambda: phase[0]) as tally:
        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(lambda node: (ssh._count(node, "connections"), ssh._count(node, "commands")),
                          ["node1", "node2", "node3"] * 10))
        phase[0] = "push k0s binary and config"
        ssh._count("node1", "transfers")
    counts = tally.by_node()
    assert list(counts) == ["node1", "node2", "node3"]
    assert counts["node2"] == {"wait for SSH": {"connections": 10, "commands": 10, "transfers": 0},
                               "total": {"connections": 10, "commands": 10, "transfers": 0}}
    assert counts["node1"]["push k0s binary and config"] == {"connections": 0, "commands": 0, "transfers": 1}
    assert counts["node1"]["total"] == {"connections": 10, "commands": 10, "transfers": 1}


def test_nothing_is_counted_outside_a_tallied_run():
    with ssh.tallied(lambda: "up") as tally:
        pass
    ssh._count("node1", "commands")
    assert tally.by_node() == {}
