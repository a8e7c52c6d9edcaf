# shellcheck shell=bash
# The VM harness that scripts/test.sh and scripts/bench.sh share (sourced, not run, from the repo
# root): libvirtd and virtlogd inside a network namespace made here, so that no lab network ever
# appears in the host's main namespace, and stopped again when the calling script exits.
#   harness_setup NETNS [SETUP-ARGS]  machine packages and .venv (setup.sh SETUP-ARGS);
#                         K0SLAB_NETNS=NETNS from here on
#   harness_start         start libvirt in the namespace; images must be built before, outside it:
#                         host.up probes KVM by booting an image's kernel, and the namespace has
#                         no route to the Debian mirror
#   harness_run CMD...    run CMD inside the namespace

harness_setup() {
  bash scripts/setup.sh "${@:2}"
  export K0SLAB_NETNS=$1
}

harness_stop() {
  .venv/bin/invoke host.down --netns "$K0SLAB_NETNS" || true
}

harness_start() {
  trap harness_stop EXIT
  .venv/bin/invoke host.up --netns "$K0SLAB_NETNS"
}

harness_run() {
  ip netns exec "$K0SLAB_NETNS" "$@"
}
