#!/usr/bin/env bash
# Set up and run the whole test suite: unit and contract tests, then real VMs through libvirt.
# VM tests run inside a network namespace made here, with libvirtd started inside it, so that
# no lab network ever appears in the host's main namespace. Everything started is stopped at exit.
#   scripts/test.sh [pytest args]       e.g. scripts/test.sh -k transfer
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
netns=${K0SLAB_TEST_NETNS:-k0slab-test}
export K0SLAB_NETNS=$netns

# Images are built before libvirt starts: host.up probes KVM by booting the image's kernel.
.venv/bin/invoke image.build --arch amd64
.venv/bin/invoke image.build --arch arm64

cleanup() { .venv/bin/invoke host.down --netns "$netns" || true; }
trap cleanup EXIT
.venv/bin/invoke host.up --netns "$netns"
ip netns exec "$netns" .venv/bin/pytest "$@"
