"""k0slab: multi-node k0s clusters on local libvirt/QEMU virtual machines."""

__version__ = "0.1.0"
