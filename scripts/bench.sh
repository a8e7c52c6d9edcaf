#!/usr/bin/env bash
# Run issue 8's benchmark (k0slab bench.up) in the test harness's environment: libvirtd inside a
# network namespace of its own, stopped at exit. It pushes the k0s stand-in unless --k0s-binary is
# given. Run it on an otherwise idle machine, never next to scripts/test.sh: both would share the
# cores being measured. docs/benchmarks.md explains the numbers.
#   scripts/bench.sh [bench.up options]     e.g. scripts/bench.sh --runs 3 --json out/bench.json
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/harness.sh
source scripts/harness.sh
harness_setup "${K0SLAB_BENCH_NETNS:-k0slab-bench}"
.venv/bin/k0slab image.build
.venv/bin/k0slab image.build --image debian-12-cloudinit
harness_start
args=("$@")
if [[ " $* " != *" --k0s-binary"* && " $* " != *" -k "* ]]; then
  # The stand-in is built from tests/standin/k0s_standin into a cache keyed by its sources.
  standin=$(.venv/bin/python -c 'from tests.standin.standin_build import node_standin_binary; print(node_standin_binary())')
  args=(--k0s-binary "$standin" "${args[@]}")
fi
harness_run .venv/bin/k0slab bench.up "${args[@]}"
