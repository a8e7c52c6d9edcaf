"""bench.*: the benchmark (needs a checkout: bench/ is not part of the package)."""
from __future__ import annotations

import sys
from pathlib import Path

from invoke import Exit, task

from k0slab.cli.common import friendly
from k0slab.core import ui
from k0slab.core.errors import K0slabError
from k0slab.core.paths import REPO_ROOT
from k0slab.vms import arch as archmod


@task(help={
    "json": "also write the results as JSON to this file",
    "k0s_binary": "push this k0s binary (scripts/bench.sh gives the stand-in) instead of downloading one",
    "runs": "boot-to-SSH samples per image, the median is reported (default 1)",
})
@friendly
def bench_up(c, json=None, k0s_binary=None, runs=1):
    """Issue 8's benchmark: lab.up/down times, overhead, disk, RSS, boot vs cloud-init (use scripts/bench.sh)."""
    if not (REPO_ROOT / "bench" / "bench_up.py").is_file():
        raise K0slabError("bench.up needs a k0slab checkout: bench/ is not part of the installed package",
                          "run it from a clone: bash scripts/bench.sh")
    # `invoke` puts the checkout on sys.path (for tasks.py), the installed `k0slab` command does not.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from bench import bench_up as bench

    try:
        report = bench.main(Path(json) if json else None, Path(k0s_binary).resolve() if k0s_binary else None,
                            int(runs), archmod.host_arch(), ui.progress, ui.console)
    except KeyboardInterrupt:
        ui.error_console.print("interrupted: the bench's labs were removed")
        raise Exit(code=130) from None
    if report["errors"]:
        raise Exit(code=1)
