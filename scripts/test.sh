#!/usr/bin/env bash
# Set up and run the whole test suite: unit and contract tests, then real VMs through libvirt.
# VM tests run inside a network namespace made here, with libvirtd started inside it, so that
# no lab network ever appears in the host's main namespace. Everything started is stopped at exit.
#   scripts/test.sh [pytest args]       e.g. scripts/test.sh -k transfer
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/harness.sh
source scripts/harness.sh
# --vagrant: the Vagrant backend's end-to-end test needs vagrant and vagrant-libvirt.
harness_setup "${K0SLAB_TEST_NETNS:-k0slab-test}" --vagrant
# Images are built before harness_start, outside the namespace (see scripts/harness.sh).
.venv/bin/invoke image.build --arch amd64
.venv/bin/invoke image.build --arch arm64
harness_start
harness_run .venv/bin/pytest "$@"
