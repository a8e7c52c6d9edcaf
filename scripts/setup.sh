#!/usr/bin/env bash
# Set up a Debian/Ubuntu machine for k0slab: system packages (apt) and the Python virtualenv.
# Idempotent and quick when everything is already there. Run as root (or with sudo).
#   scripts/setup.sh            what lab.up needs
#   scripts/setup.sh --vagrant  also vagrant + vagrant-libvirt, for --provider vagrant
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  # VMs: libvirt, QEMU for both arches, disk tools
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config qemu-system-x86 qemu-system-arm qemu-utils
  dnsmasq-base iproute2 iptables netcat-openbsd openssh-client openssl
  # tests: ShellCheck for the workflow scripts (actionlint calls it)
  shellcheck
  # offline images: mmdebstrap, mkfs.ext4 -d, foreign-arch builds through qemu-user
  mmdebstrap e2fsprogs eatmydata arch-test qemu-user-static binfmt-support
  # the benchmark: cloud-localds writes the NoCloud seed of its stock cloud-init boot (bench/)
  cloud-image-utils
  # the virtualenv: libvirt-python builds against libvirt-dev
  python3 python3-venv python3-dev gcc
)
if [ "${1:-}" = "--vagrant" ]; then packages+=(vagrant vagrant-libvirt); fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$python" -m venv .venv; fi
if ! .venv/bin/python -c 'import k0slab, libvirt, fabric, invoke, pytest' 2>/dev/null \
   || [ pyproject.toml -nt .venv/.k0slab-installed ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch .venv/.k0slab-installed
fi
echo "setup: ready (.venv/bin/invoke --list shows the tasks)"
