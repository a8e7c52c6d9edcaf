"""The k0s.yaml a lab's controller runs with (k0s-contract.md section 5).

k0slab sets the API address and SANs to the controller's lab IP: with more than one NIC k0s
would otherwise pick the first non-loopback address (k0s issue 1669). The profile's `k0s:`
section, a partial ClusterConfig, is merged over that.
"""
from __future__ import annotations

import copy
from typing import Any

import yaml

from k0slab.core.errors import K0slabError

API_VERSION = "k0s.k0sproject.io/v1beta1"
KIND = "ClusterConfig"
CONFIG_PATH = "/etc/k0s/k0s.yaml"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Maps merge key by key; any other value in override replaces the base value."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def cluster_config(
    controller_ip: str, overrides: dict[str, Any], *, telemetry: bool = False, pull_never: bool = False
) -> dict[str, Any]:
    """The generated config with the profile's overrides merged over it. Telemetry is on in k0s's
    defaults and off here unless asked for; `pull_never` (a lab without egress) keeps k0s's own
    pods from pulling, so they start from the airgap bundle's images (k0s-facts §5, §9)."""
    for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        if key in overrides and overrides[key] != expected:
            raise K0slabError(
                f"profile k0s.{key} is {overrides[key]!r}", f"use {expected!r} (or leave it out)"
            )
    generated = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "k0s"},
        "spec": {"api": {"address": controller_ip, "sans": [controller_ip]}, "telemetry": {"enabled": telemetry}},
    }
    if pull_never:
        generated["spec"]["images"] = {"default_pull_policy": "Never"}
    return deep_merge(generated, overrides)


def render(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, default_flow_style=False, sort_keys=False)


def node_ip_args(ip: str) -> str:
    """Every node gets its lab IP as kubelet --node-ip, or it may advertise another NIC's address."""
    return f"--kubelet-extra-args=--node-ip={ip}"
