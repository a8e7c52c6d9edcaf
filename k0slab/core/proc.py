"""Running host commands, with failures turned into errors that show the command's own words."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from k0slab.core.errors import K0slabError


def require_tool(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise K0slabError(f"{tool} is not installed", f"install it: apt-get install {package}")
    return path


def run(
    argv: Sequence[str | Path],
    *,
    what: str,
    log: Path | None = None,
    timeout: float | None = None,
) -> str:
    """Run argv; on failure raise with the last lines of its output (and the log path, if any)."""
    args = [str(a) for a in argv]
    if log is not None:
        with open(log, "ab") as sink:
            sink.write(("$ " + " ".join(args) + "\n").encode())
            sink.flush()
            output_start = sink.tell()
            result = subprocess.run(args, stdout=sink, stderr=subprocess.STDOUT, timeout=timeout)
        if result.returncode != 0:
            with open(log, "rb") as source:
                source.seek(output_start)
                tail = source.read().decode(errors="replace").strip().splitlines()[-3:]
            raise K0slabError(
                f"{what} failed (exit {result.returncode}): {' | '.join(tail)}", f"full log: {log}"
            )
        return ""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise K0slabError(f"{what} failed (exit {result.returncode}): {' | '.join(detail)}")
    return result.stdout
