"""API resources the stand-in serves, users, requests and RBAC rules."""
from __future__ import annotations


class Resource:
    def __init__(self, plural: str, kind: str, group: str, namespaced: bool, short: tuple = ()):
        self.plural, self.kind, self.group, self.namespaced, self.short = plural, kind, group, namespaced, short

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1" if self.group else "v1"

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular_qualified(self) -> str:
        return f"{self.kind.lower()}.{self.group}" if self.group else self.kind.lower()

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/v1" if self.group else "/api/v1"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return base + (f"/{name}" if name else "")


RBAC = "rbac.authorization.k8s.io"
RESOURCES = [
    Resource("nodes", "Node", "", False, ("no", "node")),
    Resource("namespaces", "Namespace", "", False, ("ns", "namespace")),
    Resource("pods", "Pod", "", True, ("po", "pod")),
    Resource("services", "Service", "", True, ("svc", "service")),
    Resource("configmaps", "ConfigMap", "", True, ("cm", "configmap")),
    Resource("secrets", "Secret", "", True, ("secret",)),
    Resource("serviceaccounts", "ServiceAccount", "", True, ("sa", "serviceaccount")),
    Resource("deployments", "Deployment", "apps", True, ("deploy", "deployment")),
    Resource("events", "Event", "", True, ("ev", "event")),  # the kubelet records FailedCreatePodSandBox
    Resource("clusterroles", "ClusterRole", RBAC, False, ("clusterrole",)),
    Resource("clusterrolebindings", "ClusterRoleBinding", RBAC, False, ("clusterrolebinding",)),
    Resource("roles", "Role", RBAC, True, ("role",)),
    Resource("rolebindings", "RoleBinding", RBAC, True, ("rolebinding",)),
    Resource("certificatesigningrequests", "CertificateSigningRequest", "certificates.k8s.io", False, ("csr",)),
    Resource("selfsubjectaccessreviews", "SelfSubjectAccessReview", "authorization.k8s.io", False),
]
BY_PLURAL = {(r.group, r.plural): r for r in RESOURCES}
BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}


def resource_for_cli(name: str) -> Resource | None:
    """kubectl's resource lookup: plural, singular, short name, or any of them with `.group`."""
    name = name.lower()
    for resource in RESOURCES:
        names = {resource.plural, *resource.short}
        if name in names or (resource.group and name in {f"{n}.{resource.group}" for n in names}):
            return resource
    return None


_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_CORE_WORKLOADS = ["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods",
                   "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services",
                   "services/status", "bindings", "events", "limitranges", "namespaces/status", "pods/log",
                   "pods/status", "replicationcontrollers/status", "resourcequotas", "resourcequotas/status"]
_APPS = ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale",
         "deployments/status", "replicasets", "replicasets/scale", "replicasets/status", "statefulsets",
         "statefulsets/scale", "statefulsets/status"]
_NAMESPACED_GROUPS = [
    (["apps"], _APPS),
    (["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
    (["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
    (["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
    (["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"]),
    (["discovery.k8s.io"], ["endpointslices"]),
]


def _rule(groups, resources, verbs) -> dict:
    return {"apiGroups": list(groups), "resources": list(resources), "verbs": list(verbs)}


def builtin_cluster_roles() -> dict[str, list[dict]]:
    """The default ClusterRoles as Kubernetes aggregates them; none of admin/edit/view covers nodes."""
    view = [_rule([""], _CORE_WORKLOADS + ["namespaces"], _READ)]
    view += [_rule(groups, resources, _READ) for groups, resources in _NAMESPACED_GROUPS]
    edit = view + [
        _rule([""], ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"],
              _READ),
        _rule([""], ["serviceaccounts/token"], ["create"]),
        _rule([""], ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
                     "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy",
                     "pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"], _WRITE),
    ] + [_rule(groups, [r for r in resources if not r.endswith("/status")], _WRITE)
         for groups, resources in _NAMESPACED_GROUPS]
    admin = edit + [
        _rule(["authorization.k8s.io"], ["localsubjectaccessreviews"], ["create"]),
        _rule([RBAC], ["rolebindings", "roles"], _READ + _WRITE),
    ]
    everything = [_rule(["*"], ["*"], ["*"]), {"nonResourceURLs": ["*"], "verbs": ["*"]}]
    return {
        "cluster-admin": everything,
        "admin": admin,
        "edit": edit,
        "view": view,
        "system:basic-user": [_rule(["authorization.k8s.io"], ["selfsubjectaccessreviews",
                                                               "selfsubjectrulesreviews"], ["create"])],
        "system:discovery": [{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                                                  "/openapi", "/openapi/*", "/readyz", "/version", "/version/"],
                              "verbs": ["get"]}],
        "system:public-info-viewer": [{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version",
                                                           "/version/"], "verbs": ["get"]}],
        "system:node-bootstrapper": [_rule(["certificates.k8s.io"], ["certificatesigningrequests"],
                                           ["create", "get", "list", "watch"])],
    }


BUILTIN_BINDINGS = {
    "cluster-admin": ("cluster-admin", [{"kind": "Group", "name": "system:masters"}]),
    "system:basic-user": ("system:basic-user", [{"kind": "Group", "name": "system:authenticated"}]),
    "system:discovery": ("system:discovery", [{"kind": "Group", "name": "system:authenticated"}]),
    "system:public-info-viewer": ("system:public-info-viewer",
                                  [{"kind": "Group", "name": "system:authenticated"},
                                   {"kind": "Group", "name": "system:unauthenticated"}]),
    "kubelet-bootstrap": ("system:node-bootstrapper", [{"kind": "Group", "name": "system:bootstrappers"}]),
}


class User:
    def __init__(self, name: str, groups: list[str]):
        self.name, self.groups = name, groups


ANONYMOUS = User("system:anonymous", ["system:unauthenticated"])


class Request:
    """What the authorizer looks at (k8s authorizer.Attributes)."""

    def __init__(self, verb: str, resource: Resource | None = None, namespace: str = "", name: str = "",
                 subresource: str = "", path: str = "", group: str | None = None, plural: str | None = None):
        self.verb, self.namespace, self.name, self.subresource, self.path = verb, namespace, name, subresource, path
        self.group = resource.group if resource else (group or "")
        self.plural = resource.plural if resource else (plural or "")

    @property
    def is_resource(self) -> bool:
        return bool(self.plural)

    def forbidden_message(self, user: User) -> str:
        """kube-apiserver's wording for a denied request."""
        if not self.is_resource:
            return f'User "{user.name}" cannot {self.verb} path "{self.path}"'
        resource = self.plural + (f"/{self.subresource}" if self.subresource else "")
        scope = f'in the namespace "{self.namespace}"' if self.namespace else "at the cluster scope"
        reason = (f'User "{user.name}" cannot {self.verb} resource "{resource}" in API group "{self.group}" '
                  f"{scope}")
        qualified = f"{self.plural}.{self.group}" if self.group else self.plural
        target = f'{qualified} "{self.name}"' if self.name else qualified
        return f"{target} is forbidden: {reason}"


def _matches(patterns, value: str) -> bool:
    return "*" in patterns or value in patterns


def rule_allows(rule: dict, request: Request) -> bool:
    if not _matches(rule.get("verbs") or [], request.verb):
        return False
    if not request.is_resource:
        return any(url == request.path or url == "*" or (url.endswith("*") and request.path.startswith(url[:-1]))
                   for url in rule.get("nonResourceURLs") or [])
    resource = request.plural + (f"/{request.subresource}" if request.subresource else "")
    if not _matches(rule.get("apiGroups") or [], request.group):
        return False
    if not (_matches(rule.get("resources") or [], resource)
            or f"{request.plural}/*" in (rule.get("resources") or [])):
        return False
    names = rule.get("resourceNames") or []
    return not names or request.name in names


