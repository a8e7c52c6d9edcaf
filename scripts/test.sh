#!/usr/bin/env bash
# Set up and run the whole test suite: unit and contract tests, then real VMs through libvirt.
# libvirt is used as scripts/harness.sh finds it: k0slab's own libvirtd in a network namespace (made
# and started here when none runs, so no lab network appears in the host's main namespace), or the
# system's libvirtd under systemd (GitHub runners). Only what is started here is stopped at exit.
# Run as root.
#   scripts/test.sh [pytest args]       e.g. scripts/test.sh -k transfer
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/harness.sh
source scripts/harness.sh
# --vagrant: the Vagrant backend's end-to-end test needs vagrant and vagrant-libvirt. Where the
# distribution has no vagrant package, setup.sh says so and those tests report "not run".
harness_setup "${K0SLAB_TEST_NETNS:-k0slab-test}" --vagrant
# Images are built before harness_start, outside the namespace (see scripts/harness.sh).
.venv/bin/k0slab image.build --arch amd64
.venv/bin/k0slab image.build --arch arm64
# So is the k0s stand-in that the VM tests push: it carries Python runtimes extracted from the mirror.
.venv/bin/python -c 'from tests.standin.standin_build import node_standin_binary; node_standin_binary()'
harness_start
harness_run .venv/bin/pytest "$@"
