# shellcheck shell=bash
# The VM harness that scripts/test.sh and scripts/bench.sh share (sourced, not run, from the repo
# root). libvirt is used as it is found (`k0slab host.status`, tested in tests/unit/test_hostenv.py):
#   - k0slab's own libvirtd already runs in a network namespace: use that namespace;
#   - the system's libvirtd answers (systemd, e.g. a GitHub runner): use it, no namespace;
#   - none: start libvirtd and virtlogd in a network namespace made here (no lab network ever
#     appears in the host's main namespace), and stop them when the calling script exits.
# Only what the harness started is stopped.
#   harness_setup NETNS [SETUP-ARGS]  machine packages and .venv (setup.sh SETUP-ARGS)
#   harness_start         find or start libvirt; sets K0SLAB_NETNS when labs live in a namespace.
#                         Images must be built before, outside the namespace: host.up probes KVM
#                         by booting an image's kernel, and the namespace has no route to the mirror
#   harness_run CMD...    run CMD where the labs' networks are (inside the namespace, if any)

harness_setup() {
  bash scripts/setup.sh "${@:2}"
  harness_netns=$1
}

harness_stop() {
  .venv/bin/k0slab host.down --netns "$harness_netns" || true
}

harness_start() {
  local found
  found=$(.venv/bin/k0slab host.status --brief)
  case $found in
    none)
      trap harness_stop EXIT
      .venv/bin/k0slab host.up --netns "$harness_netns"
      export K0SLAB_NETNS=$harness_netns ;;
    "private "*)
      export K0SLAB_NETNS=${found#private }
      echo "harness: using k0slab's libvirtd in network namespace $K0SLAB_NETNS (left running)" ;;
    system)
      unset K0SLAB_NETNS
      echo "harness: using the system's libvirtd (left running)" ;;
    *)
      echo "harness: unexpected answer from host.status: $found" >&2
      return 1 ;;
  esac
}

harness_run() {
  if [ -n "${K0SLAB_NETNS:-}" ]; then
    ip netns exec "$K0SLAB_NETNS" "$@"
  else
    "$@"
  fi
}
