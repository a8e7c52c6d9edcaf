"""Lab profiles: YAML files in profiles/ validated by pydantic, with command-line overrides.

A profile says which nodes a lab has (name, role, arch, size), which image and k0s version they
run, and a partial k0s ClusterConfig to merge into the generated one.
"""
from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterator
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
# A profile is a few hundred bytes; a cap keeps a huge or endless file from being read at all.
MAX_PROFILE_BYTES = 64 << 10
# One /24 per lab (see k0slab.vms.network), each node one address in it.
MAX_NODES = 100
# Longest timeout a profile may set: a day is far beyond any real boot or readiness wait.
MAX_TIMEOUT_S = 86400.0
# Every lab's nodes live here (k0slab.vms.network); a k0s pod or service CIDR inside it would
# route the lab's own addresses into the cluster.
LAB_SUPERNET = ipaddress.ip_network("10.213.0.0/16")
# Kernel parameters k0slab itself sets on every VM (k0slab.vms.domain, lab.up): a profile may add
# parameters, never replace these.
RESERVED_KERNEL_ARGS = ("root", "rw", "console", "systemd.hostname", "quiet")
RESERVED_KERNEL_ARG_PREFIXES = ("k0slab.", "systemd.mask")
_PROFILE_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")
# Vagrant Cloud box names: ORG/NAME.
_BOX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


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

    boot: float | None = Field(None, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False,
                               description="seconds for every VM to accept SSH (default: by VM count)")
    ready: float = Field(900, gt=0, le=MAX_TIMEOUT_S, allow_inf_nan=False,
                         description="seconds for /readyz and every node Ready after k0s starts")


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
    # nat: nodes reach registries through libvirt's NAT; none: no way out, so every image comes
    # from an airgap bundle (k0s-facts §9).
    egress: Literal["nat", "none"] = "nat"
    # k0s reports usage to the k0s project by default (k0s-facts §5); a lab does not unless asked.
    telemetry: bool = False
    defaults: NodeDefaults = Field(default_factory=NodeDefaults)
    nodes: list[NodeSpec]
    k0s: dict[str, Any] = Field(default_factory=dict)
    timeouts: Timeouts = Field(default_factory=Timeouts)

    @field_validator("name")
    @classmethod
    def _profile_name(cls, value: str) -> str:
        if not _PROFILE_NAME_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not valid: use up to 40 lowercase letters, digits and '-'")
        return value

    @field_validator("box")
    @classmethod
    def _box(cls, value: str | None) -> str | None:
        if value is not None and not _BOX_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a Vagrant box name: use ORG/NAME, e.g. generic/debian12")
        return value

    @field_validator("kernel_args")
    @classmethod
    def _kernel_args(cls, value: str) -> str:
        check_kernel_args(value)
        return value

    @field_validator("k0s")
    @classmethod
    def _k0s(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_k0s_partial(value)
        return value

    @model_validator(mode="after")
    def _shape(self) -> Profile:
        if not self.nodes:
            raise ValueError("nodes: a lab needs at least one node")
        if len(self.nodes) > MAX_NODES:
            raise ValueError(f"nodes: {len(self.nodes)} nodes is more than the {MAX_NODES} a lab's subnet holds")
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


def check_kernel_args(value: str) -> None:
    """Extra kernel parameters: printable words, none replacing one k0slab sets itself."""
    if not value.isprintable():
        raise ValueError(f"{value!r} holds a control character: give space-separated parameters")
    for word in value.split():
        key = word.split("=", 1)[0]
        if key in RESERVED_KERNEL_ARGS or key.startswith(RESERVED_KERNEL_ARG_PREFIXES):
            raise ValueError(f"{word!r} would replace a parameter k0slab sets itself; remove it")


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every (path, value) pair of a nested k0s partial, maps and lists alike."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for number, item in enumerate(value):
            yield from _walk(item, f"{path}[{number}]")


def check_k0s_partial(partial: dict[str, Any]) -> None:
    """Refuse a k0s partial that would undo what k0slab must set (k0s-contract section 5): the API
    address, CIDRs inside the lab subnet, and null sections that k0s would read as missing."""
    for path, value in _walk(partial, "k0s"):
        if value is None:
            raise ValueError(f"{path} is null: give a mapping or a value, or leave the key out")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{path} is {value}: give a finite number")
        if path.lower().endswith("cidr") and isinstance(value, str):
            try:
                network = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"{path} {value!r} is not a CIDR, e.g. 10.244.0.0/16") from None
            if network.overlaps(LAB_SUPERNET):
                raise ValueError(f"{path} {value} overlaps the lab subnets {LAB_SUPERNET}: choose another range")
    for key, expected in (("apiVersion", "k0s.k0sproject.io/v1beta1"), ("kind", "ClusterConfig")):
        if key in partial and partial[key] != expected:
            raise ValueError(f"k0s.{key} is {partial[key]!r}: use {expected!r}, or leave it out")
    spec = partial.get("spec", {})
    if not isinstance(spec, dict):
        raise ValueError("k0s.spec must be a mapping")
    for section in ("api", "network"):
        if not isinstance(spec.get(section, {}), dict):
            raise ValueError(f"k0s.spec.{section} must be a mapping")
    if "address" in spec.get("api", {}):
        raise ValueError("k0s.spec.api.address is set by k0slab to the controller's lab IP: remove it")


class _LimitedLoader(yaml.SafeLoader):
    """YAML without aliases (a 300-byte alias bomb grows to gigabytes) and without duplicate keys
    (which YAML would silently resolve to the last value)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(None, None, "aliases (*name) are not allowed", event.start_mark)
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise yaml.constructor.ConstructorError(None, None, "anchors (&name) are not allowed", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """Parse user-written YAML with the limits of _LimitedLoader."""
    loader = _LimitedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def available_profiles() -> list[str]:
    return yaml_names(PROFILES_DIR)


def _profile_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    named = find_yaml(PROFILES_DIR, name_or_path) if _PROFILE_NAME_RE.fullmatch(name_or_path) else None
    if named is not None:
        return named
    raise K0slabError(
        f"unknown profile {name_or_path!r}",
        f"give a profile file, one of: {', '.join(available_profiles())}, or add {name_or_path}.yaml to "
        f"{config_home() / 'profiles'}",
    )


def load_profile(name_or_path: str) -> Profile:
    path = _profile_path(name_or_path)
    if path.stat().st_size > MAX_PROFILE_BYTES:
        raise K0slabError(f"profile {path} is {path.stat().st_size} bytes, more than {MAX_PROFILE_BYTES}",
                          "a profile is a short YAML file; see profiles/default.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise K0slabError(f"profile {path} is not a readable UTF-8 text file ({exc})",
                          "give a YAML profile, e.g. profiles/default.yaml") from None
    if "\0" in text:
        raise K0slabError(f"profile {path} is not a text file (it holds NUL bytes)",
                          "give a YAML profile, e.g. profiles/default.yaml")
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" near line {mark.line + 1}" if mark else ""
        raise K0slabError(
            f"profile {path} is not valid YAML: {str(exc).splitlines()[0]}", f"fix the YAML{where}"
        ) from None
    return parse_profile(data, str(path))


def parse_profile(data: Any, source: str) -> Profile:
    if not isinstance(data, dict):
        raise K0slabError(f"profile {source} is not a mapping of fields", "see profiles/default.yaml for the schema")
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        # An unknown key is the likelier cause of a missing one (`nmae:`), so it is named first.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        error = errors[0]
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
    egress: str | None = None,
) -> Profile:
    """Apply command-line flags: --nodes N keeps the profile's controller and fills with workers."""
    data = profile.model_dump()
    if nodes is not None:
        if not 1 <= nodes <= MAX_NODES:
            raise K0slabError(f"--nodes {nodes} is out of range", f"a lab has from 1 to {MAX_NODES} nodes")
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
    if egress is not None:
        data["egress"] = egress
    return parse_profile(data, "command line")
