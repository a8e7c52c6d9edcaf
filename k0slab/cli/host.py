"""host.*: libvirt without systemd, in a network namespace."""
from __future__ import annotations

from invoke import task

from k0slab.cli.common import friendly
from k0slab.core import ui
from k0slab.vms import hostenv


@task(help={"netns": "network namespace to create and run libvirtd in"})
@friendly
def host_up(c, netns=hostenv.DEFAULT_NETNS):
    """Start libvirtd + virtlogd inside a network namespace (hosts without systemd, CI sandboxes)."""
    ui.progress(hostenv.host_up(netns, progress=ui.progress))


@task(help={"netns": "the namespace host.up created"})
@friendly
def host_down(c, netns=hostenv.DEFAULT_NETNS):
    """Stop the libvirtd/virtlogd that host.up started and delete its namespace."""
    ui.progress(hostenv.host_down(netns))


@task(help={"brief": "print one machine-readable line: none, private NETNS or system (scripts/harness.sh)"})
@friendly
def host_status(c, brief=False):
    """Which libvirtd labs use: k0slab's own in a namespace, the system's, or none yet."""
    found = hostenv.find_libvirt()
    print(f"{found.kind} {found.netns or ''}".strip() if brief else found.describe())
