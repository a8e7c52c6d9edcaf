"""Long work is never silent for more than 10 s: image build steps and downloads report as they go."""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from k0slab.cluster.k0s import release
from k0slab.core import proc
from k0slab.vms import image


def test_a_long_command_beats_while_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc, "HEARTBEAT_S", 0.05)
    beats: list[int] = []
    proc.run([sys.executable, "-c", "import time; time.sleep(0.4)"], what="sleeping", log=tmp_path / "log",
             heartbeat=lambda: beats.append(1))
    assert len(beats) >= 3


def test_a_long_command_is_still_killed_at_its_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc, "HEARTBEAT_S", 0.05)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.run(["sleep", "30"], what="sleeping", log=tmp_path / "log", timeout=0.3, heartbeat=lambda: None)


def test_heartbeat_bound_is_within_ten_seconds() -> None:
    assert proc.HEARTBEAT_S <= 10 and release.REPORT_EVERY_S <= 10


def test_a_build_beat_names_stage_bytes_elapsed_and_the_logs_last_line(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("I: running apt-get update...\nI: downloading packages with apt...\n")
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "rootfs" / "blob").write_bytes(b"x" * 3 * (1 << 20))
    lines: list[str] = []
    reporter = image._BuildReporter(tmp_path, log, lines.append, started=0.0)
    reporter.stage("mmdebstrap bookworm amd64", " (log: build.log)")
    reporter.beat()
    assert lines[0] == "mmdebstrap bookworm amd64 (log: build.log)"
    stage, rest = lines[1].split(": ", 1)
    assert stage == "mmdebstrap bookworm amd64"
    # The 3 MiB file plus the log's own block: "3.0M".
    assert re.fullmatch(r"3\.0M on disk, \d+s elapsed; I: downloading packages with apt\.\.\.", rest), rest


class SlowResponse(io.BytesIO):
    """A 4 MiB body, with a Content-Length, read chunk by chunk."""

    length = 4 << 20

    def __init__(self) -> None:
        super().__init__(b"k" * self.length)


def test_a_slow_download_reports_by_time_with_elapsed(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 1000, 6))  # each look at the clock is 6 s later: a very slow link
    monkeypatch.setattr(release.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(release, "_open", lambda url: SlowResponse())
    lines: list[str] = []
    release._stream("https://example.invalid/k0s", io.BytesIO(), lines.append)
    # Four 1 MiB chunks, each more than REPORT_EVERY_S after the last report: one line per chunk.
    assert lines == ["1M of 4M, 6s", "2M of 4M, 12s", "3M of 4M, 18s", "4M of 4M, 24s", "downloaded 4M"]
