"""Pinned sha256 sums of k0s release assets, shipped with k0slab (pins.json).

A download is checked against the release's own sha256sums.txt; when pins.json also lists the asset,
the two must agree, so a compromised mirror (or K0SLAB_K0S_RELEASES_URL pointing at one) cannot
change both the binary and its checksum file. The pins are only as good as their source: k0slab's
build host cannot reach GitHub, so the file ships without entries (marked unverified), and the lab
workflow's pin check, which can, prints the entries for its versions and fails on any disagreement.

    python -m k0slab.cluster.k0s.pins v1.31.1+k0s.0    # compare with the live release, print entries
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from k0slab.core.errors import K0slabError

PINS_FILE = Path(__file__).with_name("pins.json")


def load_pins(path: Path | None = None) -> dict[str, Any]:
    path = path or PINS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise K0slabError(f"k0s pins file {path} is unreadable ({exc})", "restore it from the k0slab repository") \
            from None
    if not isinstance(data.get("versions"), dict):
        raise K0slabError(f"k0s pins file {path} has no 'versions' mapping", "restore it from the k0slab repository")
    return data


def pinned_sha256(tag: str, asset: str, path: Path | None = None) -> str | None:
    """The sha256 k0slab pins for one asset of a release, or None when it pins none."""
    return load_pins(path)["versions"].get(tag, {}).get(asset)


def check_against_pins(tag: str, asset: str, listed: str, path: Path | None = None) -> None:
    """Refuse a release checksum that disagrees with k0slab's pin for the same asset."""
    pinned = pinned_sha256(tag, asset, path)
    if pinned is not None and pinned != listed:
        raise K0slabError(
            f"k0s {tag} {asset}: the release lists sha256 {listed}, k0slab pins {pinned}",
            "the download source may be compromised; check K0SLAB_K0S_RELEASES_URL, or pass --k0s-binary PATH",
        )


def main(argv: list[str]) -> int:
    """Compare the pins of each version with its live sha256sums.txt and print the entries it lists."""
    from k0slab.cluster.k0s import release

    failed = False
    for tag in argv:
        sums = release.release_sums(tag)
        for asset, listed in sorted(sums.items()):
            try:
                check_against_pins(tag, asset, listed)
            except K0slabError as error:
                print(f"MISMATCH {error}")
                failed = True
        print(json.dumps({tag: sums}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
