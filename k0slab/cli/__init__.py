"""k0slab's command line: thin invoke tasks over the k0slab library, one module per namespace.

The same collection serves `invoke lab.up` in a checkout (tasks.py) and the installed `k0slab` command
(`program`, invoke's Program reused as a distinct binary).
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from invoke import Collection, Program

from k0slab.cli import bench, host, image, lab, vm
from k0slab.core import ui

ui.setup_logging()


def _collection(name: str, *tasks: Any) -> Collection:
    collection = Collection(name)
    prefix = name + "_"
    for item in tasks:
        collection.add_task(item, name=item.name.removeprefix(prefix).replace("_", "-"))
    return collection


namespace = Collection()
namespace.add_collection(_collection("image", image.image_build, image.image_list, image.image_pull, image.image_box))
namespace.add_collection(_collection(
    "vm", vm.vm_launch, vm.vm_list, vm.vm_info, vm.vm_exec, vm.vm_shell, vm.vm_transfer, vm.vm_stop, vm.vm_start,
    vm.vm_restart, vm.vm_delete,
))
namespace.add_collection(_collection(
    "lab", lab.lab_up, lab.lab_down, lab.lab_status, lab.lab_kubeconfig, lab.lab_ssh, lab.lab_logs,
    lab.lab_dump_logs, lab.lab_prune, lab.lab_user, lab.lab_users, lab.lab_smoke, lab.lab_upgrade,
    lab.lab_backup, lab.lab_restore, lab.lab_snapshot, lab.lab_snapshots, lab.lab_revert,
))
namespace.add_collection(_collection("host", host.host_up, host.host_down, host.host_status))
namespace.add_collection(_collection("bench", bench.bench_up))


def _version() -> str:
    try:
        return version("k0slab")
    except PackageNotFoundError:  # a checkout used without installing it
        return "unknown"


program = Program(namespace=namespace, name="k0slab", binary="k0slab", binary_names=["k0slab"], version=_version())
