"""vm.*: single VMs of a lab."""
from __future__ import annotations

import os
import shlex
import sys

from invoke import Exit, task

from k0slab.cli.common import LAB_HELP, friendly, remainder_argv
from k0slab.core import ui
from k0slab.core.errors import K0slabError
from k0slab.core.units import parse_whole
from k0slab.vms import arch as archmod
from k0slab.vms import vm as vmmod


@task(help={"name": "VM name (a hostname)", "cpus": "virtual CPUs", "memory": "e.g. 1G, 512M",
            "disk": "disk size, e.g. 5G", "arch": "amd64 or arm64", "image": "image recipe", "lab": LAB_HELP})
@friendly
def vm_launch(c, name, cpus="1", memory="1G", disk="5G", arch=None, image="debian-12", lab="default"):
    """Create and boot a VM, then wait until SSH works."""
    # A string default: with an int one invoke's parser casts `--cpus two` itself, as a traceback.
    request = vmmod.VMRequest(name=name, cpus=parse_whole(cpus, "--cpus"), memory=memory, disk=disk,
                              arch=arch or archmod.host_arch(), image=image)
    vmmod.launch(lab, request, progress=ui.progress)


@task(help={"lab": LAB_HELP, "json": "print JSON"})
@friendly
def vm_list(c, lab="default", json=False):
    """List the lab's VMs: name, state, IPv4, image, arch."""
    rows = vmmod.list_vms(lab)
    ui.print_json(rows) if json else ui.table(rows, ["name", "state", "ipv4", "image", "arch"])


@task(help={"name": "VM name", "lab": LAB_HELP, "json": "print JSON"})
@friendly
def vm_info(c, name, lab="default", json=False):
    """Everything about one VM: state, addresses, resources, disk, console log path."""
    details = vmmod.info(lab, name)
    if json:
        ui.print_json(details)
    else:
        for key, value in details.items():
            ui.console.print(f"{key + ':':<13} {value}", markup=False)


@task(name="exec", help={"name": "VM name", "lab": LAB_HELP})
@friendly
def vm_exec(c, name, lab="default"):
    """Run a command on the VM: invoke vm.exec node1 -- uname -m (its exit code is propagated)."""
    argv = remainder_argv()
    if not argv:
        raise K0slabError("no command given", "put it after --, e.g. invoke vm.exec node1 -- uname -m")
    result = vmmod.runner(lab, name).run(shlex.join(argv), check=False)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.exit_code:
        raise Exit(code=result.exit_code)


@task(help={"name": "VM name", "lab": LAB_HELP})
@friendly
def vm_shell(c, name, lab="default"):
    """An interactive root shell on the VM (OpenSSH, with a TTY)."""
    from k0slab.vms.ssh import interactive_argv

    lab_dir, state = vmmod.load(lab)
    node = vmmod.find_node(state, name)
    argv = interactive_argv(node.ip, lab_dir.ssh_key, lab_dir.known_hosts, remainder_argv())
    os.execvp(argv[0], argv)


@task(help={"source": "./file or node1:/path", "target": "node1:/path or ./file", "lab": LAB_HELP})
@friendly
def vm_transfer(c, source, target, lab="default"):
    """Copy a file between the host and a VM: invoke vm.transfer ./f node1:/tmp/f"""
    ui.progress(vmmod.transfer(lab, source, target))


@task(help={"name": "VM name", "lab": LAB_HELP, "force": "power off at once instead of a clean shutdown"})
@friendly
def vm_stop(c, name, lab="default", force=False):
    """Shut the VM down (cleanly, then forced after 30 s)."""
    vmmod.stop(lab, name, force=force)
    ui.progress(f"{name} stopped")


@task(help={"name": "VM name", "lab": LAB_HELP})
@friendly
def vm_start(c, name, lab="default"):
    """Start a stopped VM and wait for SSH."""
    vmmod.start(lab, name, progress=ui.progress)


@task(help={"name": "VM name", "lab": LAB_HELP})
@friendly
def vm_restart(c, name, lab="default"):
    """Stop then start the VM."""
    vmmod.stop(lab, name)
    vmmod.start(lab, name, progress=ui.progress)


@task(help={"name": "VM name", "lab": LAB_HELP,
            "purge": "also remove its console log, and the lab's network and folder when it was the last VM"})
@friendly
def vm_delete(c, name, lab="default", purge=False):
    """Delete the VM: domain, disk and DHCP reservation."""
    vmmod.delete(lab, name, purge=purge)
    ui.progress(f"{name} deleted")
