"""Service management (contract §2: install / start / stop / status / reset)."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

from .common import (
    BINARY_PATH,
    DATA_DIR,
    HOST_MODE,
    HOST_MODE_LOG,
    RUN_DIR,
    UNIT_DIR,
    CliError,
    host_path,
    read_text,
    with_ignored_oserror,
    write_file,
)
from .config import load_config
from .flags import no_positionals, parse_flags, require_root
from .node import parse_labels
from .status import read_status
from .yamlsubset import yaml_dump


UNIT_TEMPLATE = """[Unit]
Description=k0s - Zero Friction Kubernetes
Documentation=https://docs.k0sproject.io
ConditionFileIsExecutable={binary}

After=network-online.target
Wants=network-online.target

[Service]
StartLimitInterval=5
StartLimitBurst=10
ExecStart={exec_start}

RestartSec=10
Delegate=yes
KillMode=process
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
LimitNOFILE=999999
Restart=always

[Install]
WantedBy=multi-user.target
"""
UNITS = ("k0scontroller", "k0sworker")
CONTROLLER_FLAGS = {"enable-worker": "bool", "no-taints": "bool", "single": "bool", "config": "str",
                    "kubelet-extra-args": "str", "labels": "str", "token-file": "str", "data-dir": "str",
                    "force": "bool", "debug": "bool", "verbose": "bool"}
WORKER_FLAGS = {"token-file": "str", "kubelet-extra-args": "str", "labels": "str", "data-dir": "str",
                "force": "bool", "debug": "bool", "verbose": "bool"}
PATH_FLAGS = ("config", "token-file", "data-dir")


def systemd_escape(word: str) -> str:
    return word.replace("\\", "\\\\").replace(" ", "\\x20")


def systemd_unescape(word: str) -> str:
    return re.sub(r"\\(x20|\\)", lambda m: " " if m.group(1) == "x20" else "\\", word)


def unit_path(unit: str) -> str:
    return f"{UNIT_DIR}/{unit}.service"


def installed_unit() -> str:
    for unit in UNITS:
        if os.path.exists(host_path(unit_path(unit))):
            return unit
    raise CliError("k0s has not been installed as a service")


def exec_start_args(unit: str) -> list[str]:
    for line in read_text(unit_path(unit)).splitlines():
        if line.startswith("ExecStart="):
            return [systemd_unescape(word) for word in line[len("ExecStart="):].split()]
    raise CliError(f"{unit_path(unit)} has no ExecStart line")


def pid_file(unit: str) -> str:
    return host_path(f"{RUN_DIR}/{unit}.pid")


def host_mode_pid(unit: str) -> int | None:
    """PID of the host-mode service process, if it is alive (zombies count as dead)."""
    try:
        with open(pid_file(unit), encoding="utf-8") as handle:
            pid = int(handle.read().strip())
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return None if state in ("Z", "X") else pid


def service_running(unit: str) -> bool:
    if HOST_MODE:
        return host_mode_pid(unit) is not None
    state = subprocess.run(["systemctl", "is-active", f"{unit}.service"], capture_output=True, text=True,
                           check=False).stdout.strip()
    return state in ("active", "activating", "reloading")


def systemctl(*args: str) -> None:
    result = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CliError(f"systemctl {' '.join(args)} failed: {result.stderr.strip() or result.returncode}")


def info(message: str) -> None:
    print(f"INFO {message}", file=sys.stderr, flush=True)


def cmd_install(args: list[str]) -> None:
    if not args or args[0] not in ("controller", "server", "worker"):
        raise CliError(f'unknown command "{args[0] if args else ""}" for "k0s install"')
    role = "worker" if args[0] == "worker" else "controller"
    spec = CONTROLLER_FLAGS if role == "controller" else WORKER_FLAGS
    opts, positionals = parse_flags(args[1:], spec, {"c": "config"} if role == "controller" else {})
    no_positionals(positionals, f"k0s install {args[0]}")
    require_root()
    if role == "controller":
        load_config(opts.get("config"))
    elif not opts.get("token-file"):
        raise CliError('required flag(s) "token-file" not set')
    parse_labels(opts.get("labels", ""))
    try:
        shlex.split(opts.get("kubelet-extra-args", ""))
    except ValueError as exc:
        raise CliError(f"invalid --kubelet-extra-args: {exc}") from exc
    words = [BINARY_PATH, role]
    for name in sorted(opts):
        if name in ("force", "debug", "verbose"):
            continue
        value = opts[name]
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif name in PATH_FLAGS:
            value = os.path.abspath(value)
        words.append(systemd_escape(f"--{name}={value}"))
    unit = f"k0s{role}"
    path = unit_path(unit)
    if opts.get("force") and os.path.exists(host_path(path)):
        info(f"Uninstalling {unit} service")
        os.unlink(host_path(path))
    if os.path.exists(host_path(path)):
        raise CliError(f"failed to install {role} service: Init already exists: {path}")
    info(f"Installing {unit} service")
    write_file(path, UNIT_TEMPLATE.format(binary=BINARY_PATH, exec_start=" ".join(words)), 0o644)
    if not HOST_MODE:
        systemctl("daemon-reload")
        systemctl("enable", f"{unit}.service")


def cmd_start(args: list[str]) -> None:
    no_positionals(parse_flags(args, {"debug": "bool", "verbose": "bool"})[1], "k0s start")
    require_root()
    unit = installed_unit()
    if service_running(unit):
        raise CliError("already running")
    if not HOST_MODE:
        systemctl("start", f"{unit}.service")
        return
    # argv[0] is the zipapp (or `python -m k0s_standin`'s __main__.py): the same program the unit names.
    command = [sys.executable, os.path.abspath(sys.argv[0]), *exec_start_args(unit)[1:]]
    os.makedirs(host_path(RUN_DIR), exist_ok=True)
    os.makedirs(os.path.dirname(host_path(HOST_MODE_LOG)), exist_ok=True)
    with open(host_path(HOST_MODE_LOG), "ab") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True, close_fds=True)
    with open(pid_file(unit), "w", encoding="utf-8") as handle:
        handle.write(f"{process.pid}\n")


def cmd_stop(args: list[str]) -> None:
    no_positionals(parse_flags(args, {"debug": "bool", "verbose": "bool"})[1], "k0s stop")
    require_root()
    unit = installed_unit()
    if not service_running(unit):
        raise CliError("already stopped")
    if not HOST_MODE:
        systemctl("stop", f"{unit}.service")
        return
    pid = host_mode_pid(unit)
    with_ignored_oserror(os.killpg, pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while host_mode_pid(unit) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if host_mode_pid(unit) is not None:
        with_ignored_oserror(os.killpg, pid, signal.SIGKILL)
    with_ignored_oserror(os.unlink, pid_file(unit))


def running_status() -> dict:
    status = read_status()
    if status is None:
        raise CliError("k0s is not running")
    return status


def cmd_status(args: list[str]) -> None:
    opts, positionals = parse_flags(args, {"out": "str", "status-socket": "str", "debug": "bool",
                                           "verbose": "bool"}, {"o": "out"})
    no_positionals(positionals, "k0s status")
    status = running_status()
    output = opts.get("out", "")
    if output == "json":
        print(json.dumps(status, indent=3))
    elif output == "yaml":
        print(yaml_dump(status))
    else:
        lines = [f"Version: {status['Version']}", f"Process ID: {status['Pid']}", f"Role: {status['Role']}",
                 f"Workloads: {str(status['Workloads']).lower()}",
                 f"SingleNode: {str(status['SingleNode']).lower()}"]
        if status["Workloads"]:
            probe = status["WorkerToAPIConnectionStatus"]
            lines.append(f"Kube-api probing successful: {str(probe['Success']).lower()}")
            lines.append(f"Kube-api probing last error:  {probe['Message']}")
        lines += [f"Init System: {status['SysInit']}", f"Service file: {status['StubFile']}"]
        print("\n".join(lines))


def cmd_reset(args: list[str]) -> None:
    no_positionals(parse_flags(args, {"config": "str", "debug": "bool", "verbose": "bool", "data-dir": "str",
                                      "cri-socket": "str", "kubelet-root-dir": "str"}, {"c": "config"})[1],
                   "k0s reset")
    require_root()
    units = [unit for unit in UNITS if os.path.exists(host_path(unit_path(unit)))]
    if read_status() is not None or any(service_running(unit) for unit in units):
        raise CliError("another k0s process is still running, please stop k0s before reset")
    for unit in units:
        if not HOST_MODE:
            subprocess.run(["systemctl", "disable", f"{unit}.service"], capture_output=True, check=False)
        os.unlink(host_path(unit_path(unit)))
        info(f"Uninstalling {unit} service")
    if units and not HOST_MODE:
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True, check=False)
    for directory in (DATA_DIR, RUN_DIR):
        shutil.rmtree(host_path(directory), ignore_errors=True)
    print("WARN k0s cleanup operations done.", file=sys.stderr)
    print("WARN To ensure a full reset, a node reboot is recommended.", file=sys.stderr)


