"""Cluster users: `invoke lab.user demo --group development` and its check, list and revoke.

A user is a client certificate (CN = user name, one O value per group) inside a kubeconfig. k0slab
signs it on the host with the lab CA rather than running `k0s kubeconfig create` on the controller:
  - several groups need several O values, and `k0s kubeconfig create --groups` puts its whole argument
    into a single O value, so "a,b" would become one group named "a,b";
  - the lifetime is exactly `--days`, where k0s gives a fixed year unless told in hours;
  - no SSH round trip, and no copy of the user's key is left in the controller's pki folder;
  - the lab owns the CA: it made it and placed it on the controller before k0s first started.
Permissions are real RBAC objects applied on the controller, so the API server, not k0slab, decides.
A certificate cannot be revoked in Kubernetes: revoking a user removes its bindings (and files), after
which the still-valid certificate authenticates a user allowed only what its groups are granted. Groups
named system:* are Kubernetes' own (system:masters passes every check), so they need --superuser.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ValidationError

from k0slab.cluster import pki
from k0slab.core.errors import K0slabError
from k0slab.cluster.k0s.bootstrap import K0S_BINARY, KUBECTL
from k0slab.vms.remote import CommandResult, RemoteCommandError, Runner
from k0slab.core.state import write_private

# Names k0s uses for its own certificates in /var/lib/k0s/pki (contract section 2): a user with one of
# them would be confused with, or overwrite, a component's identity.
RESERVED_NAMES = frozenset({
    "admin", "server", "scheduler", "ccm", "konnectivity", "k0s-api", "front-proxy-client",
    "apiserver-kubelet-client", "etcd",
})
# Members of this group pass every authorization check (Kubernetes' built-in superuser group).
SUPERUSER_GROUP = "system:masters"
# Groups Kubernetes defines itself (system:masters, system:nodes, ...): some grant far more than a
# lab user should get by accident.
SYSTEM_GROUP_PREFIX = "system:"
# X.509 allows at most 64 characters in an O value (RFC 5280, ub-organization-name).
MAX_GROUP_LENGTH = 64
# Built-in ClusterRoles whose effect on the probes below is known: all of them allow listing pods in
# a namespace they apply to; only cluster-admin allows nodes (a cluster-scoped resource).
_BUILTIN_CLUSTERROLES = ("cluster-admin", "admin", "edit", "view")
_RBAC = "rbac.authorization.k8s.io"
_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?")
_NAMESPACE_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class Binding(BaseModel):
    """One RBAC binding k0slab made for a user."""

    kind: Literal["ClusterRoleBinding", "RoleBinding"]
    name: str
    role_kind: Literal["ClusterRole", "Role"]
    role: str
    namespace: str | None = None

    def manifest(self, user: str) -> str:
        metadata: dict[str, object] = {"name": self.name, "labels": {"app.kubernetes.io/managed-by": "k0slab"}}
        if self.namespace:
            metadata["namespace"] = self.namespace
        return yaml.safe_dump({
            "apiVersion": f"{_RBAC}/v1",
            "kind": self.kind,
            "metadata": metadata,
            "roleRef": {"apiGroup": _RBAC, "kind": self.role_kind, "name": self.role},
            "subjects": [{"apiGroup": _RBAC, "kind": "User", "name": user}],
        }, sort_keys=False)

    def delete_command(self) -> str:
        where = f" -n {shlex.quote(self.namespace)}" if self.namespace else ""
        return f"{KUBECTL} delete {self.kind.lower()} {shlex.quote(self.name)}{where} --ignore-not-found"

    def describe(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else " (cluster-wide)"
        return f"{self.kind} {self.name}: {self.role_kind} {self.role}{where}"


class UserRecord(BaseModel):
    """What `lab.users` lists; stored as users_dir/<name>.json."""

    name: str
    lab: str
    groups: list[str]
    created: dt.datetime
    expires: dt.datetime
    kubeconfig: Path
    context: str
    certificate: pki.CertSummary
    bindings: list[Binding] = []
    # sha256 of the kubeconfig as k0slab wrote it: revoke deletes the file only while it is unchanged.
    kubeconfig_sha256: str = ""

    def powers(self) -> str:
        """What the certificate can do, in one sentence, from its groups and k0slab's bindings."""
        if SUPERUSER_GROUP in self.groups:
            return (f"SUPERUSER: group {SUPERUSER_GROUP} passes every authorization check, whatever is bound, "
                    f"until the certificate expires {self.expires:%Y-%m-%d}")
        system = [g for g in self.groups if g.startswith(SYSTEM_GROUP_PREFIX)]
        granted = "; ".join(b.describe() for b in self.bindings) or "no binding made by k0slab"
        also = f"; Kubernetes' own groups {', '.join(system)} add their built-in rights" if system else ""
        return (f"{granted}, plus whatever RBAC grants groups {', '.join(self.groups)}{also}; "
                f"valid until {self.expires:%Y-%m-%d}")

    def summary(self) -> str:
        lines = [
            f"user {self.name} (groups: {', '.join(self.groups)}) in lab {self.lab}",
            f"  kubeconfig: {self.kubeconfig}  (context {self.context})",
            "  certificate:",
            *(f"    {line}" for line in self.certificate.lines()),
        ]
        lines += [f"  binding:    {binding.describe()}" for binding in self.bindings] or ["  binding:    none"]
        lines.append(f"  can do:     {self.powers()}")
        lines.append(f"  try:        KUBECONFIG={self.kubeconfig} kubectl get pods")
        return "\n".join(lines)


# --- validation -----------------------------------------------------------------------------------


def validate_user_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name or ""):
        raise K0slabError(
            f"user name {name!r} is not valid",
            "use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 63",
        )
    if name in RESERVED_NAMES:
        raise K0slabError(
            f"user name {name!r} is reserved by k0s for its own certificates",
            f"pick another name; reserved: {', '.join(sorted(RESERVED_NAMES))}",
        )
    return name


def validate_groups(groups: list[str], superuser: bool = False) -> list[str]:
    cleaned: list[str] = []
    for group in groups:
        if not group or group != group.strip() or "," in group or "/" in group or not group.isprintable():
            raise K0slabError(f"group {group!r} is not valid",
                              "give each group separately, without spaces, ',' or control characters")
        if len(group) > MAX_GROUP_LENGTH:
            raise K0slabError(f"group {group[:20]!r}... is {len(group)} characters long",
                              f"X.509 allows at most {MAX_GROUP_LENGTH} in a group (O value)")
        if group.startswith(SYSTEM_GROUP_PREFIX) and not superuser:
            power = "passes every authorization check" if group == SUPERUSER_GROUP else "is Kubernetes' own group"
            raise K0slabError(f"group {group!r} {power}, and a certificate cannot be revoked before it expires",
                              "use your own group name, or add --superuser if you mean it")
        if group not in cleaned:
            cleaned.append(group)
    if not cleaned:
        raise K0slabError("no group given", "add at least one, e.g. --group development")
    return cleaned


def check_output_path(output: Path | None, force: bool) -> Path | None:
    """Where --output may write: never into a folder, never over a file k0slab did not write unless --force."""
    if output is None:
        return None
    target = output.expanduser()
    if target.is_dir():
        raise K0slabError(f"--output {str(output)!r} is a folder", "give a file path, e.g. ./demo.kubeconfig")
    if (target.exists() or target.is_symlink()) and not force:
        raise K0slabError(f"--output {str(output)!r} already exists",
                          "choose another path, or add --force to replace it")
    if target.parent.exists() and not target.parent.is_dir():
        raise K0slabError(f"--output {str(output)!r}: {target.parent} is not a folder", "give a path in a folder")
    return target.resolve()


def _validate_rbac_name(value: str, what: str) -> str:
    # RBAC object names may hold ':' (system:...) but never '/', '%' or whitespace.
    if not value or re.search(r"[/%\s]", value) or value in (".", ".."):
        raise K0slabError(f"{what} {value!r} is not a valid role name", "e.g. view, edit or a Role you created")
    return value


def planned_binding(user: str, clusterrole: str | None, role: str | None, namespace: str | None) -> Binding | None:
    """The binding the options ask for: --clusterrole alone binds cluster-wide, with --namespace only
    there; --role binds a namespaced Role (namespace default unless given)."""
    if clusterrole and role:
        raise K0slabError("both --clusterrole and --role given", "give one; use --clusterrole with --namespace "
                          "to grant a ClusterRole in one namespace")
    if namespace is not None and not _NAMESPACE_RE.fullmatch(namespace):
        raise K0slabError(f"--namespace {namespace!r} is not a valid namespace", "use lowercase letters, digits, '-'")
    name = f"k0slab-user-{user}"
    if role:
        return Binding(kind="RoleBinding", name=name, role_kind="Role", role=_validate_rbac_name(role, "--role"),
                       namespace=namespace or "default")
    if clusterrole:
        role_name = _validate_rbac_name(clusterrole, "--clusterrole")
        if namespace:
            return Binding(kind="RoleBinding", name=name, role_kind="ClusterRole", role=role_name,
                           namespace=namespace)
        return Binding(kind="ClusterRoleBinding", name=name, role_kind="ClusterRole", role=role_name)
    if namespace:
        raise K0slabError("--namespace given without --role or --clusterrole", "add the role to grant there")
    return None


# --- files ----------------------------------------------------------------------------------------


def record_path(users_dir: Path, name: str) -> Path:
    return users_dir / f"{validate_user_name(name)}.json"


def load_user(users_dir: Path, name: str) -> UserRecord:
    path = record_path(users_dir, name)
    if not path.exists():
        raise K0slabError(f"no user {name!r} in this lab", "list them with: invoke lab.users")
    return _read_record(path)


def _read_record(path: Path) -> UserRecord:
    try:
        return UserRecord.model_validate_json(path.read_text())
    except (ValidationError, OSError) as error:
        raise K0slabError(f"user record {path} is unreadable: {error}", "delete it and create the user again") \
            from error


def list_users(users_dir: Path) -> list[UserRecord]:
    if not users_dir.is_dir():
        return []
    return sorted((_read_record(path) for path in users_dir.glob("*.json")), key=lambda record: record.name)


def user_kubeconfig(
    lab_name: str, user: str, server_url: str, ca_cert_pem: bytes, cert_pem: bytes, key_pem: bytes
) -> str:
    """Cluster `<lab>`, user and context `<lab>-<user>`: names that stay unique when several labs' and
    users' kubeconfigs are merged with KUBECONFIG=a:b (same-lab clusters are identical, so they merge)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    context = f"{lab_name}-{user}"
    return yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": lab_name, "cluster": {
            "server": server_url, "certificate-authority-data": b64(ca_cert_pem),
        }}],
        "contexts": [{"name": context, "context": {"cluster": lab_name, "user": context}}],
        "current-context": context,
        "preferences": {},
        "users": [{"name": context, "user": {
            "client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem),
        }}],
    }, sort_keys=False)


# --- on the controller ----------------------------------------------------------------------------


def _require_exists(controller: Runner, kind: str, name: str, namespace: str | None, hint: str) -> None:
    where = f" -n {shlex.quote(namespace)}" if namespace else ""
    result = controller.run(f"{KUBECTL} get {kind} {shlex.quote(name)}{where} -o name", check=False)
    if result.ok:
        return
    if "(NotFound)" in result.stderr:
        place = f" in namespace {namespace!r}" if namespace else ""
        raise K0slabError(f"{kind} {name!r} does not exist{place}", hint)
    raise RemoteCommandError(controller.name, result)


def _require_binding_targets(controller: Runner, binding: Binding) -> None:
    if binding.namespace:
        _require_exists(controller, "namespace", binding.namespace, None,
                        f"create it first: k0s kubectl create namespace {binding.namespace}")
    if binding.role_kind == "ClusterRole":
        _require_exists(controller, "clusterrole", binding.role, None,
                        f"use a built-in one ({', '.join(_BUILTIN_CLUSTERROLES)}) or create it first")
    else:
        _require_exists(controller, "role", binding.role, binding.namespace,
                        "create the Role first, or use --clusterrole with --namespace")


# --- the operations -------------------------------------------------------------------------------


def create_user(
    name: str,
    groups: list[str],
    days: int,
    *,
    lab_name: str,
    server_url: str,
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    users_dir: Path,
    output: Path | None = None,
    controller: Runner | None = None,
    clusterrole: str | None = None,
    role: str | None = None,
    namespace: str | None = None,
    superuser: bool = False,
    force: bool = False,
) -> UserRecord:
    """Sign, verify and write a user's kubeconfig (0600); apply its binding if one is asked for."""
    validate_user_name(name)
    groups = validate_groups(groups, superuser)
    pki.validate_days(days, "--days")
    output = check_output_path(output, force)
    binding = planned_binding(name, clusterrole, role, namespace)
    if not server_url.startswith("https://"):
        raise K0slabError(f"API server URL {server_url!r} is not https", "e.g. https://192.168.50.11:6443")
    record_file = record_path(users_dir, name)
    if record_file.exists():
        raise K0slabError(f"user {name!r} already exists in lab {lab_name}",
                          f"revoke it first: invoke lab.user {name} --revoke")
    ca_expires = pki.summarize_cert(ca_cert_pem).not_after
    if dt.datetime.now(dt.UTC) + dt.timedelta(days=days) > ca_expires:
        raise K0slabError(f"--days {days} outlives the lab CA, which expires {ca_expires:%Y-%m-%d}",
                          "ask for fewer days")
    if binding is not None:
        if controller is None:
            raise K0slabError(f"a binding for {name!r} needs the controller", "start the lab: invoke lab.up")
        _require_binding_targets(controller, binding)

    cert_pem, key_pem = pki.sign_client_cert(ca_cert_pem, ca_key_pem, name, groups, days)
    certificate = pki.verify_client_cert(cert_pem, ca_cert_pem, name, groups, days)
    if binding is not None and controller is not None:
        controller.run(f"{KUBECTL} apply -f -", stdin=binding.manifest(name))

    kubeconfig = output or (users_dir / f"{name}.kubeconfig").resolve()
    text = user_kubeconfig(lab_name, name, server_url, ca_cert_pem, cert_pem, key_pem)
    write_private(kubeconfig, text)
    record = UserRecord(
        name=name, lab=lab_name, groups=groups, created=certificate.not_before + pki.BACKDATE,
        expires=certificate.not_after, kubeconfig=kubeconfig, context=f"{lab_name}-{name}",
        certificate=certificate, bindings=[binding] if binding else [],
        kubeconfig_sha256=hashlib.sha256(text.encode()).hexdigest(),
    )
    write_private(record_file, record.model_dump_json(indent=2))
    return record


def kubeconfig_unchanged(record: UserRecord) -> bool:
    """True when the user's kubeconfig is still exactly what k0slab wrote (so k0slab may delete it)."""
    try:
        data = record.kubeconfig.read_bytes()
    except OSError:
        return False
    return bool(record.kubeconfig_sha256) and hashlib.sha256(data).hexdigest() == record.kubeconfig_sha256


def revoke_user(name: str, *, users_dir: Path, controller: Runner | None) -> tuple[UserRecord, bool]:
    """Delete the user's bindings on the controller, then its record and its kubeconfig when that is
    unchanged since k0slab wrote it; returns the record and whether the kubeconfig was deleted."""
    record = load_user(users_dir, name)
    if record.bindings:
        if controller is None:
            raise K0slabError(f"user {name!r} has bindings to delete on the controller", "start the lab: invoke lab.up")
        for binding in record.bindings:
            controller.run(binding.delete_command())
    deleted = kubeconfig_unchanged(record)
    if deleted:
        record.kubeconfig.unlink()
    record_path(users_dir, name).unlink()
    return record, deleted


@dataclass(frozen=True)
class Probe:
    """One request made with the user's own kubeconfig, what k0slab expected and what the API said."""

    request: str
    expected: bool | None  # None: decided by roles k0slab did not create, so no expectation
    outcome: Literal["allowed", "forbidden", "error"]
    evidence: str

    @property
    def as_expected(self) -> bool:
        return self.outcome != "error" and (self.expected is None or self.expected == (self.outcome == "allowed"))

    def line(self) -> str:
        wanted = {True: "allowed", False: "forbidden", None: "no expectation"}[self.expected]
        mark = "ok" if self.as_expected else "MISMATCH"
        return f"{mark:8} {self.request}: {self.outcome} (expected {wanted})\n         {self.evidence}"


@dataclass(frozen=True)
class UserCheck:
    user: str
    probes: list[Probe]

    @property
    def ok(self) -> bool:
        return all(probe.as_expected for probe in self.probes)

    powers: str = ""

    def __str__(self) -> str:
        return "\n".join([f"user {self.user}: {'as expected' if self.ok else 'NOT as expected'}",
                          *(probe.line() for probe in self.probes), f"can do:  {self.powers}"])


def _expectations(record: UserRecord) -> tuple[bool | None, bool | None, str]:
    """(nodes allowed?, pods allowed?, namespace to list pods in) from what k0slab itself granted.

    Bindings made outside k0slab for the user's groups are not known here; they show up as mismatches.
    """
    binding = record.bindings[0] if record.bindings else None
    namespace = (binding.namespace if binding else None) or "default"
    if SUPERUSER_GROUP in record.groups:
        return True, True, namespace
    if binding is None:
        return False, False, namespace
    known = binding.role_kind == "ClusterRole" and binding.role in _BUILTIN_CLUSTERROLES
    if binding.kind == "RoleBinding":
        # A RoleBinding never grants cluster-scoped resources such as nodes, whatever it refers to.
        return False, True if known else None, namespace
    if not known:
        return None, None, namespace
    return binding.role == "cluster-admin", True, namespace


def _probe(controller: Runner, kubeconfig_path: str, request: str, expected: bool | None) -> Probe:
    result: CommandResult = controller.run(
        f"{K0S_BINARY} kubectl --kubeconfig {shlex.quote(kubeconfig_path)} {request} -o name", check=False
    )
    text = (result.stdout.strip() or result.stderr.strip()).splitlines()
    evidence = " | ".join(text[:3]) or f"exit {result.exit_code}"
    if result.ok:
        outcome: Literal["allowed", "forbidden", "error"] = "allowed"
    elif "(Forbidden)" in result.stderr:
        outcome = "forbidden"
    else:
        outcome, evidence = "error", result.last_error_line()
    return Probe(request, expected, outcome, evidence)


def check_user(name: str, *, users_dir: Path, controller: Runner) -> UserCheck:
    """Ask the API server, as the user, for nodes and for pods, and compare with the user's bindings."""
    record = load_user(users_dir, name)
    try:
        kubeconfig = record.kubeconfig.read_text()
    except OSError as error:
        raise K0slabError(f"kubeconfig of {name!r} is unreadable: {error}",
                          f"revoke and create the user again: invoke lab.user {name} --revoke") from error
    nodes, pods, namespace = _expectations(record)
    # A random name so that concurrent checks never share a file; 0600 because it holds the user's key.
    remote = f"/tmp/k0slab-check-{name}-{secrets.token_hex(4)}.kubeconfig"
    controller.put_text(kubeconfig, remote, mode=0o600)
    try:
        probes = [
            _probe(controller, remote, "get nodes", nodes),
            _probe(controller, remote, f"get pods -n {shlex.quote(namespace)}", pods),
        ]
    finally:
        controller.run(f"rm -f {shlex.quote(remote)}", check=False)
    return UserCheck(name, probes, record.powers())

