"""Issue 7 with the stand-in: an arm64 lab under emulation and a mixed amd64/arm64 lab."""
from __future__ import annotations

import json
import time

import pytest

from .conftest import STANDIN, cluster_nodes, invoke, lab_leftovers, node_exec, ready_of

pytestmark = [pytest.mark.vm, pytest.mark.arm64]


def _arches(lab: str) -> dict[str, tuple[str, str]]:
    return {name: (item["metadata"]["labels"]["kubernetes.io/arch"], ready_of(item))
            for name, item in cluster_nodes(lab).items()}


def test_single_node_arm64_lab():
    lab = "itarm"
    try:
        started = time.monotonic()
        result = invoke("lab.up", "--nodes", "1", "--arch", "arm64", "--memory", "1G",
                        "--k0s-binary", str(STANDIN), "--lab", lab)
        print(f"arm64 1-node bring-up: {time.monotonic() - started:.1f}s\n{result.stdout}")
        assert _arches(lab) == {"node1": ("arm64", "True")}
        assert node_exec(lab, "node1", "uname -m").stdout.strip() == "aarch64"
        # Ready on the stand-in's own arm64 Python: the image has none.
        assert node_exec(lab, "node1", "ls /usr/bin/python3* 2>/dev/null || echo none").stdout.strip() == "none"
        assert node_exec(lab, "node1", "ls -d /opt/k0s-standin/runtime-arm64-*").returncode == 0
    finally:
        invoke("lab.down", "--lab", lab, check=False)
    assert lab_leftovers(lab) == []


def test_mixed_arch_lab_has_both_arches_ready():
    lab = "itmix"
    try:
        started = time.monotonic()
        result = invoke("lab.up", "--profile", "mixed-arch", "--memory", "1G", "--k0s-binary", str(STANDIN),
                        "--lab", lab)
        print(f"mixed 2-node bring-up: {time.monotonic() - started:.1f}s\n{result.stdout}")
        assert _arches(lab) == {"node1": ("amd64", "True"), "node2": ("arm64", "True")}
        status = json.loads(invoke("lab.status", "--json", "--lab", lab).stdout)
        assert {n["name"]: n["arch"] for n in status["nodes"]} == {"node1": "amd64", "node2": "arm64"}
        # Each arch got its own binary disk and the node took k0s from it.
        assert "node2: k0s" in result.stdout and "(disk)" in result.stdout
    finally:
        invoke("lab.down", "--lab", lab, check=False)
    assert lab_leftovers(lab) == []
