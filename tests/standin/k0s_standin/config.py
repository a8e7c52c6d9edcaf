"""The ClusterConfig (contract §5): strict schema, defaults, validation."""
from __future__ import annotations

import copy
import ipaddress
import os
import re
import subprocess
import sys

from .common import CONFIG_PATH, CliError, host_path, read_text
from .yamlsubset import YamlError, yaml_load_all


ANY = "any"          # opaque subtree: accepted as is
STR, INT, BOOL = "string", "int", "bool"
STR_LIST, STR_MAP = "[]string", "map[string]string"

_IMAGE = {"image": STR, "version": STR}
CONFIG_SCHEMA = {
    "apiVersion": STR,
    "kind": STR,
    "metadata": {"name": STR, "namespace": STR, "labels": STR_MAP, "annotations": STR_MAP,
                 "creationTimestamp": ANY, "uid": STR, "resourceVersion": STR, "generation": INT},
    "spec": {
        "api": {"address": STR, "onlyBindToAddress": BOOL, "externalAddress": STR, "extraArgs": STR_MAP,
                "rawArgs": STR_LIST, "k0sApiPort": INT, "port": INT, "sans": STR_LIST,
                "ca": {"expiresAfter": STR, "certificatesExpireAfter": STR}},
        "controllerManager": {"extraArgs": STR_MAP, "rawArgs": STR_LIST},
        "scheduler": {"extraArgs": STR_MAP, "rawArgs": STR_LIST},
        "storage": {"type": STR, "etcd": ANY, "kine": {"dataSource": STR, "extraArgs": STR_MAP,
                                                      "rawArgs": STR_LIST}},
        "network": {"provider": STR, "podCIDR": STR, "serviceCIDR": STR, "clusterDomain": STR,
                    "primaryAddressFamily": STR, "calico": ANY, "kuberouter": ANY, "kubeProxy": ANY,
                    "coreDNS": ANY, "nodeLocalLoadBalancing": ANY, "controlPlaneLoadBalancing": ANY,
                    "dualStack": {"enabled": BOOL, "IPv6podCIDR": STR, "IPv6serviceCIDR": STR}},
        "workerProfiles": ANY,
        "telemetry": {"enabled": BOOL},
        "installConfig": {"users": {"etcdUser": STR, "kineUser": STR, "konnectivityUser": STR,
                                    "kubeAPIserverUser": STR, "kubeSchedulerUser": STR}},
        "images": {"konnectivity": _IMAGE, "pushgateway": _IMAGE, "metricsserver": _IMAGE,
                   "kubeproxy": _IMAGE, "coredns": _IMAGE, "pause": _IMAGE, "windows": ANY, "calico": ANY,
                   "kuberouter": ANY, "repository": STR, "default_pull_policy": STR},
        "extensions": ANY,
        "konnectivity": {"adminPort": INT, "agentPort": INT, "externalAddress": STR},
        "featureGates": ANY,
        "metricsServer": ANY,
    },
}
CONFIG_API_VERSION = "k0s.k0sproject.io/v1beta1"


def first_ipv4() -> str:
    """First non-loopback IPv4 of this machine, what k0s uses for spec.api.address by default."""
    try:
        listing = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                                 timeout=5, check=False).stdout
    except OSError:
        listing = ""
    for match in re.finditer(r"\sinet\s+([0-9.]+)/", listing):
        if not match.group(1).startswith("127."):
            return match.group(1)
    return "127.0.0.1"


def default_config() -> dict:
    address = first_ipv4()
    return {
        "apiVersion": CONFIG_API_VERSION,
        "kind": "ClusterConfig",
        "metadata": {"name": "k0s", "namespace": "kube-system"},
        "spec": {
            "api": {"address": address, "ca": {"certificatesExpireAfter": "8760h0m0s",
                                               "expiresAfter": "87600h0m0s"},
                    "k0sApiPort": 9443, "port": 6443, "sans": [address]},
            "controllerManager": {},
            "extensions": {"helm": {"concurrencyLevel": 5}},
            "installConfig": {"users": {"etcdUser": "etcd", "kineUser": "kube-apiserver",
                                        "konnectivityUser": "konnectivity-server",
                                        "kubeAPIserverUser": "kube-apiserver",
                                        "kubeSchedulerUser": "kube-scheduler"}},
            "konnectivity": {"adminPort": 8133, "agentPort": 8132},
            "network": {"clusterDomain": "cluster.local", "dualStack": {"enabled": False},
                        "kubeProxy": {"metricsBindAddress": "0.0.0.0:10249", "mode": "iptables"},
                        "kuberouter": {"autoMTU": True, "hairpin": "Enabled", "metricsPort": 8080},
                        "nodeLocalLoadBalancing": {"enabled": False, "type": "EnvoyProxy"},
                        "podCIDR": "10.244.0.0/16", "provider": "kuberouter",
                        "serviceCIDR": "10.96.0.0/12"},
            "scheduler": {},
            "storage": {"etcd": {"peerAddress": address}, "type": "etcd"},
            "telemetry": {"enabled": True},
        },
    }


def _check_schema(value, schema, path: str) -> None:
    """Go-JSON-style strict decoding errors: unknown fields and wrong scalar types."""
    go_field = path.lstrip(".")
    if schema == ANY or value is None:
        return
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise CliError(f"error unmarshaling JSON: while decoding JSON: json: cannot unmarshal "
                           f"{_go_type(value)} into Go struct field {go_field} of type object")
        for key, item in value.items():
            if key not in schema:
                raise CliError(f'error unmarshaling JSON: while decoding JSON: json: unknown field "{key}"')
            _check_schema(item, schema[key], f"{path}.{key}")
        return
    expected = {STR: str, INT: int, BOOL: bool, STR_LIST: list, STR_MAP: dict}[schema]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise CliError(f"error unmarshaling JSON: while decoding JSON: json: cannot unmarshal "
                       f"{_go_type(value)} into Go struct field {go_field} of type {schema}")
    if schema == STR_LIST and not all(isinstance(item, str) for item in value):
        raise CliError(f"error unmarshaling JSON: while decoding JSON: json: cannot unmarshal "
                       f"number into Go struct field {go_field} of type string")


def _go_type(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        elif value is not None:
            merged[key] = copy.deepcopy(value)
    return merged


def _is_dns_name(text: str) -> bool:
    return bool(re.fullmatch(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                             r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?", text))


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def validate_config(config: dict) -> list[str]:
    """The checks of ClusterConfig.Validate that k0slab can trip over, with k0s's field paths."""
    errors = []
    if config.get("apiVersion") != CONFIG_API_VERSION:
        errors.append(f'apiVersion: Unsupported value: "{config.get("apiVersion")}": '
                      f'supported values: "{CONFIG_API_VERSION}"')
    if config.get("kind") != "ClusterConfig":
        errors.append(f'kind: Unsupported value: "{config.get("kind")}": supported values: "ClusterConfig"')
    api = config["spec"]["api"]
    address = str(api.get("address", ""))
    if not is_ip(address):
        errors.append(f'spec: api: address: Invalid value: "{address}": invalid IP address')
    elif address in ("0.0.0.0", "::"):
        errors.append(f'spec: api: address: Invalid value: "{address}": invalid INADDR_ANY')
    for field in ("k0sApiPort", "port"):
        port = api.get(field)
        if not isinstance(port, int) or not 1 <= port <= 65535:
            errors.append(f"spec: api: {field}: Invalid value: {port}: must be between 1 and 65535, inclusive")
    for index, san in enumerate(api.get("sans") or []):
        if not (is_ip(san) or _is_dns_name(san)):
            errors.append(f'spec: api: sans[{index}]: Invalid value: "{san}": invalid IP address / DNS name')
    network = config["spec"]["network"]
    networks = {}
    for field in ("podCIDR", "serviceCIDR"):
        try:
            networks[field] = ipaddress.ip_network(str(network.get(field)), strict=False)
            if "/" not in str(network.get(field)):
                raise ValueError("no prefix")
        except ValueError:
            errors.append(f'spec: network: {field}: Invalid value: "{network.get(field)}": invalid CIDR address')
    if len(networks) == 2 and networks["podCIDR"].version != networks["serviceCIDR"].version:
        errors.append(f'spec: network: podCIDR: Invalid value: "{network.get("podCIDR")}": '
                      "podCIDR and serviceCIDR must be both IPv4 or IPv6")
    if network.get("provider") not in ("kuberouter", "calico", "custom"):
        errors.append(f'spec: network: provider: Unsupported value: "{network.get("provider")}": '
                      'supported values: "calico", "custom", "kuberouter"')
    storage_type = config["spec"]["storage"].get("type")
    if storage_type not in ("etcd", "kine"):
        errors.append(f'spec: storage: type: Unsupported value: "{storage_type}": '
                      'supported values: "etcd", "kine"')
    return errors


def parse_config_text(text: str) -> dict:
    """Partial configs merge over the defaults (contract §5); parsing is strict."""
    try:
        documents = yaml_load_all(text)
    except YamlError as exc:
        raise CliError(f"error converting YAML to JSON: yaml: {exc}") from exc
    if len(documents) > 1:
        raise CliError("error converting YAML to JSON: yaml: expected a single document")
    document = documents[0] if documents else {}
    if not isinstance(document, dict):
        raise CliError("error unmarshaling JSON: while decoding JSON: json: cannot unmarshal "
                       f"{_go_type(document)} into Go value of type v1beta1.ClusterConfig")
    _check_schema(document, CONFIG_SCHEMA, "")
    merged = _merge(default_config(), document)
    api = document.get("spec", {}).get("api", {}) if isinstance(document.get("spec"), dict) else {}
    if "address" in api and "sans" not in api:
        merged["spec"]["api"]["sans"] = [api["address"]]
    return merged


def load_config(path: str | None, check: bool = True) -> dict:
    """The node config: -c FILE, else /etc/k0s/k0s.yaml when present, else the defaults."""
    if path is None and os.path.exists(host_path(CONFIG_PATH)):
        path = CONFIG_PATH
    if path is None:
        return default_config()
    try:
        text = read_text(path) if path != "-" else sys.stdin.read()
    except OSError as exc:
        raise CliError(f"failed to read configuration file: open {path}: {exc.strerror.lower()}") from exc
    try:
        config = parse_config_text(text)
    except CliError as exc:
        raise CliError(f"failed to parse configuration: {exc}") from exc
    if check:
        problems = validate_config(config)
        if problems:
            raise CliError("invalid node config: " + "\n".join(problems))
    return config


def api_url(config: dict, port_field: str = "port") -> str:
    api = config["spec"]["api"]
    host = api.get("externalAddress") or api["address"]
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{api[port_field]}"


