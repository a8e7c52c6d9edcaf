"""Running host commands, with failures turned into errors that show the command's own words."""
from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from k0slab.core.errors import K0slabError


def require_tool(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise K0slabError(f"{tool} is not installed", f"install it: apt-get install {package}")
    return path


# How often a long command's heartbeat runs: progress is never silent for more than 10 s.
HEARTBEAT_S = 5.0


def run(
    argv: Sequence[str | Path],
    *,
    what: str,
    log: Path | None = None,
    timeout: float | None = None,
    heartbeat: Callable[[], None] | None = None,
) -> str:
    """Run argv; on failure raise with the last lines of its output (and the log path, if any).
    With a log, heartbeat (when given) is called every HEARTBEAT_S seconds while the command runs."""
    args = [str(a) for a in argv]
    if log is not None:
        with open(log, "ab") as sink:
            sink.write(("$ " + " ".join(args) + "\n").encode())
            sink.flush()
            output_start = sink.tell()
            returncode = _wait_beating(subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT), timeout,
                                       heartbeat)
        if returncode != 0:
            with open(log, "rb") as source:
                source.seek(output_start)
                tail = source.read().decode(errors="replace").strip().splitlines()[-3:]
            raise K0slabError(
                f"{what} failed (exit {returncode}): {' | '.join(tail)}", f"full log: {log}"
            )
        return ""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise K0slabError(f"{what} failed (exit {result.returncode}): {' | '.join(detail)}")
    return result.stdout


def _wait_beating(proc: subprocess.Popen[bytes], timeout: float | None,
                  heartbeat: Callable[[], None] | None) -> int:
    """proc's exit code, calling heartbeat between waits; killed (like subprocess.run) after timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with proc:
        while True:
            wait_s = HEARTBEAT_S if deadline is None else min(HEARTBEAT_S, max(0.0, deadline - time.monotonic()))
            try:
                return proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() >= deadline:
                    proc.kill()
                    proc.wait()
                    raise subprocess.TimeoutExpired(proc.args, timeout) from None
                if heartbeat is not None:
                    heartbeat()
            except BaseException:
                proc.kill()
                raise
