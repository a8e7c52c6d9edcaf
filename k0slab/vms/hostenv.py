"""libvirt on hosts without systemd (containers, CI sandboxes, this project's test harness).

libvirtd and virtlogd are started inside a network namespace that k0slab creates, so every
bridge, dnsmasq and tap device of every lab lives there and nothing touches the host's own
network. libvirtd's UNIX socket still works from the main namespace, so the API needs nothing
special; SSH to VMs goes through the namespace (see ssh.netns_proxy_command).
On a normal machine with systemd (a GitHub runner), installing libvirt-daemon-system starts the
system's libvirtd, and k0slab uses that one as it is: no namespace, and host.down leaves it alone.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from k0slab.vms import accel
from k0slab.vms import arch
from k0slab.vms import image
from k0slab.core.errors import K0slabError
from k0slab.core.proc import require_tool, run

DEFAULT_NETNS = "k0slab"
RUN_DIR = Path("/run/k0slab")
LIBVIRT_READY_TIMEOUT_S = 60.0
KVM_DEVICE = Path("/dev/kvm")


# The namespace name becomes a pidfile name under RUN_DIR and an `ip netns` argument: no '/' or '..'.
_NETNS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,30}")


def validate_netns(netns: str) -> str:
    if not _NETNS_RE.fullmatch(netns or ""):
        raise K0slabError(f"--netns {netns!r} is not a valid namespace name",
                          "use up to 31 letters, digits, '-' and '_', e.g. k0slab")
    return netns


def _pidfile(daemon: str, netns: str) -> Path:
    return RUN_DIR / f"{validate_netns(netns)}-{daemon}.pid"


def _running(pidfile: Path) -> int | None:
    """The pid in a daemon's pidfile, if that process is alive and is that daemon (a stale pidfile
    may name a pid the kernel has since given to another program, which must never be signalled)."""
    daemon = pidfile.stem.rsplit("-", 1)[-1]
    try:
        pid = int(pidfile.read_text().strip())
        if Path(f"/proc/{pid}/comm").read_text().strip() != daemon:
            return None
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def libvirt_answers() -> bool:
    result = subprocess.run(
        ["virsh", "-c", os.environ.get("LIBVIRT_DEFAULT_URI", "qemu:///system"), "version"],
        capture_output=True, timeout=30, check=False,
    )
    return result.returncode == 0


@dataclass(frozen=True)
class LibvirtFound:
    """Which libvirtd k0slab should use: the harness and host.up act on this, never on guesses."""

    kind: Literal["none", "private", "system"]
    netns: str | None = None  # for "private": the namespace k0slab's libvirtd runs in

    def describe(self) -> str:
        if self.kind == "private":
            return f"k0slab's own libvirtd runs in network namespace {self.netns}: export K0SLAB_NETNS={self.netns}"
        if self.kind == "system":
            return "the system's libvirtd answers (not started by k0slab): labs use it, no namespace needed"
        return "no libvirtd answers"


def running_private_netns() -> list[str]:
    """Namespaces in which a libvirtd that host.up started is alive (by its pidfile)."""
    suffix = "-libvirtd.pid"
    return sorted(p.name.removesuffix(suffix) for p in RUN_DIR.glob(f"*{suffix}") if _running(p) is not None)


def find_libvirt(answers: Callable[[], bool] = libvirt_answers) -> LibvirtFound:
    """k0slab's private libvirtd when one runs (its socket also answers from the main namespace),
    else the system's when one answers, else none."""
    private = running_private_netns()
    if private:
        return LibvirtFound("private", private[0])
    return LibvirtFound("system") if answers() else LibvirtFound("none")


def host_up(netns: str = DEFAULT_NETNS, progress: Callable[[str], None] = print) -> str:
    """Create the namespace and start virtlogd + libvirtd in it (idempotent); returns a summary.
    A libvirtd that already answers is used as it is: k0slab's own in another namespace, or the system's."""
    validate_netns(netns)
    found = find_libvirt()
    if found.kind == "system" or (found.kind == "private" and found.netns != netns):
        return f"{found.describe()}; nothing to start"
    if os.geteuid() != 0:
        raise K0slabError("host.up needs root (it creates a network namespace and starts libvirtd)",
                          "run it as root, e.g. sudo .venv/bin/invoke host.up")
    for tool, package in (("libvirtd", "libvirt-daemon-system"), ("virtlogd", "libvirt-daemon-system"),
                          ("ip", "iproute2"), ("virsh", "libvirt-clients")):
        require_tool(tool, package)
    if not Path(f"/run/netns/{netns}").exists():
        run(["ip", "netns", "add", netns], what=f"creating network namespace {netns}")
    run(["ip", "-n", netns, "link", "set", "lo", "up"], what="bringing up loopback in the namespace")
    # libvirt's stock NAT network must never start: k0slab makes isolated networks per lab.
    Path("/etc/libvirt/qemu/networks/autostart/default.xml").unlink(missing_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    started = []
    mask_kvm, kvm_reason = _kvm_is_broken(progress)
    for daemon in ("virtlogd", "libvirtd"):
        pidfile = _pidfile(daemon, netns)
        if _running(pidfile) is None:
            command = [daemon, "-d", "-p", str(pidfile)]
            if daemon == "libvirtd" and mask_kvm:
                # libvirt re-probes every QEMU binary with KVM on each define when /dev/kvm exists but
                # does not work (a minute per VM here). Hiding the device from libvirtd alone, in its
                # own mount namespace, makes it use TCG straight away.
                command = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                           'mount --bind /dev/null /dev/kvm && exec "$@"', "libvirtd", *command]
            run(["ip", "netns", "exec", netns, *command], what=f"starting {daemon}")
            started.append(daemon)
    deadline = time.monotonic() + LIBVIRT_READY_TIMEOUT_S
    while not libvirt_answers():
        if time.monotonic() > deadline:
            raise K0slabError(
                f"libvirtd did not answer within {LIBVIRT_READY_TIMEOUT_S:.0f}s",
                "see /var/log/libvirt/ and `journalctl`, or start it by hand to see its errors",
            )
        time.sleep(0.3)
    pids = ", ".join(f"{d} pid {_running(_pidfile(d, netns))}" for d in ("virtlogd", "libvirtd"))
    what = f"started {' and '.join(started)}" if started else "already running"
    kvm = f"/dev/kvm hidden from libvirtd: {kvm_reason}" if mask_kvm else f"KVM: {kvm_reason}"
    return f"libvirt in network namespace {netns}: {what} ({pids}); {kvm}; export K0SLAB_NETNS={netns}"


def _stop_guests_and_networks() -> list[str]:
    """Stop k0slab's VMs and networks on the private libvirtd: QEMU and dnsmasq processes outlive
    libvirtd (and keep the deleted namespace alive) if they are left running. Only what carries
    k0slab's metadata is touched, never another tool's domains on the same libvirt."""
    from k0slab.vms.libvirt_backend import LibvirtBackend

    backend = LibvirtBackend()
    stopped = []
    for resource in backend.owned_resources():
        if backend.stop_resource(resource):
            stopped.append(f"{'VM' if resource.kind == 'domain' else 'network'} {resource.name}")
    return stopped


def _kvm_is_broken(progress: Callable[[str], None]) -> tuple[bool, str]:
    """(True, why) when /dev/kvm exists but the functional probe shows it does not work.

    The probe boots a kernel: the host's own, or a cached image's. Without either, the default image
    is built first (outside the namespace, which has no route to the mirror): libvirtd started
    unprobed on a broken /dev/kvm made every VM define wait about a minute.
    """
    if not KVM_DEVICE.exists():
        return False, "no /dev/kvm"
    kernel = _probe_kernel()
    if kernel is None:
        progress(f"host.up: no kernel to probe KVM with yet, building image {image.DEFAULT_RECIPE} first")
        kernel = image.build(image.DEFAULT_RECIPE, arch.host_arch(), progress=progress).kernel
    chosen, reason = accel.choose_accel(kernel, arch.host_arch())
    return chosen != "kvm", reason


def _probe_kernel() -> Path | None:
    host_images = [i for i in image.list_images() if i.arch == arch.host_arch() and i.kernel.is_file()]
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    return host_images[0].kernel if host_images else (kernels[-1] if kernels else None)


def host_down(netns: str = DEFAULT_NETNS) -> str:
    """Stop the daemons this module started (by their pidfiles) and delete the namespace.
    A libvirtd without k0slab's pidfile (the system's, under systemd) is never touched."""
    validate_netns(netns)
    stopped = []
    if _running(_pidfile("libvirtd", netns)) is not None:
        stopped += _stop_guests_and_networks()
    for daemon in ("libvirtd", "virtlogd"):
        pidfile = _pidfile(daemon, netns)
        pid = _running(pidfile)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if _running(pidfile) is None:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
            stopped.append(f"{daemon} (pid {pid})")
        pidfile.unlink(missing_ok=True)
    if Path(f"/run/netns/{netns}").exists():
        run(["ip", "netns", "del", netns], what=f"deleting network namespace {netns}")
    return f"stopped {', '.join(stopped) or 'nothing'}; namespace {netns} removed"
