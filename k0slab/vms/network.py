"""A lab's private network: subnet, bridge, MACs and IPs, decided before anything boots.

Each lab gets its own /24 from 10.213.0.0/16 with DHCP reservations (MAC -> IP), so every
node's address is known in advance and labs never share a subnet, bridge or MAC.

Nodes need a default route, a resolver and (for registries) a way out before k0s can become
Ready (k0s-facts §9). With egress `nat` libvirt masquerades the lab subnet and its dnsmasq hands
out the bridge address as router and DNS server. With egress `none` the forwarding is dropped,
but nodes still get the bridge address as default route: kube-router, a host-network pod, cannot
reach the service address 10.96.0.1 without one (ENETUNREACH, kubernetes issue 57534).
"""
from __future__ import annotations

from typing import Literal
from xml.sax.saxutils import escape

from k0slab.core.errors import K0slabError
from k0slab.core.state import LabState, NodeState, subnet_prefix

FIRST_NODE_HOST = 10
MAX_NODES = 100
MAX_SUBNETS = 254
Egress = Literal["nat", "none"]
EGRESS_MODES: tuple[Egress, ...] = ("nat", "none")
DNSMASQ_XMLNS = "http://libvirt.org/schemas/network/dnsmasq/1.0"


def allocate_subnet(used: set[int]) -> int:
    """The lowest /24 index that no lab (state files) and no libvirt network uses."""
    for index in range(1, MAX_SUBNETS + 1):
        if index not in used:
            return index
    raise K0slabError("all 254 lab subnets in 10.213.0.0/16 are in use", "remove labs with: invoke lab.down --lab NAME")


def network_name(lab: str) -> str:
    return f"k0slab-{lab}"


def bridge_name(subnet_index: int) -> str:
    # Linux limits interface names to 15 characters; the subnet index is unique per lab.
    return f"k0slab{subnet_index}"


def node_ip(subnet_index: int, host_index: int) -> str:
    return f"{subnet_prefix(subnet_index)}.{FIRST_NODE_HOST + host_index}"


def node_mac(subnet_index: int, host_index: int) -> str:
    # 52:54:00 is QEMU's prefix; the rest encodes (subnet, host), so MACs never repeat across labs.
    return f"52:54:00:d5:{subnet_index:02x}:{host_index:02x}"


def next_host_index(state: LabState) -> int:
    taken = {node.index for node in state.nodes.values()}
    for index in range(1, MAX_NODES + 1):
        if index not in taken:
            return index
    raise K0slabError(f"lab {state.name!r} already has {MAX_NODES} nodes", "use another lab")


def dhcp_host_xml(node: NodeState) -> str:
    return f"<host mac='{node.mac}' name='{escape(node.name)}' ip='{node.ip}'/>"


def gateway_ip(subnet_index: int) -> str:
    """The bridge's address: every node's default route and resolver (libvirt's dnsmasq)."""
    return f"{subnet_prefix(subnet_index)}.1"


def network_xml(state: LabState) -> str:
    """NAT (egress nat) or isolated (egress none) network; both hand out the bridge as router."""
    prefix = subnet_prefix(state.subnet_index)
    gateway = gateway_ip(state.subnet_index)
    hosts = "\n        ".join(dhcp_host_xml(n) for n in sorted(state.nodes.values(), key=lambda n: n.index))
    forward = "\n  <forward mode='nat'/>" if state.egress == "nat" else ""
    # An isolated libvirt network tells dnsmasq to send no router (a bare "dhcp-option=3");
    # the router option given here is appended after it and is the one dnsmasq sends.
    router = (
        f"\n  <dnsmasq:options><dnsmasq:option value='dhcp-option=option:router,{gateway}'/></dnsmasq:options>"
        if state.egress == "none" else ""
    )
    return f"""<network xmlns:dnsmasq='{DNSMASQ_XMLNS}'>
  <name>{state.network}</name>
  <metadata><k0slab:lab xmlns:k0slab="https://k0slab.dev/xmlns/1">{state.name}</k0slab:lab></metadata>{forward}
  <bridge name='{state.bridge}' stp='off' delay='0'/>
  <domain name='{state.name}.k0slab' localOnly='yes'/>
  <ip address='{gateway}' netmask='255.255.255.0'>
    <dhcp>
      <range start='{prefix}.200' end='{prefix}.250'/>
        {hosts}
    </dhcp>
  </ip>{router}
</network>"""


def node_kernel_args(state: LabState) -> str:
    """Per-lab words for every node's kernel command line: the resolver (k0slab-identity writes
    /etc/resolv.conf from it) and, without egress, no time sync that could only time out."""
    words = [f"k0slab.nameserver={gateway_ip(state.subnet_index)}"]
    if state.egress == "none":
        words.append("systemd.mask=systemd-timesyncd.service")
    return " ".join(words)
