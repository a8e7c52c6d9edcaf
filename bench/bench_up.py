"""Issue 8's benchmark: how fast and how lean `lab.up` is, measured in one run on one machine.

Run it through scripts/bench.sh (libvirtd in a network namespace of its own, the k0s stand-in
pushed), or as `invoke bench.up` where libvirt already runs. Every lab it makes has a fresh name
and is removed at the end, after an error or a Ctrl-C too. docs/benchmarks.md explains each number.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from k0slab.vms import image as imagemod
from k0slab.vms import vm as vmmod
from k0slab.vms.accel import choose_accel
from k0slab.vms.arch import arch_settings
from k0slab.vms.domain import domain_name
from k0slab.core.errors import K0slabError
from k0slab.cluster.lab import Lab
from k0slab.vms.libvirt_backend import LibvirtBackend
from k0slab.core.paths import REPO_ROOT
from k0slab.core.proc import require_tool, run
from k0slab.core.state import LabDir

Progress = Callable[[str], None]
IMAGE = "debian-12"
# The same recipe plus Debian's cloud-init (images/debian-12-cloudinit.yaml).
CLOUDINIT_IMAGE = "debian-12-cloudinit"
# k0slab puts its SSH key on every VM's kernel command line; masking the unit that installs it
# leaves the cloud-init VM only the key its NoCloud seed gives, as on a cloud.
CLOUDINIT_CMDLINE = "systemd.mask=k0slab-identity.service"
READY_PHASE = "wait for /readyz and every node Ready"
CACHED_BUILD_CALLS = 5
BOOT_VM = "node1"
MIB = 1 << 20


@dataclass(frozen=True)
class Target:
    label: str
    key: str
    limit: float  # met when the measured value is at most this


TARGETS = (
    # Issue 14's targets; overhead is the primary one.
    Target("k0slab overhead <= 10 s", "overhead_s", 10.0),
    Target("up3 / up1 <= 1.8", "ratio_up3_up1", 1.8),
    Target("re-run on a ready lab <= 2 s", "rerun_s", 2.0),
    Target("down of 3 nodes <= 5 s", "down3_s", 5.0),
    Target("disk per extra node <= 100 MB", "disk_per_node_mb", 100.0),
    Target("cached image build <= 1 s", "image_build_cached_s", 1.0),
    Target("boot-to-SSH <= 0.5 x cloud-init", "ratio_boot_k0slab_cloudinit", 0.5),
    Target("revert of 3 nodes to ready <= 0.15 x up3", "ratio_revert3_up3", 0.15),
)

# What the table shows, in this order; the unit follows from the key's suffix.
METRICS = (
    ("up1_s", "lab.up, 1 node"),
    ("up3_s", "lab.up, 3 nodes"),
    ("ratio_up3_up1", "up3 / up1"),
    ("overhead_s", "k0slab overhead, 3 nodes"),
    ("rerun_s", "lab.up re-run on the ready lab"),
    ("ssh_connections_per_node", "SSH connections, busiest node of up3"),
    ("remote_commands_per_node", "remote commands, busiest node of up3"),
    ("down3_s", "lab.down, 3 nodes"),
    ("disk_per_node_mb", "host disk per node overlay"),
    ("qemu_rss_mb_per_node", "QEMU RSS per node"),
    ("image_build_cached_s", "image.build, cached (median)"),
    ("cli_startup_s", "invoke start-up"),
    ("boot_to_ssh_s", "boot to SSH, k0slab image (median)"),
    ("boot_to_ssh_cloudinit_s", "boot to SSH, stock cloud-init (median)"),
    ("ratio_boot_k0slab_cloudinit", "k0slab / cloud-init boot"),
    ("snapshot3_s", "lab.snapshot, 3 nodes"),
    ("snapshot_mb_per_node", "host disk per snapshot per node"),
    ("revert3_s", "lab.revert, 3 nodes, to every node Ready + kubectl"),
    ("ratio_revert3_up3", "revert3 / up3"),
)


@dataclass(frozen=True)
class BenchOptions:
    arch: str
    k0s_binary: Path | None = None
    runs: int = 1  # boot-to-SSH samples per image


# --- pure parts: arithmetic, verdicts, the report -------------------------------------------


def overhead_s(up_s: float, ssh_ready_s: dict[str, float], phases: dict[str, float]) -> float:
    """lab.up's own time: its wall time less the slowest node's boot to SSH and the wait for k0s.
    ssh_ready_s counts from the start of the SSH wait (up-timings.json), so the moments between a
    domain's start and that wait are charged to k0slab: the overhead is never under-stated."""
    if not ssh_ready_s or READY_PHASE not in phases:
        raise K0slabError(
            "up-timings.json lacks the SSH wait or the ready phase", "the 3-node lab.up did not run every phase"
        )
    return up_s - max(ssh_ready_s.values()) - phases[READY_PHASE]


def busiest(remote: dict[str, dict[str, dict[str, int]]], kind: str) -> int | None:
    """The most of kind (connections, commands) any one node took in a run (up-timings.json "remote")."""
    totals = [phases["total"][kind] for phases in remote.values() if "total" in phases]
    return max(totals) if totals else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def mean(values: dict[str, float]) -> float | None:
    return statistics.fmean(values.values()) if values else None


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for target in TARGETS:
        value = results.get(target.key)
        verdict = "not measured" if value is None else "met" if value <= target.limit else "missed"
        rows.append({"target": target.label, "key": target.key, "value": value, "limit": target.limit,
                     "verdict": verdict})
    return rows


def finish(measured: dict[str, Any]) -> dict[str, Any]:
    """The report: every issue-8 key (None when its step failed), derived values and verdicts."""
    report: dict[str, Any] = {key: None for key, _ in METRICS}
    report.update({"phases": {}, "ssh_ready_s": {}, "disk_mb_by_node": {}, "qemu_rss_mb_by_node": {},
                   "boot_samples_s": {}, "snapshot_mb_by_node": {}, "remote_by_node": {}, "errors": []})
    report.update(measured)
    report["ratio_up3_up1"] = ratio(report["up3_s"], report["up1_s"])
    report["ratio_boot_k0slab_cloudinit"] = ratio(report["boot_to_ssh_s"], report["boot_to_ssh_cloudinit_s"])
    report["disk_per_node_mb"] = mean(report["disk_mb_by_node"])
    report["qemu_rss_mb_per_node"] = mean(report["qemu_rss_mb_by_node"])
    report["snapshot_mb_per_node"] = mean(report["snapshot_mb_by_node"])
    report["ratio_revert3_up3"] = ratio(report["revert3_s"], report["up3_s"])
    report = _rounded(report)
    report["targets"] = verdicts(report)
    return report


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def _with_unit(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    if key.endswith("_s"):
        return f"{value:.2f} s"
    if "_mb" in key:
        return f"{value:.1f} MiB"
    return f"{value:.2f}"


def tables(report: dict[str, Any]) -> list[Table]:
    """Measurements, 3-node phases and targets, for the terminal."""
    measured = Table(title="k0slab benchmark", box=None, header_style="bold")
    measured.add_column("measurement")
    measured.add_column("value", justify="right")
    for key, label in METRICS:
        measured.add_row(label, _with_unit(key, report.get(key)))
    phases = Table(title="lab.up phases, 3 nodes", box=None, header_style="bold")
    phases.add_column("phase")
    phases.add_column("seconds", justify="right")
    for name, seconds in report["phases"].items():
        phases.add_row(name, f"{seconds:.2f}")
    targets = Table(title="issue 8 targets", box=None, header_style="bold")
    for column in ("target", "value", "verdict"):
        targets.add_column(column)
    colours = {"met": "green", "missed": "red", "not measured": "yellow"}
    for row in report["targets"]:
        targets.add_row(row["target"], _with_unit(row["key"], row["value"]),
                        f"[{colours[row['verdict']]}]{row['verdict']}[/]")
    return [measured, phases, targets]


# --- measurements of the host ------------------------------------------------------------------


def qemu_rss_mb(domains: dict[str, str], proc: Path = Path("/proc")) -> dict[str, float]:
    """RSS in MiB of each VM's QEMU process, by VM name; `domains` maps libvirt domain names to VMs.
    libvirt starts QEMU with `-name guest=<domain>,debug-threads=on`, which identifies the process."""
    found: dict[str, float] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            guest = next((value for flag, value in itertools.pairwise(argv) if flag == b"-name"), b"")
            vm = domains.get(guest.decode(errors="replace").split(",")[0].removeprefix("guest="))
            if vm is not None:
                found[vm] = _status_kib((entry / "status").read_text(), "VmRSS") / 1024
        except (FileNotFoundError, ProcessLookupError):
            continue  # the process ended while we looked
    return found


def _status_kib(status: str, field: str) -> int:
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise K0slabError(f"no {field} in a /proc status file", "a kernel without it cannot be measured")


def overlay_disk_mb(disks_dir: Path) -> dict[str, float]:
    """Host disk each VM's qcow2 overlay really takes (allocated blocks, not apparent size), by VM.
    The lab's raw k0s-binary disk is shared by the lab, not a node's, and is left out."""
    return {path.stem: path.stat().st_blocks * 512 / MIB for path in sorted(disks_dir.glob("*.qcow2"))}


def machine_info(kernel: Path, arch: str) -> dict[str, Any]:
    accel, reason = choose_accel(kernel, arch)
    qemu = run([arch_settings(arch).emulator, "--version"], what="qemu --version").splitlines()[0]
    version = LibvirtBackend().conn.getLibVersion()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(_status_kib(Path("/proc/meminfo").read_text(), "MemTotal") / (1 << 20), 1),
        "arch": arch, "accel": accel, "accel_reason": reason, "qemu": qemu,
        "libvirt": f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}",
        "kernel": platform.release(), "python": platform.python_version(),
    }


# --- the cloud-init seed ---------------------------------------------------------------------


def seed_documents(hostname: str, instance_id: str, public_key: str) -> tuple[str, str]:
    """NoCloud user-data and meta-data: root SSH with the lab's key. Debian's stock cloud.cfg locks
    root (disable_root) and makes a `debian` user; root stays reachable here because k0slab's SSH
    wait logs in as root, everything else keeps the package's defaults."""
    user_data = "#cloud-config\n" + yaml.safe_dump(
        {"disable_root": False, "ssh_authorized_keys": [public_key.strip()]}, sort_keys=False
    )
    meta_data = yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname}, sort_keys=False)
    return user_data, meta_data


def write_seed(target: Path, hostname: str, instance_id: str, public_key: str) -> Path:
    """An ISO 9660 NoCloud seed labelled `cidata`, made by cloud-localds (cloud-image-utils)."""
    require_tool("cloud-localds", "cloud-image-utils")
    user_data, meta_data = seed_documents(hostname, instance_id, public_key)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "user-data").write_text(user_data)
        (Path(tmp) / "meta-data").write_text(meta_data)
        run(["cloud-localds", target, Path(tmp) / "user-data", Path(tmp) / "meta-data"], what="cloud-localds")
    target.chmod(0o644)  # read by the unprivileged QEMU
    return target


# --- labs: fresh names, always removed ---------------------------------------------------------


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """A second Ctrl-C during clean-up would leave VMs behind; signals can be set in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def fresh_labs(remove: Callable[[str], None], progress: Progress) -> Iterator[Callable[[str], str]]:
    """Yields new(suffix) -> a lab name unique to this run; every lab named is removed on the way out."""
    prefix = "b" + secrets.token_hex(3)
    named: list[str] = []

    def new(suffix: str) -> str:
        named.append(f"{prefix}-{suffix}")
        return named[-1]

    failed: list[str] = []
    try:
        yield new
    finally:
        with _sigint_ignored():
            for name in named:
                try:
                    remove(name)
                except Exception as exc:  # noqa: BLE001 - one stuck lab must not keep the others
                    failed.append(name)
                    progress(f"could not remove lab {name}: {exc}")
    if failed:
        raise K0slabError(f"bench labs {', '.join(failed)} were not removed",
                          "remove them with: invoke lab.down --lab NAME, or invoke lab.prune")


# --- the timed steps ---------------------------------------------------------------------------


def _invoke(*args: str, quiet: bool = False) -> float:
    """Run a k0slab command as a user types it; its wall time, interpreter start-up included."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO_ROOT, check=False,
                            stdout=subprocess.DEVNULL if quiet else None)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise K0slabError(f"invoke {' '.join(args)} exited {result.returncode}", "its output is above")
    return seconds


def _up_args(lab: str, nodes: int, options: BenchOptions) -> list[str]:
    args = ["lab.up", "--nodes", str(nodes), "--lab", lab, "--arch", options.arch]
    return args + (["--k0s-binary", str(options.k0s_binary)] if options.k0s_binary else [])


def boot_to_ssh(lab_name: str, image: str, arch: str, progress: Progress) -> float:
    """Seconds for vm.launch's steps (plan, network, overlay, domain) and the boot until root SSH
    works, in a new lab. The clock starts once the lab folder and key exist: the seed needs the key."""
    lab = LabDir(lab_name)
    backend = vmmod.get_backend()
    with lab.locked():
        state = vmmod.open_or_create_lab(lab, backend)
    cloud_init = image == CLOUDINIT_IMAGE
    disks: dict[str, tuple[str, ...]] = {}
    if cloud_init:
        seed = write_seed(lab.disks_dir / f"{BOOT_VM}-seed.iso", BOOT_VM, f"{lab_name}-{BOOT_VM}",
                          lab.ssh_key.with_suffix(".pub").read_text())
        disks[BOOT_VM] = (str(seed),)
    started = time.monotonic()
    with lab.locked():
        node = vmmod.plan_node(state, vmmod.VMRequest(name=BOOT_VM, arch=arch, image=image))
        vmmod.create_nodes(lab, state, [node], backend, progress, CLOUDINIT_CMDLINE if cloud_init else "", disks)
    vmmod.wait_for_ssh(lab, state, [node], backend)
    return time.monotonic() - started


def _boot_samples(options: BenchOptions, new_lab: Callable[[str], str], progress: Progress) -> dict[str, Any]:
    samples: dict[str, list[float]] = {IMAGE: [], CLOUDINIT_IMAGE: []}
    # Alternating the images spreads any drift in the machine's load over both.
    for run_index in range(1, options.runs + 1):
        for image, tag in ((IMAGE, "k"), (CLOUDINIT_IMAGE, "c")):
            name = new_lab(f"{tag}{run_index}")
            progress(f"bench: boot to SSH, {image}, run {run_index}/{options.runs} (lab {name})")
            samples[image].append(boot_to_ssh(name, image, options.arch, progress))
            Lab(name).down(progress)
    return {"boot_samples_s": samples, "boot_to_ssh_s": statistics.median(samples[IMAGE]),
            "boot_to_ssh_cloudinit_s": statistics.median(samples[CLOUDINIT_IMAGE])}


def _up1(options: BenchOptions, new_lab: Callable[[str], str], progress: Progress) -> dict[str, Any]:
    name = new_lab("up1")
    progress(f"bench: lab.up --nodes 1 (lab {name})")
    seconds = _invoke(*_up_args(name, 1, options))
    Lab(name).down(progress)
    return {"up1_s": seconds}


# The 3-node run's per-node timeline (lab.up's logs/up-timeline.svg), kept after its lab is removed.
TIMELINE_COPY = REPO_ROOT / "out" / "bench-up3-timeline.svg"


def _up3(name: str, options: BenchOptions, progress: Progress) -> dict[str, Any]:
    progress(f"bench: lab.up --nodes 3 (lab {name})")
    seconds = _invoke(*_up_args(name, 3, options))
    logs = LabDir(name).logs_dir
    timings = json.loads((logs / "up-timings.json").read_text())
    TIMELINE_COPY.parent.mkdir(parents=True, exist_ok=True)
    TIMELINE_COPY.write_text((logs / "up-timeline.svg").read_text())
    remote = timings.get("remote", {})
    return {"up3_s": seconds, "phases": timings["phases"], "ssh_ready_s": timings["ssh_ready_s"],
            "overhead_s": overhead_s(seconds, timings["ssh_ready_s"], timings["phases"]),
            "timeline_svg": str(TIMELINE_COPY), "remote_by_node": remote,
            "ssh_connections_per_node": busiest(remote, "connections"),
            "remote_commands_per_node": busiest(remote, "commands")}


def _footprint(name: str) -> dict[str, Any]:
    """Host disk and memory of a lab's nodes, measured while it is up."""
    lab = LabDir(name)
    domains = {domain_name(name, vm): vm for vm in lab.load().nodes}
    rss = qemu_rss_mb(domains)
    if set(rss) != set(domains.values()):
        raise K0slabError(f"QEMU processes found for {sorted(rss)}, expected {sorted(domains.values())}",
                          "the bench must see the host's /proc (same PID namespace as libvirt's QEMU)")
    return {"disk_mb_by_node": overlay_disk_mb(lab.disks_dir), "qemu_rss_mb_by_node": rss}


def _snapshot_and_revert(name: str) -> dict[str, Any]:
    """lab.snapshot of the ready 3-node lab, then lab.revert to it: its wall time ends only once
    every node is Ready and a kubectl call with the lab's kubeconfig answered (lab.revert's last steps)."""
    snapshot_s = _invoke("lab.snapshot", "bench", "--lab", name)
    added = LabDir(name).load().snapshots["bench"].added_bytes
    revert_s = _invoke("lab.revert", "bench", "--lab", name)
    return {"snapshot3_s": snapshot_s, "revert3_s": revert_s,
            "snapshot_mb_by_node": {node: size / MIB for node, size in added.items()}}


def _cached_build(options: BenchOptions) -> dict[str, Any]:
    samples = []
    for _ in range(CACHED_BUILD_CALLS):
        started = time.monotonic()
        imagemod.build(IMAGE, options.arch, progress=lambda _line: None)
        samples.append(time.monotonic() - started)
    return {"image_build_cached_s": statistics.median(samples)}


def _preflight(options: BenchOptions) -> imagemod.Image:
    """Fail before any lab exists: inside the namespace a missing image cannot be built (no mirror)."""
    if options.runs < 1:
        raise K0slabError(f"--runs {options.runs} must be at least 1")
    if options.k0s_binary is not None and not options.k0s_binary.is_file():
        raise K0slabError(f"--k0s-binary {options.k0s_binary} is not a file", "scripts/bench.sh passes the stand-in")
    require_tool("cloud-localds", "cloud-image-utils")
    imagemod.require_image(CLOUDINIT_IMAGE, options.arch)
    return imagemod.require_image(IMAGE, options.arch)


def run_benchmark(options: BenchOptions, progress: Progress) -> dict[str, Any]:
    """Every measurement, in one run; a failed step is reported in `errors` and its keys stay None."""
    image = _preflight(options)
    measured: dict[str, Any] = {
        "machine": machine_info(image.kernel, options.arch), "runs": options.runs,
        "k0s_binary": str(options.k0s_binary) if options.k0s_binary else "release download", "errors": [],
    }

    def step(title: str, work: Callable[[], dict[str, Any]]) -> bool:
        try:
            measured.update(work())
            return True
        except K0slabError as exc:
            measured["errors"].append(f"{title}: {exc.message}")
            progress(f"bench: {title} failed: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
            return False

    with fresh_labs(lambda name: Lab(name).down(progress), progress) as new_lab:
        step("cached image build", lambda: _cached_build(options))
        step("invoke start-up", lambda: {"cli_startup_s": _invoke("--list", quiet=True)})
        step("boot to SSH", lambda: _boot_samples(options, new_lab, progress))
        step("1-node lab.up", lambda: _up1(options, new_lab, progress))
        up3 = new_lab("up3")
        if step("3-node lab.up", lambda: _up3(up3, options, progress)):
            step("disk and memory of the 3 nodes", lambda: _footprint(up3))
            step("re-run", lambda: {"rerun_s": _invoke(*_up_args(up3, 3, options))})
            step("snapshot and revert", lambda: _snapshot_and_revert(up3))
            step("3-node lab.down", lambda: {"down3_s": _invoke("lab.down", "--lab", up3)})
    return finish(measured)


def main(json_file: Path | None, k0s_binary: Path | None, runs: int, arch: str, progress: Progress,
         console: Console) -> dict[str, Any]:
    """What `invoke bench.up` does: measure, print the tables and the JSON, write the JSON file."""
    report = run_benchmark(BenchOptions(arch=arch, k0s_binary=k0s_binary, runs=runs), progress)
    for table in tables(report):
        console.print(table)
    text = json.dumps(report, indent=2)
    sys.stdout.write(text + "\n")
    if json_file is not None:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(text + "\n")
        progress(f"bench: results written to {json_file}")
    return report
