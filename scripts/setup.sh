#!/usr/bin/env bash
# Set up a Debian 12 / Ubuntu 24.04 machine (or a GitHub ubuntu-24.04 runner) for k0slab: system
# packages (apt) and the Python virtualenv .venv with the `k0slab` and `invoke` commands.
# Idempotent and quick when everything is already there. Run as root.
#   scripts/setup.sh            what lab.up needs
#   scripts/setup.sh --vagrant  also vagrant + vagrant-libvirt, for --provider vagrant, where the
#                               distribution has them (Debian 12 does, Ubuntu 24.04 does not)
#   scripts/setup.sh --packages-only   the system packages, no .venv (the composite action makes
#                               its own virtualenv outside the checkout)
# Every package name was checked against the distributions' lists: README.md, "Set-up on a clean machine".
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: needs root for apt-get; run it as root (e.g. sudo bash scripts/setup.sh)" >&2
  exit 1
fi

packages=(
  # VMs: libvirt, QEMU for both arches, disk tools
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config qemu-system-x86 qemu-system-arm qemu-utils
  dnsmasq-base iproute2 iptables netcat-openbsd openssh-client openssl
  # tests: ShellCheck for the workflow scripts (actionlint calls it)
  shellcheck
  # offline images: mmdebstrap, mkfs.ext4 -d, foreign-arch builds through qemu-user; the Debian
  # archive's keys, which Ubuntu lacks (without them mmdebstrap fails on NO_PUBKEY)
  mmdebstrap debian-archive-keyring e2fsprogs eatmydata arch-test qemu-user-static binfmt-support
  # the benchmark: cloud-localds writes the NoCloud seed of its stock cloud-init boot (bench/)
  cloud-image-utils
  # the virtualenv: libvirt-python builds against libvirt-dev with gcc, pkg-config and Python's headers
  python3 python3-venv python3-dev gcc
)
optional=()
venv=yes
case "${1:-}" in
  --vagrant) optional+=(vagrant vagrant-libvirt) ;;
  --packages-only) venv=no ;;
  "") ;;
  *) echo "setup: unknown option $1 (use --vagrant or --packages-only)" >&2; exit 2 ;;
esac

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# A simulated install also accepts a virtual package that one real package provides.
installable() { apt-get install -s -q "$1" >/dev/null 2>&1; }

missing=()
for package in "${packages[@]}" "${optional[@]}"; do
  installed "$package" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -q
  # One unknown name makes apt-get install nothing at all: check each first.
  wanted=()
  for package in "${missing[@]}"; do
    if installable "$package"; then
      wanted+=("$package")
    elif [[ " ${optional[*]} " == *" $package "* ]]; then
      echo "setup: $package is not in this distribution's archive: skipped; the Vagrant tests will report" \
           "'not run'. Install Vagrant from HashiCorp's apt repository, then: vagrant plugin install vagrant-libvirt"
    else
      echo "setup: package $package cannot be installed from this machine's apt sources (apt-get install -s" \
           "$package says why); on Ubuntu enable the universe component, then run scripts/setup.sh again" >&2
      exit 1
    fi
  done
  if [ "${#wanted[@]}" -gt 0 ]; then
    echo "setup: installing ${wanted[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${wanted[@]}"
  fi
fi

if [ "$venv" = no ]; then
  echo "setup: system packages ready"
  exit 0
fi
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$python" -m venv .venv; fi
if ! .venv/bin/python -c 'import k0slab, libvirt, fabric, invoke, pytest, vagrant' 2>/dev/null \
   || [ pyproject.toml -nt .venv/.k0slab-installed ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch .venv/.k0slab-installed
fi
echo "setup: ready (.venv/bin/k0slab --list shows the tasks)"
