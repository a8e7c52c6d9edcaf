"""k0slab's command line: thin invoke tasks over the k0slab library.

    invoke --list            all tasks
    invoke --help lab.up     one task's options
"""
from __future__ import annotations

import functools
import os
import shlex
import sys
from typing import Any
from collections.abc import Callable

from invoke import Collection, Exit, task

from pathlib import Path

from k0slab.vms import arch as archmod
from k0slab.vms import hostenv
from k0slab.vms import image as imagemod
from k0slab.core import ui
from k0slab.vms import vm as vmmod
from k0slab.core.errors import K0slabError
from k0slab.core.units import parse_whole

ui.setup_logging()
LAB_HELP = "lab name (default: default); several labs live side by side"


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn K0slabError into one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except K0slabError as error:
            ui.error_console.print(ui.format_error(error), markup=False)
            raise Exit(code=1) from None
        except KeyboardInterrupt:
            ui.error_console.print("interrupted: run the same command again to continue, or lab.down to clean up")
            # Exit now: worker threads may be inside a long wait, and an orderly interpreter exit
            # would join them. State files are written atomically, so nothing is half-written.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)

    return wrapper


def remainder_argv() -> list[str]:
    """Words after `--` on the command line, with their original quoting."""
    return sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []


# --- image -----------------------------------------------------------------------------------


@task(help={"image": "recipe name in images/ (default debian-12)", "arch": "amd64 or arm64 (default: host)",
            "force": "rebuild even when cached"})
@friendly
def image_build(c, image="debian-12", arch=None, force=False):
    """Build a VM image from the Debian mirror (cached by recipe hash; a cached run takes < 1 s)."""
    built = imagemod.build(image, arch or archmod.host_arch(), force=force, progress=ui.progress)
    ui.progress(f"image {built.name} {built.arch}: {built.path} (built {built.built_at} in {built.build_seconds}s)")


@task(help={"json": "print JSON instead of a table"})
@friendly
def image_list(c, json=False):
    """List cached images: name, arch, source, size, cache path, built at."""
    rows = [
        {"name": i.name, "arch": i.arch, "source": i.source, "size": f"{i.size_bytes / (1 << 20):.0f}M",
         "path": str(i.path), "built_at": i.built_at}
        for i in imagemod.list_images()
    ]
    ui.print_json(rows) if json else ui.table(rows, ["name", "arch", "source", "size", "path", "built_at"])


@task(help={"image": "recipe name in images/ (default debian-12)", "arch": "amd64 or arm64 (default: host)"})
@friendly
def image_box(c, image="debian-12", arch=None):
    """Package the cached image as a vagrant-libvirt box (lab.up --provider vagrant adds it to Vagrant)."""
    from k0slab.vms import vagrant_box

    arch = arch or archmod.host_arch()
    path = vagrant_box.build_box(image, arch, progress=ui.progress)
    ui.progress(f"box {vagrant_box.box_name(image, arch)}: {path}")


@task(help={"url": "image URL", "checksums": "URL of the SHA256SUMS/SHA512SUMS file",
            "name": "name to cache it under", "arch": "amd64 or arm64"})
@friendly
def image_pull(c, url, checksums, name="cloud", arch=None):
    """Download a cloud image and verify it against its published checksum file."""
    pulled = imagemod.pull(url, checksums, name, arch or archmod.host_arch(), progress=ui.progress)
    ui.progress(f"image {pulled.name} {pulled.arch} verified and cached at {pulled.path}")


# --- vm --------------------------------------------------------------------------------------


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
    argv = interactive_argv(node.ip, lab_dir.ssh_key, remainder_argv())
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


# --- lab ---------------------------------------------------------------------------------------


def _lab(name: str):
    from k0slab.cluster.lab import Lab

    return Lab(name)


@task(help={
    "nodes": "number of nodes: node1 is the profile's controller, the rest workers",
    "profile": "a profile name in profiles/ or a YAML file (default: default)",
    "lab": LAB_HELP,
    "k0s_version": "k0s release tag, e.g. v1.31.1+k0s.0, or 'stable' (default: the profile's)",
    "k0s_binary": "use this local k0s binary instead of downloading one (air-gapped hosts, dev builds)",
    "arch": "amd64 or arm64 for every node (overrides the profile)",
    "cpus": "vCPUs per node", "memory": "memory per node, e.g. 2G", "disk": "disk per node, e.g. 5G",
    "provider": "libvirt (default) or vagrant",
    "box": "with --provider vagrant: a public Vagrant box instead of k0slab's own image (needs internet)",
    "dry_run": "print the plan (phases, nodes, IPs, k0s.yaml) and create nothing",
})
@friendly
def lab_up(c, nodes=None, profile="default", lab="default", k0s_version=None, k0s_binary=None, arch=None,
           cpus=None, memory=None, disk=None, provider=None, box=None, dry_run=False):
    """Bring up a k0s cluster in VMs: node1 controller+worker, the others workers. Safe to re-run."""
    from k0slab.cluster.lab import UpOptions
    from k0slab.core.profile import load_profile, with_overrides

    nodes = parse_whole(nodes, "--nodes") if nodes is not None else None
    cpus = parse_whole(cpus, "--cpus") if cpus is not None else None
    chosen = with_overrides(
        load_profile(profile), nodes=nodes, arch=arch,
        cpus=cpus, memory=memory, disk=disk, k0s_version=k0s_version,
        provider=provider, box=box,
    )
    binary = Path(k0s_binary).expanduser() if k0s_binary else None
    _lab(lab).up(UpOptions(profile=chosen, k0s_binary=binary, dry_run=dry_run), ui.progress)


@task(help={"lab": LAB_HELP})
@friendly
def lab_down(c, lab="default"):
    """Remove the lab completely: VMs, network, disks, keys, kubeconfigs."""
    _lab(lab).down(ui.progress)


@task(help={"lab": LAB_HELP, "json": "print one JSON object"})
@friendly
def lab_status(c, lab="default", json=False):
    """Nodes with role, IP, arch, VM state, k0s state, readiness and version."""
    status = _lab(lab).status()
    if json:
        ui.print_json(status)
        return
    ui.table(status["nodes"], ["name", "role", "arch", "ip", "vm_state", "k0s_state", "ready", "version"],
             title=f"lab {status['lab']} (k0s {status['k0s_version'] or '-'})")
    if status["kubeconfig"]:
        ui.console.print(f"kubeconfig: {status['kubeconfig']}", markup=False)


@task(help={"lab": LAB_HELP})
@friendly
def lab_kubeconfig(c, lab="default"):
    """Print the admin kubeconfig's path: export KUBECONFIG=$(invoke lab.kubeconfig)"""
    print(_lab(lab).kubeconfig())


@task(help={"node": "node name", "lab": LAB_HELP})
@friendly
def lab_ssh(c, node, lab="default"):
    """A root shell on a node, or run a command: invoke lab.ssh node2 -- k0s status"""
    argv = remainder_argv()
    if argv:
        vm_exec.body(c, node, lab=lab)
    else:
        vm_shell.body(c, node, lab=lab)


@task(help={"node": "node name", "lab": LAB_HELP})
@friendly
def lab_logs(c, node, lab="default"):
    """The k0s journal of a node (also saved in the lab's logs folder)."""
    sys.stdout.write(_lab(lab).logs(node))


@task(name="dump-logs", help={"dir": "folder to write into (created)", "lab": LAB_HELP})
@friendly
def lab_dump_logs(c, dir="out/logs", lab="default"):
    """Console logs, k0s journals and state of every node into a folder CI can keep."""
    for path in _lab(lab).dump_logs(Path(dir)):
        ui.progress(f"wrote {path}")


@task(iterable=["group"], help={
    "name": "user name (the certificate's CN)",
    "group": "group (an O value of the certificate); repeat for several groups",
    "days": "certificate validity in days (default 365)",
    "clusterrole": "bind this ClusterRole (e.g. view, edit, cluster-admin); with --namespace, in that namespace only",
    "role": "bind this Role in --namespace",
    "namespace": "namespace of the --role / --clusterrole binding",
    "output": "also write the kubeconfig here (default: <lab>/users/NAME.kubeconfig)",
    "check": "run `get nodes` (and pods) as the user and report Forbidden / allowed against its bindings",
    "revoke": "remove the user's binding, kubeconfig and record",
    "lab": LAB_HELP,
})
@friendly
def lab_user(c, name, group=None, days="365", clusterrole=None, role=None, namespace=None, output=None, check=False,
             revoke=False, lab="default"):
    """Create a user with a client certificate signed by the lab CA: invoke lab.user demo --group development"""
    target = _lab(lab)
    if revoke:
        target.revoke_user(name)
        ui.progress(f"user {name} revoked: binding, kubeconfig and record removed (the certificate stays valid "
                    "until it expires, but is bound to nothing)")
        return
    if group:
        # days defaults to a string for the same reason as vm.launch's cpus.
        groups = [g for item in group for g in item.split(",")]
        record = target.create_user(name, groups, parse_whole(days, "--days"), clusterrole=clusterrole, role=role,
                                    namespace=namespace, output=Path(output) if output else None)
        ui.console.print(record.summary(), markup=False)
    elif not check:
        raise K0slabError(f"nothing to do for user {name!r}", "create it with --group G, or use --check / --revoke")
    if check:
        verdict = target.check_user(name)
        ui.console.print(str(verdict), markup=False)
        if not verdict.ok:
            raise Exit(code=1)


@task(help={"lab": LAB_HELP, "json": "print JSON"})
@friendly
def lab_users(c, lab="default", json=False):
    """The lab's users: name, groups, expiry, bindings."""
    records = _lab(lab).users()
    if json:
        ui.print_json([r.model_dump(mode="json") for r in records])
        return
    ui.table([{"user": r.name, "groups": ",".join(r.groups), "expires": f"{r.expires:%Y-%m-%d}",
               "bindings": ", ".join(f"{b.role_kind}/{b.role}" for b in r.bindings) or "-"} for r in records],
             ["user", "groups", "expires", "bindings"])


@task(help={
    "only": "comma-separated checks: nodes,system,dns,workload,rbac,metrics (default: all)",
    "junit": "write a JUnit XML report here", "json": "write a JSON report here",
    "user": "lab user for the rbac check (default: the first one)", "lab": LAB_HELP,
    "timeout": "seconds each check may wait (default 180)",
})
@friendly
def lab_smoke(c, only=None, junit=None, json=None, user=None, lab="default", timeout=180.0):
    """Smoke-test the cluster: a table, reports for CI, exit 0 only if every check that ran passed."""
    from k0slab.checks import smoke

    checks = [name for name in only.split(",") if name] if only else None
    report = _lab(lab).smoke(checks, user, ui.progress, smoke.SmokeSettings(check_timeout_s=float(timeout)))
    ui.console.print(smoke.render_table(report))
    for path, text in ((junit, smoke.to_junit_xml), (json, smoke.to_json)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text(report))
            ui.progress(f"wrote {path}")
    if not report.ok:
        raise Exit(code=1)


@task
@friendly
def lab_prune(c):
    """Remove VMs, networks and folders k0slab created that no lab owns any more (after a crash)."""
    from k0slab.cluster.lab import prune

    prune(ui.progress)


# --- host (libvirt without systemd) ----------------------------------------------------------


@task(help={"netns": "network namespace to create and run libvirtd in"})
@friendly
def host_up(c, netns=hostenv.DEFAULT_NETNS):
    """Start libvirtd + virtlogd inside a network namespace (hosts without systemd, CI sandboxes)."""
    ui.progress(hostenv.host_up(netns))


@task(help={"netns": "the namespace host.up created"})
@friendly
def host_down(c, netns=hostenv.DEFAULT_NETNS):
    """Stop the libvirtd/virtlogd that host.up started and delete its namespace."""
    ui.progress(hostenv.host_down(netns))


# --- bench -----------------------------------------------------------------------------------


@task(help={
    "json": "also write the results as JSON to this file",
    "k0s_binary": "push this k0s binary (scripts/bench.sh gives the stand-in) instead of downloading one",
    "runs": "boot-to-SSH samples per image, the median is reported (default 1)",
})
@friendly
def bench_up(c, json=None, k0s_binary=None, runs=1):
    """Issue 8's benchmark: lab.up/down times, overhead, disk, RSS, boot vs cloud-init (use scripts/bench.sh)."""
    from bench import bench_up as bench

    try:
        report = bench.main(Path(json) if json else None, Path(k0s_binary).resolve() if k0s_binary else None,
                            int(runs), archmod.host_arch(), ui.progress, ui.console)
    except KeyboardInterrupt:
        ui.error_console.print("interrupted: the bench's labs were removed")
        raise Exit(code=130) from None
    if report["errors"]:
        raise Exit(code=1)


def _collection(name: str, *tasks: Any) -> Collection:
    collection = Collection(name)
    prefix = name + "_"
    for item in tasks:
        collection.add_task(item, name=item.name.removeprefix(prefix).replace("_", "-"))
    return collection


namespace = Collection()
namespace.add_collection(_collection("image", image_build, image_list, image_pull, image_box))
namespace.add_collection(_collection(
    "vm", vm_launch, vm_list, vm_info, vm_exec, vm_shell, vm_transfer, vm_stop, vm_start, vm_restart, vm_delete,
))
namespace.add_collection(_collection(
    "lab", lab_up, lab_down, lab_status, lab_kubeconfig, lab_ssh, lab_logs, lab_dump_logs, lab_prune, lab_user,
    lab_users, lab_smoke,
))
namespace.add_collection(_collection("host", host_up, host_down))
namespace.add_collection(_collection("bench", bench_up))
