"""Virtual machines: node images, libvirt and Vagrant backends, networks, domains, SSH to guests."""
