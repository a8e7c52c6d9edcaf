"""`k0s backup` and `k0s restore` (contract §10; k0s cmd/backup/backup_unix.go, cmd/restore/restore_unix.go,
pkg/backup/, docs/backup.md).

The archive is `k0s_backup_<2006-01-02T15_04_05_000Z>.tar.gz` with, at its top, `pki/`, `manifests/`,
`images/` (copies of those folders of the data dir), `k0s.yaml` (the config file the controller runs with)
and `etcd-snapshot.db`. The stand-in has no etcd: its snapshot is the controller's object store (the
stand-in's own JSON, not an etcd database), so a restored controller starts with the saved objects.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import tarfile
import tempfile

from .common import CONFIG_PATH, DATA_DIR, MANIFESTS_DIR, PKI_DIR, STATE_FILE, CliError, host_path
from .flags import no_positionals, parse_flags, require_root
from .images import IMAGES_DIR
from .status import read_status

ETCD_SNAPSHOT = "etcd-snapshot.db"
TIMESTAMP_LAYOUT = "%Y-%m-%dT%H_%M_%S_000Z"  # Go's "2006-01-02T15_04_05_000Z"
FOLDERS = (PKI_DIR, MANIFESTS_DIR, IMAGES_DIR)


def config_in_use(args: list[str]) -> str:
    """The -c/--config the running controller was started with, else the default path."""
    for index, word in enumerate(args):
        if word.startswith("--config="):
            return word.split("=", 1)[1]
        if word in ("-c", "--config") and index + 1 < len(args):
            return args[index + 1]
    return CONFIG_PATH


def cmd_backup(args: list[str]) -> None:
    opts, positionals = parse_flags(args, {"save-path": "str", "debug": "bool"})
    no_positionals(positionals, "k0s backup")
    save_path = opts.get("save-path") or os.getcwd()
    if not os.path.isdir(host_path(save_path)):
        raise CliError(f"the save-path directory ({save_path}) does not exist")
    if not os.path.isdir(host_path(DATA_DIR)):
        raise CliError(f"cannot find data-dir ({DATA_DIR}). check your environment and/or command input and try again")
    status = read_status()
    if status is None:
        raise CliError("unable to detect cluster status: k0s is not running")
    if "controller" not in status["Role"]:
        raise CliError(f"backup command must be run on the controller node, have `{status['Role']}`")
    name = f"k0s_backup_{dt.datetime.now(dt.UTC).strftime(TIMESTAMP_LAYOUT)}.tar.gz"
    target = os.path.join(host_path(save_path), name)
    partial = target + ".partial"
    with tarfile.open(partial, "w:gz") as archive:
        for folder in FOLDERS:
            if os.path.isdir(host_path(folder)):
                archive.add(host_path(folder), arcname=os.path.basename(folder))
        config = config_in_use(status.get("Args") or [])
        if os.path.isfile(host_path(config)):
            archive.add(host_path(config), arcname="k0s.yaml")
        if os.path.isfile(host_path(STATE_FILE)):
            archive.add(host_path(STATE_FILE), arcname=ETCD_SNAPSHOT)
    os.replace(partial, target)
    print(f"Done! Backup saved to {os.path.join(save_path, name)}")


def safe_extract(archive: tarfile.TarFile, target: str) -> None:
    """Only regular files and folders inside TARGET (tarfile's "data" filter is missing from older 3.11s)."""
    for member in archive.getmembers():
        if os.path.isabs(member.name) or ".." in member.name.split("/") or not (member.isfile() or member.isdir()):
            raise tarfile.TarError(f"unsafe member {member.name!r}")
    archive.extractall(target)


def cmd_restore(args: list[str]) -> None:
    opts, positionals = parse_flags(args, {"config-out": "str", "debug": "bool"})
    if len(positionals) != 1:
        raise CliError(f"accepts 1 arg(s), received {len(positionals)}")
    require_root()
    if read_status() is not None:
        raise CliError("k0s seems to be running! k0s must be down during the restore operation.")
    archive_path = positionals[0]
    if not os.path.isfile(host_path(archive_path)):
        raise CliError(f"given file {archive_path} does not exist")
    # docs/backup.md: restoring fails when the data dir already holds what the archive brings.
    overlapping = [folder for folder in FOLDERS if os.path.isdir(host_path(folder)) and os.listdir(host_path(folder))]
    if overlapping:
        raise CliError(f"failed to restore on step `{os.path.basename(overlapping[0])}`: {overlapping[0]} already "
                       f"exists and is not empty; restore onto a node where k0s never ran, or `k0s reset` first")
    stamp = os.path.basename(archive_path).split(".", 1)[0].removeprefix("k0s_backup_")
    config_out = opts.get("config-out") or f"k0s_{stamp}.yaml"
    with tempfile.TemporaryDirectory() as unpacked:
        try:
            with tarfile.open(host_path(archive_path)) as archive:
                safe_extract(archive, unpacked)
        except (tarfile.TarError, OSError) as exc:
            raise CliError(f"failed to unpack backup archive `{archive_path}`: {exc}") from exc
        if not os.path.isfile(os.path.join(unpacked, "k0s.yaml")):
            raise CliError("failed to parse backed-up configuration file, check the backup archive: k0s.yaml missing")
        os.makedirs(host_path(DATA_DIR), exist_ok=True)
        for folder in FOLDERS:
            source = os.path.join(unpacked, os.path.basename(folder))
            if os.path.isdir(source):
                shutil.copytree(source, host_path(folder), dirs_exist_ok=True)
        if os.path.isfile(os.path.join(unpacked, ETCD_SNAPSHOT)):
            os.makedirs(os.path.dirname(host_path(STATE_FILE)), exist_ok=True)
            shutil.copyfile(os.path.join(unpacked, ETCD_SNAPSHOT), host_path(STATE_FILE))
        try:
            shutil.copyfile(os.path.join(unpacked, "k0s.yaml"), host_path(config_out))
        except OSError as exc:  # pkg/backup/config_unix.go: the folder must exist
            raise CliError(f"failed to restore on step `k0s.yaml`: couldn't get a file handle for {config_out}") \
                from exc
    print(f"Restored the cluster state; the archived k0s.yaml is in {config_out}")
