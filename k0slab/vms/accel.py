"""Is hardware acceleration usable? Decided by booting a kernel, not by looking for /dev/kvm.

On nested or broken hosts /dev/kvm exists and even creates VMs, yet a Linux guest hangs or
QEMU aborts. So the probe boots the image's own kernel with no root disk under KVM: a working
host reaches the kernel's "no root" panic in a second or two; a broken one hangs or crashes.
The verdict is cached per host kernel and printed, since a probe costs up to PROBE_TIMEOUT_S.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from k0slab.vms import arch as archmod
from k0slab.core.paths import cache_home

PROBE_TIMEOUT_S = 15.0


def _cache_file() -> Path:
    return cache_home() / "accel.json"


def _cache_key(guest_arch: str) -> str:
    return f"{platform.release()}:{guest_arch}"


def probe_kvm(kernel: Path, guest_arch: str) -> tuple[bool, str]:
    """Boot `kernel` under KVM to its panic; returns (works, reason)."""
    if guest_arch != archmod.host_arch():
        return False, f"{guest_arch} guests on a {archmod.host_arch()} host need emulation (TCG)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    settings = archmod.arch_settings(guest_arch)
    with tempfile.TemporaryDirectory() as tmp:
        console = Path(tmp) / "console.log"
        argv = [
            settings.emulator, "-accel", "kvm", "-M", settings.machine, "-cpu", "host",
            "-display", "none", "-nodefaults", "-no-user-config", "-m", "256", "-no-reboot",
            "-serial", f"file:{console}", "-kernel", str(kernel),
            "-append", f"console={settings.console} panic=-1 quiet",
        ]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return False, f"a kernel under KVM did not finish booting in {PROBE_TIMEOUT_S:.0f} s (KVM hangs)"
        booted = "Kernel panic" in console.read_text(errors="replace")
        if result.returncode == 0 and booted:
            return True, "a kernel booted under KVM"
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"QEMU with KVM failed (exit {result.returncode}): {last}"


def choose_accel(kernel: Path, guest_arch: str, *, refresh: bool = False) -> tuple[str, str]:
    """('kvm' | 'tcg', reason), from the cache unless refresh."""
    cache = _cache_file()
    known: dict[str, dict[str, str]] = {}
    if cache.is_file():
        try:
            known = json.loads(cache.read_text())
        except json.JSONDecodeError:
            known = {}
    key = _cache_key(guest_arch)
    if key in known and not refresh:
        entry = known[key]
        return entry["accel"], entry["reason"] + " (cached)"
    works, reason = probe_kvm(kernel, guest_arch)
    accel = "kvm" if works else "tcg"
    known[key] = {"accel": accel, "reason": reason}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(known, indent=2))
    return accel, reason
