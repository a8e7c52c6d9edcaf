"""libvirt domain XML for a lab VM: direct kernel boot from the cached image, per-arch settings."""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from k0slab.vms.arch import arch_settings

K0SLAB_XMLNS = "https://k0slab.dev/xmlns/1"
# QEMU's default TCG translation cache is 1 GiB per VM (~800 MiB RSS); 128 MiB halves RSS with
# no visible slowdown (measured in shared/probes/libvirt-amd64).
TCG_TB_CACHE_MIB = 128


def domain_name(lab: str, vm: str) -> str:
    return f"k0slab-{lab}-{vm}"


@dataclass
class DomainSpec:
    lab: str
    name: str
    arch: str
    accel: str  # "kvm" or "tcg"
    cpus: int
    memory_mib: int
    disk: Path
    base_disk: Path
    kernel: Path
    initrd: Path
    mac: str
    network: str
    console_log: Path
    ssh_public_key: str
    extra_disks: list[Path] = field(default_factory=list)  # read-only, e.g. the k0s binary disk
    extra_cmdline: str = ""

    def kernel_cmdline(self) -> str:
        settings = arch_settings(self.arch)
        # The key travels base64-encoded: a public key line has spaces, the command line splits on them.
        key = base64.b64encode(self.ssh_public_key.strip().encode()).decode()
        words = [
            "root=/dev/vda", "rw", f"console={settings.console}", f"systemd.hostname={self.name}",
            f"k0slab.sshkey={key}", "quiet", self.extra_cmdline,
        ]
        return " ".join(w for w in words if w)


def _cpu_xml(spec: DomainSpec) -> str:
    if spec.accel == "kvm":
        return "<cpu mode='host-passthrough' check='none'/>"
    model = arch_settings(spec.arch).cpu_model_tcg
    return f"<cpu mode='custom' match='exact' check='none'><model fallback='allow'>{model}</model></cpu>"


def _features_xml(spec: DomainSpec) -> str:
    features = []
    if spec.arch == "amd64":
        features.append("<acpi/>")
    else:
        features.append("<gic version='3'/>")
    if spec.accel == "tcg":
        features.append(f"<tcg><tb-cache unit='MiB'>{TCG_TB_CACHE_MIB}</tb-cache></tcg>")
    return "<features>" + "".join(features) + "</features>"


def _extra_disks_xml(spec: DomainSpec) -> str:
    disks = []
    for offset, path in enumerate(spec.extra_disks):
        target = "vd" + chr(ord("b") + offset)
        disks.append(
            f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            f"<source file='{escape(str(path))}'/><target dev='{target}' bus='virtio'/><readonly/></disk>"
        )
    return "\n    ".join(disks)


def domain_xml(spec: DomainSpec) -> str:
    settings = arch_settings(spec.arch)
    domain_type = "kvm" if spec.accel == "kvm" else "qemu"
    return f"""<domain type='{domain_type}'>
  <name>{domain_name(spec.lab, spec.name)}</name>
  <metadata>
    <k0slab:vm xmlns:k0slab="{K0SLAB_XMLNS}" lab="{escape(spec.lab)}" name="{escape(spec.name)}"/>
  </metadata>
  <memory unit='MiB'>{spec.memory_mib}</memory>
  <vcpu>{spec.cpus}</vcpu>
  <os>
    <type arch='{settings.libvirt_arch}' machine='{settings.machine}'>hvm</type>
    <kernel>{escape(str(spec.kernel))}</kernel>
    <initrd>{escape(str(spec.initrd))}</initrd>
    <cmdline>{escape(spec.kernel_cmdline())}</cmdline>
  </os>
  {_features_xml(spec)}
  {_cpu_xml(spec)}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{settings.emulator}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='unsafe' discard='unmap'/>
      <source file='{escape(str(spec.disk))}'/>
      <backingStore type='file'>
        <format type='qcow2'/>
        <source file='{escape(str(spec.base_disk))}'/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    {_extra_disks_xml(spec)}
    <interface type='network'>
      <source network='{escape(spec.network)}'/>
      <mac address='{spec.mac}'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <log file='{escape(str(spec.console_log))}' append='on'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='none'/>
  </devices>
</domain>"""
