"""Checksum files as publishers write them, shared by image pulls and k0s downloads."""
from __future__ import annotations

import hashlib
from pathlib import Path


def checksum_for(sums_text: str, file_name: str) -> str | None:
    """Both `sha256sum` lines (`<hex> [*]name`) and BSD-style `SHA256 (name) = <hex>` lines."""
    for line in sums_text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == file_name:
            return parts[0].lower()
        if len(parts) == 4 and parts[1] == f"({file_name})" and parts[2] == "=":
            return parts[3].lower()
    return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
