"""lab.*: a k0s cluster's lifecycle, users, logs and smoke test."""
from __future__ import annotations

import sys
from pathlib import Path

from invoke import Exit, task

from k0slab.cli.common import LAB_HELP, friendly, remainder_argv, require_root
from k0slab.cli.vm import vm_exec, vm_shell
from k0slab.core import ui
from k0slab.core.errors import K0slabError
from k0slab.core.paths import check_file, check_folder
from k0slab.core.units import parse_seconds, parse_whole


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
    "egress": "nat (default: nodes reach registries through NAT) or none (images only from airgap bundles)",
    "airgap": "download the release's airgap image bundle for each arch and put it on every kubelet node",
    "airgap_bundle": "an image archive for every kubelet node (OCI layout tar, docker save, ctr export); repeatable",
}, iterable=["airgap_bundle"])
@friendly
def lab_up(c, nodes=None, profile="default", lab="default", k0s_version=None, k0s_binary=None, arch=None,
           cpus=None, memory=None, disk=None, provider=None, box=None, dry_run=False, egress=None, airgap=False,
           airgap_bundle=None):
    """Bring up a k0s cluster in VMs: node1 controller+worker, the others workers. Safe to re-run."""
    from k0slab.cluster.lab import UpOptions
    from k0slab.core.profile import load_profile, with_overrides

    if not dry_run:
        require_root("lab.up")
    nodes = parse_whole(nodes, "--nodes") if nodes is not None else None
    cpus = parse_whole(cpus, "--cpus") if cpus is not None else None
    chosen = with_overrides(
        load_profile(profile), nodes=nodes, arch=arch,
        cpus=cpus, memory=memory, disk=disk, k0s_version=k0s_version,
        provider=provider, box=box, egress=egress,
    )
    binary = Path(k0s_binary).expanduser() if k0s_binary else None
    bundles = [Path(p).expanduser() for p in airgap_bundle or []]
    _lab(lab).up(UpOptions(profile=chosen, k0s_binary=binary, dry_run=dry_run, airgap=airgap, airgap_bundles=bundles),
                 ui.progress)


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
    title = f"lab {status['lab']} (k0s {status['k0s_version'] or '-'})"
    if status["upgrade_target"]:
        title += f", upgrading to {status['upgrade_target']}: run lab.upgrade again to finish"
    ui.table(status["nodes"], ["name", "role", "arch", "ip", "vm_state", "k0s_state", "k0s_on_disk", "k0s_running",
                               "ready", "version"], title=title)
    if status["kubeconfig"]:
        ui.console.print(f"kubeconfig: {status['kubeconfig']}", markup=False)


@task(help={
    "k0s_version": "the k0s release tag to go to, e.g. v1.34.1+k0s.0, or 'stable'",
    "k0s_binary": "a local k0s binary to go to instead (air-gapped hosts, dev builds)",
    "lab": LAB_HELP, "concurrency": "workers upgraded at once (default 1)",
    "no_drain": "do not cordon and drain workers before their k0s restarts",
    "force": "allow a downgrade (k0s does not support them: restore a backup instead)",
})
@friendly
def lab_upgrade(c, k0s_version=None, k0s_binary=None, lab="default", concurrency="1", no_drain=False, force=False):
    """Upgrade k0s on every node: controllers one at a time, then workers drained, restarted, Ready."""
    from k0slab.cluster.upgrade import UpgradeOptions

    options = UpgradeOptions(
        k0s_version=k0s_version, k0s_binary=Path(k0s_binary).expanduser() if k0s_binary else None,
        concurrency=parse_whole(concurrency, "--concurrency"), drain=not no_drain, force=force,
    )
    _lab(lab).upgrade(options, ui.progress)


@task(help={"output": "the backup file to write (default: k0slab-backup-LAB-TIMESTAMP.tar)", "lab": LAB_HELP})
@friendly
def lab_backup(c, output=None, lab="default"):
    """Back up the cluster (k0s backup: etcd, PKI, manifests) with the lab's profile and k0s.yaml."""
    _lab(lab).backup(Path(output).expanduser() if output else None, ui.progress)


@task(help={"file": "a file lab.backup wrote", "lab": "name of the NEW lab to make (it must not exist)",
            "k0s_binary": "a local k0s binary, of the version the backup was made with (default: download it)"})
@friendly
def lab_restore(c, file, lab, k0s_binary=None):
    """Make a new lab from a backup: new VMs and IPs, k0s restore on its controller, then the rest."""
    _lab(lab).restore(Path(file).expanduser(), Path(k0s_binary).expanduser() if k0s_binary else None, ui.progress)


@task(help={"lab": LAB_HELP,
            "merge": "add the lab as context k0slab-LAB to ~/.kube/config (or $KUBECONFIG's first file); "
                     "lab.down removes it"})
@friendly
def lab_kubeconfig(c, lab="default", merge=False):
    """Print the admin kubeconfig's path: export KUBECONFIG=$(invoke lab.kubeconfig)"""
    path = _lab(lab).kubeconfig()
    if not merge:
        print(path)
        return
    from k0slab.cluster import kubeconfig

    target = kubeconfig.merge(lab, path)
    ui.progress(f"merged context {kubeconfig.entry_name(lab)} into {target}: "
                f"kubectl --context {kubeconfig.entry_name(lab)} get nodes")


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


@task(name="dump-logs", help={
    "dir": "folder to write into (created); an earlier dump's folder is refreshed",
    "force": "replace files of the same names that k0slab did not write there",
    "lab": LAB_HELP,
})
@friendly
def lab_dump_logs(c, dir="out/logs", force=False, lab="default"):
    """Console logs, k0s journals and state of every node into a folder CI can keep."""
    check_folder(Path(dir), "--dir")
    for path in _lab(lab).dump_logs(Path(dir), force=force):
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
    "superuser": "allow Kubernetes' own system:* groups, e.g. system:masters (a superuser until the cert expires)",
    "force": "with --output: replace an existing file",
    "lab": LAB_HELP,
})
@friendly
def lab_user(c, name, group=None, days="365", clusterrole=None, role=None, namespace=None, output=None, check=False,
             revoke=False, superuser=False, force=False, lab="default"):
    """Create a user with a client certificate signed by the lab CA: invoke lab.user demo --group development"""
    target = _lab(lab)
    if revoke:
        record, deleted = target.revoke_user(name)
        kept = "" if deleted else f"; {record.kubeconfig} was changed since k0slab wrote it, so it was kept"
        ui.progress(f"user {name} revoked: k0slab's binding and record removed{kept}. The certificate cannot be "
                    f"revoked and stays valid until {record.expires:%Y-%m-%d}: {record.powers()}")
        return
    if group:
        # days defaults to a string for the same reason as vm.launch's cpus.
        groups = [g for item in group for g in item.split(",")]
        record = target.create_user(name, groups, parse_whole(days, "--days"), clusterrole=clusterrole, role=role,
                                    namespace=namespace, output=Path(output) if output else None,
                                    superuser=superuser, force=force)
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
    "image": "workload image, pinned by tag, pulled only if absent (default docker.io/library/busybox:1.36.1)",
})
@friendly
def lab_smoke(c, only=None, junit=None, json=None, user=None, lab="default", timeout="180", image=None):
    """Smoke-test the cluster: a table, reports for CI, exit 0 only if every check that ran passed."""
    from k0slab.checks import smoke

    checks = [name for name in only.split(",") if name] if only else None
    seconds = parse_seconds(timeout, "--timeout", smoke.MAX_CHECK_TIMEOUT_S)
    for flag, path in (("--junit", junit), ("--json", json)):
        if path:
            check_file(Path(path), flag)
    settings = smoke.SmokeSettings(check_timeout_s=seconds,
                                   probe_image=smoke.check_probe_image(image or smoke.DEFAULT_PROBE_IMAGE))
    report = _lab(lab).smoke(checks, user, ui.progress, settings)
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


@task(help={"name": "snapshot name", "lab": LAB_HELP, "delete": "remove this snapshot instead of taking it",
            "force": "replace a snapshot of the same name"})
@friendly
def lab_snapshot(c, name, lab="default", delete=False, force=False):
    """Save every VM of a ready lab (memory and disk) as one point in time; lab.revert brings it back."""
    from k0slab.cluster.snapshots import Snapshots

    if delete:
        Snapshots(_lab(lab)).delete(name, ui.progress)
    else:
        Snapshots(_lab(lab)).take(name, ui.progress, force=force)


@task(help={"lab": LAB_HELP, "json": "print JSON"})
@friendly
def lab_snapshots(c, lab="default", json=False):
    """The lab's snapshots: name, time, size on disk, k0s version, which one was last reverted to."""
    from k0slab.cluster.snapshots import Snapshots

    rows = Snapshots(_lab(lab)).list()
    if json:
        ui.print_json(rows)
        return
    ui.table([{**r, "last_reverted": "*" if r["last_reverted"] else ""} for r in rows],
             ["name", "created", "size", "k0s_version", "nodes", "last_reverted"], title=f"lab {lab} snapshots")


@task(help={"name": "snapshot name (see lab.snapshots)", "lab": LAB_HELP})
@friendly
def lab_revert(c, name, lab="default"):
    """Bring the lab back to a snapshot; returns once clocks, /readyz, every node and the kubeconfig are fine."""
    from k0slab.cluster.snapshots import Snapshots

    Snapshots(_lab(lab)).revert(name, ui.progress)
