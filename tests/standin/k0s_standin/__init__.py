"""k0s stand-in: a test-only replacement for the k0s binary (see tests/standin/README.md).

One module per concept; `build-k0s` packs them into one executable zipapp, which is what travels to
/usr/local/bin/k0s on a node.

It honours the k0s command line and on-disk contract that k0slab uses (/work/shared/k0s-contract.md,
cited below as "contract §N") closely enough that k0slab cannot tell it from the real binary, while
running nothing but Python: no kubelet, no containerd, no pods.

Runtime: python3 >= 3.11 and cryptography >= 38.0.4 (Debian 12), stdlib only otherwise.

Fault knobs
-----------
Read from /etc/k0s-standin.yaml (under K0S_STANDIN_ROOT when set) every time they matter, so a test
can change them on a running node. Flat YAML map, every key optional:

    ready_delay_seconds: 3       # controller: seconds from start until /readyz says ok (default 3)
    refuse_first_joins: 2        # controller: refuse the first N join attempts (HTTP 503, retriable)
    crash_at_start: true         # controller or worker process: log a line and exit 1 at start
    stop_heartbeats: true        # worker on this node: stop posting node status -> NotReady after grace
    node_grace_seconds: 40       # controller: heartbeat age after which a node turns NotReady (default 40)
    heartbeat_seconds: 10        # worker on this node: seconds between status syncs (default 10, like the kubelet)

Environment (host testing)
--------------------------
K0S_STANDIN_ROOT=DIR         prefix for every absolute path; `start` spawns the unit's ExecStart detached
                             (pid file DIR/run/k0s/<unit>.pid, output DIR/var/log/k0s.log) instead of
                             calling systemctl, and servers bind to spec.api.address only.
K0S_STANDIN_ALLOW_NONROOT=1  skip the root check of install/start/stop/reset.
K0S_STANDIN_VERSION=vX       version to report (default v1.31.1+k0s.0).
"""
