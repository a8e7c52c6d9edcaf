"""The node binary: the stand-in as k0slab pushes it to a node, with its own Python (node_runtime.py).

These run it on this host, whose arch is amd64: the header picks the amd64 runtime and runs it through
the runtime's own loader, exactly as on a node. The arm64 runtime runs in the arm64 VM tests (test_arch).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from standin_build import node_standin_binary

HERE = Path(__file__).resolve().parent
NODE_BINARY = node_standin_binary()


def run(binary: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "K0S_STANDIN_ROOT": str(root), "K0S_STANDIN_ALLOW_NONROOT": "1"}
    return subprocess.run([str(binary), *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def unpacked(root: Path) -> list[str]:
    home = root / "opt" / "k0s-standin"
    return sorted(entry.name for entry in home.iterdir()) if home.exists() else []


def test_first_run_unpacks_the_runtime_once_and_later_runs_reuse_it(tmp_path):
    assert NODE_BINARY.read_bytes()[:10] == b"#!/bin/sh\n"
    assert run(NODE_BINARY, tmp_path, "version").stdout == "v1.31.1+k0s.0\n"
    first = unpacked(tmp_path)
    assert len(first) == 2 and first[0].startswith("k0s-") and first[0].endswith(".pyz")
    assert first[1].startswith("runtime-amd64-")
    runtime = tmp_path / "opt" / "k0s-standin" / first[1]
    stamp = runtime.stat().st_mtime_ns
    assert run(NODE_BINARY, tmp_path, "version").returncode == 0
    assert unpacked(tmp_path) == first and runtime.stat().st_mtime_ns == stamp


def test_a_controller_started_from_it_serves_tls_with_keys_its_own_cryptography_made(make_node):
    # The CA, the API's serving certificate and the TLS server all come from the runtime the file carries.
    node = make_node("nb")
    node.knobs(ready_delay_seconds=0.3, heartbeat_seconds=0.5)
    node.write_config()
    process = subprocess.Popen([str(NODE_BINARY), "controller", "-c", "/etc/k0s/k0s.yaml"], env=node.env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        node.wait_ready(timeout=60)
        assert (node.root / "opt" / "k0s-standin").is_dir()
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def test_a_cut_off_file_fails_naming_why_and_leaves_no_half_runtime(tmp_path):
    whole = NODE_BINARY.read_bytes()
    cut = tmp_path / "k0s"
    cut.write_bytes(whole[: len(whole) // 4])
    cut.chmod(0o755)
    result = run(cut, tmp_path / "root", "version")
    assert result.returncode == 1
    assert "k0s stand-in: cannot unpack its Python runtime into" in result.stderr
    assert unpacked(tmp_path / "root") == []


def test_make_version_writes_a_node_binary_reporting_that_version(tmp_path):
    out = tmp_path / "k0s"
    subprocess.run([sys.executable, str(HERE / "make-version"), "v1.32.1+k0s.0", str(out)], check=True,
                   capture_output=True, timeout=120)
    assert run(out, tmp_path / "root", "version").stdout == "v1.32.1+k0s.0\n"
    bad = subprocess.run([sys.executable, str(HERE / "make-version"), "1.32", str(tmp_path / "bad")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "'1.32' is not a k0s release tag" in bad.stderr and not (tmp_path / "bad").exists()
