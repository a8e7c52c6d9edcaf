"""k0s release versions and the upgrade rules between them (k0s-facts §10).

k0s's version-skew policy (`docs/version-skew-policy.md`): upgrades go one minor at a time,
controllers first, workers after; downgrades are not supported ("restore from a backup taken
before the upgrade rather than running an older k0s binary against a newer cluster state").
"""
from __future__ import annotations

from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from k0slab.core.errors import K0slabError


def parse(tag: str) -> Version:
    """`v1.34.1+k0s.0` as a comparable version; `-rc.1` sorts before the release, `+k0s.1` after `+k0s.0`."""
    try:
        version = Version(tag.removeprefix("v"))
    except InvalidVersion:
        raise K0slabError(f"k0s version {tag!r} is not a k0s release version",
                          "a k0s version looks like v1.34.1+k0s.0") from None
    if not (version.local or "").startswith("k0s"):
        raise K0slabError(f"k0s version {tag!r} has no +k0s.N suffix", "a k0s version looks like v1.34.1+k0s.0")
    return version


def minor_of(tag: str) -> str:
    version = parse(tag)
    return f"v{version.major}.{version.minor}"


def older_than(tag: str, other: str) -> bool:
    """Whether tag is an older release than other; False when either is no release version (a dev build)."""
    try:
        return parse(tag) < parse(other)
    except K0slabError:
        return False


@dataclass(frozen=True)
class UpgradePath:
    target: str
    newest_seen: str  # the newest version on any node's disk or running: the baseline going forward
    oldest_seen: str  # the oldest: the minor the skew rule counts from
    downgrade: bool


def check_path(target: str, seen: list[str], *, force: bool) -> UpgradePath:
    """Refuse a downgrade (unless forced) and any step of more than one minor version.

    `seen` holds every version on any node, on disk and running: once a newer binary has run,
    going back below it is a downgrade, even if the upgrade stopped half-way."""
    goal = parse(target)
    if not seen:
        raise K0slabError("no node of the lab reports a k0s version", "check the nodes with invoke lab.status")
    known = sorted(seen, key=parse)
    oldest, newest = known[0], known[-1]
    low = parse(oldest)
    if goal.major != low.major:
        raise K0slabError(f"k0s {target} is another major version than the lab's {oldest}",
                          "k0s upgrades stay within one major version (docs/version-skew-policy.md)")
    if goal.minor > low.minor + 1:
        step = f"v{low.major}.{low.minor + 1}"
        raise K0slabError(
            f"k0s {target} skips minor versions: the lab runs {oldest}",
            f"upgrade one minor at a time (k0s docs/version-skew-policy.md): first to the latest {step}.x",
        )
    downgrade = goal < parse(newest)
    if downgrade and not force:
        raise K0slabError(
            f"k0s {target} is older than {newest}, which already ran in the lab: k0s does not support downgrades",
            "restore a backup taken before the upgrade (invoke lab.restore), or pass --force to try anyway",
        )
    return UpgradePath(target=target, newest_seen=newest, oldest_seen=oldest, downgrade=downgrade)
