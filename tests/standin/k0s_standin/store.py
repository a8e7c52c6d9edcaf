"""The controller's object store: the cluster state the API server serves."""
from __future__ import annotations

import base64
import copy
import json
import threading
import uuid

from .common import STATE_FILE, now_utc, read_text, rfc3339, write_file
from .rbac import BUILTIN_BINDINGS, BY_PLURAL, RBAC, Resource, builtin_cluster_roles
from .tokens import b64


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{resource.qualified} "{name}" not found')


class Store:
    """Objects by (group, plural, namespace, name), persisted in the data dir like etcd would."""

    def __init__(self):
        self.lock = threading.RLock()
        self.objects: dict[tuple, dict] = {}
        self.revision = 0
        self.heartbeat_seen: dict[str, float] = {}
        self._load()
        self._seed()

    def _load(self):
        try:
            saved = json.loads(read_text(STATE_FILE))
        except (OSError, ValueError):
            return
        self.revision = saved.get("revision", 0)
        for item in saved.get("objects", []):
            self.objects[tuple(item["key"])] = item["object"]

    def save(self):
        with self.lock:
            state = {"revision": self.revision,
                     "objects": [{"key": list(key), "object": obj} for key, obj in self.objects.items()]}
            write_file(STATE_FILE, json.dumps(state), 0o600)

    def _seed(self):
        with self.lock:
            for namespace in ("default", "kube-node-lease", "kube-public", "kube-system"):
                self.put(BY_PLURAL[("", "namespaces")], {"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": namespace}}, if_absent=True)
            for name, rules in builtin_cluster_roles().items():
                self.put(BY_PLURAL[(RBAC, "clusterroles")],
                         {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole",
                          "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
                          "rules": rules}, if_absent=True)
            for name, (role, subjects) in BUILTIN_BINDINGS.items():
                self.put(BY_PLURAL[(RBAC, "clusterrolebindings")],
                         {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
                          "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
                          "subjects": subjects}, if_absent=True)
            self.save()

    @staticmethod
    def key(resource: Resource, namespace: str, name: str) -> tuple:
        return (resource.group, resource.plural, namespace if resource.namespaced else "", name)

    def get(self, resource: Resource, namespace: str, name: str) -> dict:
        with self.lock:
            obj = self.objects.get(self.key(resource, namespace, name))
            if obj is None:
                raise not_found(resource, name)
            return copy.deepcopy(obj)

    def list(self, resource: Resource, namespace: str = "") -> list[dict]:
        with self.lock:
            return [copy.deepcopy(obj) for (group, plural, ns, _), obj in sorted(self.objects.items())
                    if (group, plural) == (resource.group, resource.plural) and (not namespace or ns == namespace)]

    def put(self, resource: Resource, obj: dict, *, if_absent: bool = False, create: bool = False,
            persist: bool = True) -> dict:
        """Create or replace; server-managed metadata is kept across replacements."""
        with self.lock:
            meta = obj.setdefault("metadata", {})
            name, namespace = meta.get("name", ""), meta.get("namespace", "") if resource.namespaced else ""
            if resource.namespaced and not namespace:
                namespace = meta["namespace"] = "default"
            if not name:
                raise ApiError(422, "Invalid", f"{resource.kind} is invalid: metadata.name: Required value: "
                                               "name or generateName is required")
            if resource.namespaced and self.objects.get(self.key(BY_PLURAL[("", "namespaces")], "", namespace)) \
                    is None:
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
            key = self.key(resource, namespace, name)
            existing = self.objects.get(key)
            if existing is not None and (if_absent or create):
                if create:
                    raise ApiError(409, "AlreadyExists", f'{resource.qualified} "{name}" already exists')
                return copy.deepcopy(existing)
            obj = copy.deepcopy(obj)
            obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
            if resource.plural == "secrets":
                _normalize_secret(obj)
            self.revision += 1
            meta = obj["metadata"]
            meta.pop("generateName", None)
            previous = (existing or {}).get("metadata", {})
            meta["uid"] = previous.get("uid") or str(uuid.uuid4())
            meta["creationTimestamp"] = previous.get("creationTimestamp") or rfc3339(now_utc())
            meta["resourceVersion"] = str(self.revision)
            self.objects[key] = obj
            if persist:
                self.save()
            return copy.deepcopy(obj)

    def delete(self, resource: Resource, namespace: str, name: str) -> dict:
        with self.lock:
            obj = self.objects.pop(self.key(resource, namespace, name), None)
            if obj is None:
                raise not_found(resource, name)
            if resource.plural == "namespaces":
                for key in [k for k in self.objects if k[2] == name]:
                    del self.objects[key]
            self.save()
            return obj


def _normalize_secret(secret: dict) -> None:
    """Like the API server: stringData is folded into base64 data."""
    data = dict(secret.get("data") or {})
    for key, value in (secret.pop("stringData", None) or {}).items():
        data[key] = b64(str(value).encode())
    secret["data"] = data
    secret.setdefault("type", "Opaque")


def secret_values(secret: dict) -> dict[str, str]:
    values = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            values[key] = base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            continue
    return values


