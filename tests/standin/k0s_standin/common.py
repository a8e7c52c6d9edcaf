"""Paths, environment, time and file helpers, Go durations and the fault knobs shared by every part."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import tempfile

from .yamlsubset import YamlError, yaml_load


try:  # a binary made by make-version carries its version in _release.py
    from ._release import RELEASE
except ImportError:
    RELEASE = "v1.31.1+k0s.0"
VERSION = os.environ.get("K0S_STANDIN_VERSION", RELEASE)
ROOT = os.environ.get("K0S_STANDIN_ROOT", "")
HOST_MODE = bool(ROOT)

BINARY_PATH = "/usr/local/bin/k0s"
CONFIG_PATH = "/etc/k0s/k0s.yaml"
DATA_DIR = "/var/lib/k0s"
PKI_DIR = DATA_DIR + "/pki"
MANIFESTS_DIR = DATA_DIR + "/manifests"
STATE_FILE = DATA_DIR + "/standin/state.json"
KUBELET_CONF = DATA_DIR + "/kubelet.conf"
RUN_DIR = "/run/k0s"
STATUS_SOCKET = RUN_DIR + "/status.sock"
KNOB_FILE = "/etc/k0s-standin.yaml"
UNIT_DIR = "/etc/systemd/system"
HOST_MODE_LOG = "/var/log/k0s.log"

BOOTSTRAP_TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
BOOTSTRAP_SECRET_TYPE = "bootstrap.kubernetes.io/token"
CONTAINER_RUNTIME = "containerd://1.7.22"


class CliError(Exception):
    """A failure printed cobra-style as `Error: <msg>` with exit status 1."""


def host_path(path: str) -> str:
    """The real location of an absolute contract path (prefixed by K0S_STANDIN_ROOT in host tests)."""
    return ROOT + path if path.startswith("/") else path


def kube_version() -> str:
    """The Kubernetes version inside the k0s version: v1.31.1+k0s.0 -> v1.31.1+k0s."""
    base, plus, _ = VERSION.partition("+")
    return base + "+k0s" if plus else base


def version_at_least(major: int, minor: int) -> bool:
    """Whether the version the stand-in reports is vMAJOR.MINOR or newer (for behaviour that changed)."""
    found = re.match(r"v(\d+)\.(\d+)", VERSION)
    return bool(found) and (int(found.group(1)), int(found.group(2))) >= (major, minor)


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def log(component: str, level: str, message: str) -> None:
    """logrus-style line on stdout, which systemd sends to the journal."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    print(f'time="{stamp}" level={level} msg={json.dumps(message)} component={component}', flush=True)


def write_file(path: str, data: str | bytes, mode: int = 0o644) -> None:
    """Atomic write with the final mode set before the file becomes visible."""
    real = host_path(path)
    os.makedirs(os.path.dirname(real), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(real), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, real)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_text(path: str) -> str:
    with open(host_path(path), encoding="utf-8") as handle:
        return handle.read()


# ---------------------------------------------------------------------------------------------------
# Go durations (`10m`, `8760h`, `1h30m`) as k0s flags take them
# ---------------------------------------------------------------------------------------------------

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    if text in ("0", "+0", "-0"):
        return 0.0
    parts = re.findall(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(number + unit for number, unit in parts) != text.lstrip("+"):
        raise CliError(f'time: invalid duration "{text}"')
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


# ---------------------------------------------------------------------------------------------------
# Knobs
# ---------------------------------------------------------------------------------------------------

KNOB_DEFAULTS = {"ready_delay_seconds": 3.0, "refuse_first_joins": 0, "crash_at_start": False,
                 "stop_heartbeats": False, "node_grace_seconds": 40.0, "heartbeat_seconds": 10.0,
                 "retry_delay_scale": 1.0}


def knob(name: str):
    """Current value of a fault knob; the file is re-read every time so tests can flip knobs live."""
    try:
        values = yaml_load(read_text(KNOB_FILE)) or {}
    except (OSError, YamlError):
        values = {}
    value = values.get(name, KNOB_DEFAULTS[name]) if isinstance(values, dict) else KNOB_DEFAULTS[name]
    return type(KNOB_DEFAULTS[name])(value)


def crash_if_asked(component: str) -> None:
    if knob("crash_at_start"):
        log(component, "error", f"crash_at_start is set in {KNOB_FILE}: exiting with status 1")
        sys.exit(1)


def with_ignored_oserror(func, *args):
    try:
        func(*args)
    except OSError:
        pass
