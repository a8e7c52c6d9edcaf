"""The images a k0s release needs (`k0s airgap list-images`) and the airgap bundles that provide them.

Image names and tags are k0s's `pkg/constant/constant.go` at the release tag named in IMAGE_TABLES; the list
and its order are `pkg/airgap/images.go` `GetImageURIs` of v1.30-v1.34: every CNI's images whatever the
provider, pushgateway only with `--all` from v1.33, envoy only when node-local load balancing is on (or
with `--all`). The kube-proxy tag is the Kubernetes version of the release itself. Minors without a table
are refused rather than guessed.
"""
from __future__ import annotations

import json
import os
import re
import tarfile

from .common import DATA_DIR, VERSION, CliError, host_path

IMAGES_DIR = DATA_DIR + "/images"

# From k0s pkg/constant/constant.go at the tag in the key's comment (names, then tags).
IMAGE_TABLES: dict[str, dict[str, str]] = {
    "1.30": {  # v1.30.14+k0s.0
        "calico-cni": "quay.io/k0sproject/calico-cni:v3.27.5-0",
        "calico-kube-controllers": "quay.io/k0sproject/calico-kube-controllers:v3.27.5-0",
        "calico-node": "quay.io/k0sproject/calico-node:v3.27.5-0",
        "coredns": "quay.io/k0sproject/coredns:1.11.4",
        "konnectivity-agent": "quay.io/k0sproject/apiserver-network-proxy-agent:v0.30.3",
        "kube-router": "quay.io/k0sproject/kube-router:v2.1.0-iptables1.8.9-0",
        "cni-node": "quay.io/k0sproject/cni-node:1.3.0-k0s.0",
        "metrics-server": "registry.k8s.io/metrics-server/metrics-server:v0.7.2",
        "pause": "registry.k8s.io/pause:3.9",
        "pushgateway": "quay.io/k0sproject/pushgateway-ttl:1.4.0-k0s.0",
        "envoy": "quay.io/k0sproject/envoy-distroless:v1.30.9",
    },
    "1.31": {  # v1.31.1+k0s.0
        "calico-cni": "quay.io/k0sproject/calico-cni:v3.28.1-0",
        "calico-kube-controllers": "quay.io/k0sproject/calico-kube-controllers:v3.28.1-0",
        "calico-node": "quay.io/k0sproject/calico-node:v3.28.1-0",
        "coredns": "quay.io/k0sproject/coredns:1.11.3",
        "konnectivity-agent": "quay.io/k0sproject/apiserver-network-proxy-agent:v0.30.3",
        "kube-router": "quay.io/k0sproject/kube-router:v2.2.1-iptables1.8.9-0",
        "cni-node": "quay.io/k0sproject/cni-node:1.3.0-k0s.0",
        "metrics-server": "registry.k8s.io/metrics-server/metrics-server:v0.7.2",
        "pause": "registry.k8s.io/pause:3.9",
        "pushgateway": "quay.io/k0sproject/pushgateway-ttl:1.4.0-k0s.0",
        "envoy": "quay.io/k0sproject/envoy-distroless:v1.31.1",
    },
    "1.32": {  # v1.32.13+k0s.0
        "calico-cni": "quay.io/k0sproject/calico-cni:v3.29.7-0",
        "calico-kube-controllers": "quay.io/k0sproject/calico-kube-controllers:v3.29.7-0",
        "calico-node": "quay.io/k0sproject/calico-node:v3.29.7-0",
        "coredns": "quay.io/k0sproject/coredns:1.12.4",
        "konnectivity-agent": "quay.io/k0sproject/apiserver-network-proxy-agent:v0.31.0",
        "kube-router": "quay.io/k0sproject/kube-router:v2.4.1-iptables1.8.9-0",
        "cni-node": "quay.io/k0sproject/cni-node:1.3.0-k0s.0",
        "metrics-server": "registry.k8s.io/metrics-server/metrics-server:v0.7.2",
        "pause": "registry.k8s.io/pause:3.9",
        "pushgateway": "quay.io/k0sproject/pushgateway-ttl:1.4.0-k0s.0",
        "envoy": "quay.io/k0sproject/envoy-distroless:v1.31.10",
    },
    "1.33": {  # v1.33.13+k0s.0
        "calico-cni": "quay.io/k0sproject/calico-cni:v3.29.7-0",
        "calico-kube-controllers": "quay.io/k0sproject/calico-kube-controllers:v3.29.7-0",
        "calico-node": "quay.io/k0sproject/calico-node:v3.29.7-0",
        "coredns": "quay.io/k0sproject/coredns:1.12.4",
        "konnectivity-agent": "quay.io/k0sproject/apiserver-network-proxy-agent:v0.32.0",
        "kube-router": "quay.io/k0sproject/kube-router:v2.5.0-iptables1.8.11-0",
        "cni-node": "quay.io/k0sproject/cni-node:1.7.1-k0s.0",
        "metrics-server": "quay.io/k0sproject/metrics-server:v0.7.2-1",
        "pause": "quay.io/k0sproject/pause:3.10.1",
        "pushgateway": "quay.io/k0sproject/pushgateway-ttl:1.4.0-k0s.0",
        "envoy": "quay.io/k0sproject/envoy-distroless:v1.32.8",
    },
    "1.34": {  # v1.34.1+k0s.0
        "calico-cni": "quay.io/k0sproject/calico-cni:v3.29.6-0",
        "calico-kube-controllers": "quay.io/k0sproject/calico-kube-controllers:v3.29.6-0",
        "calico-node": "quay.io/k0sproject/calico-node:v3.29.6-0",
        "coredns": "quay.io/k0sproject/coredns:1.13.1",
        "konnectivity-agent": "quay.io/k0sproject/apiserver-network-proxy-agent:v0.33.0",
        "kube-router": "quay.io/k0sproject/kube-router:v2.6.1-iptables1.8.11-0",
        "cni-node": "quay.io/k0sproject/cni-node:1.8.0-k0s.0",
        "metrics-server": "quay.io/k0sproject/metrics-server:v0.7.2-0",
        "pause": "quay.io/k0sproject/pause:3.10.1",
        "pushgateway": "quay.io/k0sproject/pushgateway-ttl:1.4.0-k0s.0",
        "envoy": "quay.io/k0sproject/envoy-distroless:v1.34.3",
    },
}
LISTED = ("calico-cni", "calico-kube-controllers", "calico-node", "coredns", "konnectivity-agent", "kube-proxy",
          "kube-router", "cni-node", "metrics-server", "pause")


def minor() -> str:
    return ".".join(VERSION.lstrip("v").split(".")[:2])


def release_images() -> dict[str, str]:
    """Component -> image reference for the version the stand-in reports."""
    table = IMAGE_TABLES.get(minor())
    if table is None:
        raise CliError(f"the k0s stand-in has no image list for {VERSION}: it knows v{', v'.join(IMAGE_TABLES)}; "
                       "add that release's pkg/constant/constant.go images to tests/standin/k0s_standin/images.py")
    kube_proxy = "quay.io/k0sproject/kube-proxy:" + VERSION.partition("+")[0]
    return {**table, "kube-proxy": kube_proxy}


def list_images(config: dict, include_all: bool) -> list[str]:
    images = release_images()
    uris = [images[name] for name in LISTED]
    if include_all and tuple(int(part) for part in minor().split(".")) >= (1, 33):
        uris.append(images["pushgateway"])
    nllb = (config.get("spec", {}).get("network") or {}).get("nodeLocalLoadBalancing") or {}
    if include_all or nllb.get("enabled"):
        uris.append(images["envoy"])
    return uris


def normalize(reference: str) -> str:
    """containerd's full name: busybox:1.36 -> docker.io/library/busybox:1.36 (tag latest when none)."""
    name = reference.strip()
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = "docker.io/" + (name if rest else "library/" + name)
    if "@" not in name and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def archive_images(path: str) -> set[str]:
    """The image names in one archive, as containerd's import takes them: an OCI image layout
    (`index.json` manifests annotated io.containerd.image.name or org.opencontainers.image.ref.name) or a
    `docker save` archive (`manifest.json` RepoTags). Anything else holds no images."""
    names: set[str] = set()
    try:
        with tarfile.open(path) as archive:
            members = {member.name.lstrip("./"): member for member in archive.getmembers()}
            if "index.json" in members:
                index = json.load(archive.extractfile(members["index.json"]))
                for manifest in index.get("manifests", []):
                    annotations = manifest.get("annotations") or {}
                    name = annotations.get("io.containerd.image.name") or annotations.get(
                        "org.opencontainers.image.ref.name")
                    # A bare ref.name is only a tag (OCI spec); containerd needs the full name then.
                    if name and re.search(r"[/:]", name):
                        names.add(normalize(name))
            if "manifest.json" in members:
                for entry in json.load(archive.extractfile(members["manifest.json"])):
                    names.update(normalize(tag) for tag in entry.get("RepoTags") or [])
    except (OSError, tarfile.TarError, ValueError, AttributeError):
        return set()
    return names


def bundled_images() -> set[str]:
    """Every image of every file in /var/lib/k0s/images/, which k0s imports into containerd at start."""
    folder = host_path(IMAGES_DIR)
    if not os.path.isdir(folder):
        return set()
    found: set[str] = set()
    for entry in sorted(os.listdir(folder)):
        if os.path.isfile(os.path.join(folder, entry)):
            found |= archive_images(os.path.join(folder, entry))
    return found
