"""The lab's admin access merged into the user's kubeconfig, the way kind and k3d do it.

`lab.kubeconfig --merge` adds a cluster, a user and a context, all named `k0slab-<lab>`, to the file
kubectl writes to: the first file of $KUBECONFIG when it is set, else ~/.kube/config (kubectl's
rule for where `kubectl config set-*` writes). Only those three entries change, and
`current-context` only when the file has none yet. `lab.down` removes the entries again.

Each edit is atomic (a temporary file in the same folder, then rename) and holds kubectl's own
lock file (`<file>.lock`, created exclusively, as client-go's clientcmd does), so a concurrent
`kubectl config` neither interleaves with it nor sees half a file.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from k0slab.core import cancel
from k0slab.core.errors import K0slabError

LOCK_WAIT_S = 10.0
LOCK_POLL_S = 0.1
SECTIONS = ("clusters", "users", "contexts")


def entry_name(lab: str) -> str:
    return f"k0slab-{lab}"


def target_file(environ: dict[str, str] | None = None) -> Path:
    """The file kubectl edits: the first non-empty entry of KUBECONFIG, else ~/.kube/config."""
    environ = os.environ if environ is None else environ
    listed = [part for part in environ.get("KUBECONFIG", "").split(os.pathsep) if part]
    return Path(listed[0]).expanduser() if listed else Path.home() / ".kube" / "config"


def merge(lab: str, lab_kubeconfig: Path, target: Path | None = None) -> Path:
    """Add (or replace) the lab's cluster, user and context in the target file; returns the file."""
    target = target or target_file()
    source = _load(lab_kubeconfig)
    name = entry_name(lab)
    try:
        cluster = source["clusters"][0]["cluster"]
        user = source["users"][0]["user"]
    except (KeyError, IndexError, TypeError):
        raise K0slabError(f"{lab_kubeconfig} has no cluster or user",
                          f"fetch it again: invoke lab.up --lab {lab}") from None
    with _locked(target):
        config = _load(target) if target.exists() else {}
        _drop(config, name)
        config.setdefault("apiVersion", "v1")
        config.setdefault("kind", "Config")
        config.setdefault("preferences", {})
        config.setdefault("clusters", []).append({"name": name, "cluster": cluster})
        config.setdefault("users", []).append({"name": name, "user": user})
        config.setdefault("contexts", []).append({"name": name, "context": {"cluster": name, "user": name}})
        if not config.get("current-context"):
            config["current-context"] = name
        _write_atomically(target, config)
    return target


def remove(lab: str, target: Path | None = None) -> Path | None:
    """Remove the lab's entries; returns the file when it held any, None when there was nothing to do."""
    target = target or target_file()
    if not target.exists():
        return None
    name = entry_name(lab)
    with _locked(target):
        config = _load(target)
        if not _drop(config, name):
            return None
        if config.get("current-context") == name:
            config["current-context"] = ""
        _write_atomically(target, config)
    return target


def forget(lab: str, progress: Callable[[str], None]) -> None:
    """lab.down's hook: remove the lab's entries from the user's kubeconfig, saying so when there were any."""
    removed = remove(lab)
    if removed:
        progress(f"removed context {entry_name(lab)} from {removed}")


def _drop(config: dict[str, Any], name: str) -> bool:
    found = False
    for section in SECTIONS:
        entries = config.get(section) or []
        kept = [entry for entry in entries if not (isinstance(entry, dict) and entry.get("name") == name)]
        found = found or len(kept) != len(entries)
        if section in config:
            config[section] = kept
    return found


def _load(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise K0slabError(f"kubeconfig {path} is not valid YAML: {str(exc).splitlines()[0]}",
                          "fix or move the file, then run the command again") from None
    if not isinstance(data, dict):
        raise K0slabError(f"kubeconfig {path} is not a kubeconfig (no mapping at the top)",
                          "fix or move the file, then run the command again")
    return data


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = target.with_name(target.name + ".lock")
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise K0slabError(f"{lock} has been held for {LOCK_WAIT_S:g}s",
                                  "if no kubectl is editing the kubeconfig, delete the lock file") from None
            cancel.sleep(LOCK_POLL_S)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _write_atomically(target: Path, config: dict[str, Any]) -> None:
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o600
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            yaml.safe_dump(config, out, default_flow_style=False, sort_keys=False)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
