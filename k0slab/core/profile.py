"""Lab profiles: YAML files in profiles/ validated by pydantic, with command-line overrides.

A profile says which nodes a lab has (name, role, arch, size), which image and k0s version they
run, and a partial k0s ClusterConfig to merge into the generated one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from k0slab.vms.arch import ARCHES, host_arch
from k0slab.core.errors import K0slabError
from k0slab.core.paths import PROFILES_DIR, config_home, find_yaml, yaml_names
from k0slab.core.units import parse_size, validate_hostname

Role = Literal["controller", "controller+worker", "worker"]
CONTROLLER_ROLES = ("controller", "controller+worker")


def _checked_size(value: str) -> str:
    try:
        parse_size(value)
    except K0slabError as exc:
        raise ValueError(f"{value!r} is not a size (use e.g. 2G or 512M)") from exc
    return value


class NodeDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpus: int = Field(2, ge=1, le=64)
    memory: str = "2G"
    disk: str = "5G"
    # The host's own arch: VMs of another arch run under emulation, many times slower.
    arch: str = Field(default_factory=host_arch)

    @field_validator("memory", "disk")
    @classmethod
    def _size(cls, value: str) -> str:
        return _checked_size(value)

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: str) -> str:
        if value not in ARCHES:
            raise ValueError(f"unknown arch {value!r}, use one of: {', '.join(ARCHES)}")
        return value


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    role: Role = "worker"
    cpus: int | None = Field(None, ge=1, le=64)
    memory: str | None = None
    disk: str | None = None
    arch: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        validate_hostname(value, "node name")
        return value

    @field_validator("memory", "disk")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        return None if value is None else _checked_size(value)

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: str | None) -> str | None:
        if value is not None and value not in ARCHES:
            raise ValueError(f"unknown arch {value!r}, use one of: {', '.join(ARCHES)}")
        return value


class Timeouts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    boot: float | None = Field(None, gt=0, description="seconds for every VM to accept SSH (default: by VM count)")
    ready: float = Field(900, gt=0, description="seconds for /readyz and every node Ready after k0s starts")


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    provider: Literal["libvirt", "vagrant"] = "libvirt"
    # A public Vagrant box (e.g. generic/debian12) instead of k0slab's own: needs internet.
    box: str | None = None
    # Appended to every new VM's kernel command line, e.g. "systemd.log_level=debug".
    kernel_args: str = ""
    image: str = "debian-12"
    k0s_version: str | None = None
    defaults: NodeDefaults = Field(default_factory=NodeDefaults)
    nodes: list[NodeSpec]
    k0s: dict[str, Any] = Field(default_factory=dict)
    timeouts: Timeouts = Field(default_factory=Timeouts)

    @model_validator(mode="after")
    def _shape(self) -> Profile:
        if not self.nodes:
            raise ValueError("nodes: a lab needs at least one node")
        names = [n.name for n in self.nodes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"nodes: duplicate node name {duplicates[0]!r}")
        controllers = [n.name for n in self.nodes if n.role in CONTROLLER_ROLES]
        if len(controllers) != 1:
            raise ValueError(
                f"nodes: exactly one controller or controller+worker is supported, found {len(controllers)}"
            )
        if self.nodes[0].role not in CONTROLLER_ROLES:
            raise ValueError(f"nodes: the first node ({self.nodes[0].name}) must be the controller")
        if self.box is not None and self.provider != "vagrant":
            raise ValueError("box: a Vagrant box needs provider: vagrant")
        return self

    # --- resolved per-node values ----------------------------------------------------------
    def node_arch(self, node: NodeSpec) -> str:
        return node.arch or self.defaults.arch

    def node_cpus(self, node: NodeSpec) -> int:
        return node.cpus or self.defaults.cpus

    def node_memory(self, node: NodeSpec) -> str:
        return node.memory or self.defaults.memory

    def node_disk(self, node: NodeSpec) -> str:
        return node.disk or self.defaults.disk

    @property
    def controller(self) -> NodeSpec:
        return next(n for n in self.nodes if n.role in CONTROLLER_ROLES)


def available_profiles() -> list[str]:
    return yaml_names(PROFILES_DIR)


def _profile_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    named = find_yaml(PROFILES_DIR, name_or_path)
    if named is not None:
        return named
    raise K0slabError(
        f"unknown profile {name_or_path!r}",
        f"give a profile file, one of: {', '.join(available_profiles())}, or add {name_or_path}.yaml to "
        f"{config_home() / 'profiles'}",
    )


def load_profile(name_or_path: str) -> Profile:
    path = _profile_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" near line {mark.line + 1}" if mark else ""
        raise K0slabError(
            f"profile {path} is not valid YAML: {str(exc).splitlines()[0]}", f"fix the YAML{where}"
        ) from None
    return parse_profile(data, str(path))


def parse_profile(data: Any, source: str) -> Profile:
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        raise K0slabError(
            f"profile {source}: field {field!r}: {message}", "see profiles/default.yaml for the schema"
        ) from None


def with_overrides(
    profile: Profile, *, nodes: int | None = None, arch: str | None = None, cpus: int | None = None,
    memory: str | None = None, disk: str | None = None, k0s_version: str | None = None,
    provider: str | None = None, box: str | None = None, kernel_args: str | None = None,
) -> Profile:
    """Apply command-line flags: --nodes N keeps the profile's controller and fills with workers."""
    data = profile.model_dump()
    if nodes is not None:
        if nodes < 1:
            raise K0slabError(f"--nodes {nodes} is out of range", "a lab needs at least 1 node")
        kept = data["nodes"][:nodes]
        existing = {n["name"] for n in kept}
        number = 1
        while len(kept) < nodes:
            name = f"node{number}"
            number += 1
            if name not in existing:
                kept.append({"name": name, "role": "worker"})
                existing.add(name)
        data["nodes"] = kept
    for flag, value in (("--memory", memory), ("--disk", disk)):
        if value is not None:
            parse_size(value, flag)
    for key, value in (("arch", arch), ("cpus", cpus), ("memory", memory), ("disk", disk)):
        if value is not None:
            data["defaults"][key] = value
            for node in data["nodes"]:
                node[key] = None
    if k0s_version is not None:
        data["k0s_version"] = k0s_version
    if provider is not None:
        data["provider"] = provider
    if box is not None:
        data["box"] = box
    if kernel_args is not None:
        data["kernel_args"] = kernel_args
    return parse_profile(data, "command line")
