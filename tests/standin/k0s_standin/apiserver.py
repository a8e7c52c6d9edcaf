"""The controller's HTTPS API server and join API."""
from __future__ import annotations

import base64
import http.client
import http.server
import json
import re
import secrets
import ssl
import time
import urllib.parse
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import NameOID

from .common import VERSION, knob, kube_version, log
from .node import node_arch
from .pki import pem_cert, pem_key
from .rbac import ANONYMOUS, BY_PLURAL, RBAC, Request, Resource, User, rule_allows
from .store import ApiError
from .tokens import b64

if TYPE_CHECKING:
    from .controller import Controller

class TLSServer(http.server.ThreadingHTTPServer):
    """TLS handshakes run in the per-connection thread, so one slow client cannot stall accept()."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, context: ssl.SSLContext, controller: Controller):
        self.ssl_context, self.controller = context, controller
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        request.settimeout(30)
        try:
            request = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            request.close()
            return
        super().finish_request(request, client_address)


class JsonHandler(http.server.BaseHTTPRequestHandler):
    server_version = "k0s-standin"

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by BaseHTTPRequestHandler
        return

    def send_body(self, code: int, body, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else (
            body.encode() if isinstance(body, str) else json.dumps(body, indent=2).encode())
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_json(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(length) or b"{}")
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"invalid JSON body: {exc}") from exc

    def bearer_token(self) -> str | None:
        header = self.headers.get("Authorization", "")
        return header[7:].strip() if header.startswith("Bearer ") else None


class ApiHandler(JsonHandler):
    """The subset of kube-apiserver k0slab (and the stand-in's own worker) talks to, on spec.api.port."""

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method: str) -> None:
        controller: Controller = self.server.controller
        path = urllib.parse.urlsplit(self.path).path.rstrip("/") or "/"
        try:
            if path == "/readyz":
                if controller.ready():
                    self.send_body(200, "ok", "text/plain; charset=utf-8")
                else:
                    self.send_body(500, "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n"
                                        "readyz check failed\n", "text/plain; charset=utf-8")
                return
            if path in ("/livez", "/healthz"):
                self.send_body(200, "ok", "text/plain; charset=utf-8")
                return
            # Read the body before any early answer: closing with unread data makes the client see a reset.
            body = self.read_json() if method in ("POST", "PUT") else {}
            if not controller.ready():
                raise ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
            user = self.authenticate(controller)
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            code, answer = controller.api.handle(user, method, path, lambda: body, query)
            self.send_body(code, answer, "text/plain" if isinstance(answer, str) else "application/json")
        except ApiError as exc:
            self.send_body(exc.code, exc.status())

    def authenticate(self, controller: Controller) -> User:
        token = self.bearer_token()
        if token is not None:
            user = controller.bootstrap_user(token)
            if user is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            return user
        peer = self.connection.getpeercert() or {}
        fields = [pair for rdn in peer.get("subject", ()) for pair in rdn]
        common_names = [value for key, value in fields if key == "commonName"]
        if not common_names:
            return ANONYMOUS
        groups = [value for key, value in fields if key == "organizationName"]
        return User(common_names[0], groups + ["system:authenticated"])


class JoinApiHandler(JsonHandler):
    """k0s's join API on spec.api.k0sApiPort: GET /v1beta1/ca answers 401 without a controller token."""

    def do_GET(self):
        controller: Controller = self.server.controller
        if urllib.parse.urlsplit(self.path).path != "/v1beta1/ca":
            self.send_body(404, "404 page not found\n", "text/plain; charset=utf-8")
            return
        token = self.bearer_token()
        if not token or not controller.token_valid(token, "usage-controller-join"):
            self.send_body(401, "Unauthorized\n", "text/plain; charset=utf-8")
            return
        refusal = controller.join_refusal()
        if refusal:
            self.send_body(503, refusal + "\n", "text/plain; charset=utf-8")
            return
        ca = controller.ca
        self.send_body(200, {"ca.crt": b64(ca.cert_pem), "ca.key": b64(pem_key(ca.key))})


class ApiLogic:
    """Resource routing, authorization and the handful of special endpoints."""

    def __init__(self, controller: Controller):
        self.controller = controller
        self.store = controller.store

    def handle(self, user: User, method: str, path: str, body_reader, query: dict | None = None) -> tuple:
        if path == "/version":
            self.authorize(user, Request("get", path=path))
            return 200, self.version_info()
        resource, namespace, name, subresource = self.route(path)
        verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update", "DELETE": "delete"}[method]
        request = Request(verb, resource, namespace, name, subresource)
        self.authorize(user, request)
        if resource.plural == "selfsubjectaccessreviews":
            return 201, self.access_review(user, body_reader())
        if resource.plural == "certificatesigningrequests" and method == "POST":
            return 201, self.sign_csr(user, body_reader())
        if resource.plural == "nodes" and subresource == "status":
            return 200, self.node_status(name, body_reader())
        if resource.plural == "pods" and subresource == "status":
            return 200, self.pod_status(namespace, name, body_reader())
        if resource.plural == "pods" and subresource == "log":
            return 200, self.pod_log(namespace, name, query)
        if method == "GET" and name:
            return 200, self.decorate(resource, self.store.get(resource, namespace, name))
        if method == "GET":
            items = [self.decorate(resource, obj) for obj in self.store.list(resource, namespace)]
            return 200, {"apiVersion": resource.api_version, "kind": resource.kind + "List",
                         "metadata": {"resourceVersion": str(self.store.revision)}, "items": items}
        if method == "DELETE":
            self.store.delete(resource, namespace, name)
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                         "details": {"name": name, "group": resource.group, "kind": resource.plural}}
        body = body_reader()
        if namespace and resource.namespaced:
            body.setdefault("metadata", {})["namespace"] = namespace
        if resource.plural == "nodes":
            # Registration carries the node's first status, so it counts as a heartbeat.
            self.store.heartbeat_seen[body.get("metadata", {}).get("name", "")] = time.monotonic()
        if method == "PUT":
            if body.get("metadata", {}).get("name") != name:
                raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
            self.store.get(resource, namespace, name)
            return 200, self.store.put(resource, body)
        if body.get("metadata", {}).get("generateName") and not body["metadata"].get("name"):
            body["metadata"]["name"] = body["metadata"]["generateName"] + secrets.token_hex(3)[:5]
        return 201, self.store.put(resource, body, create=True)

    @staticmethod
    def route(path: str) -> tuple[Resource, str, str, str]:
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["api", "v1"]:
            group, rest = "", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3 and parts[2] == "v1":
            group, rest = parts[1], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        resource = BY_PLURAL.get((group, rest[0] if rest else ""))
        if resource is None or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return resource, namespace, rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else ""

    @staticmethod
    def version_info() -> dict:
        major, minor = re.match(r"v(\d+)\.(\d+)", VERSION).groups()
        arch = node_arch()
        return {"major": major, "minor": minor, "gitVersion": kube_version(), "gitCommit": "0" * 40,
                "gitTreeState": "clean", "buildDate": "2024-09-12T00:00:00Z", "goVersion": "go1.22.7",
                "compiler": "gc", "platform": f"linux/{arch}"}

    def authorize(self, user: User, request: Request) -> None:
        if not self.allowed(user, request):
            if user is ANONYMOUS and request.is_resource:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            raise ApiError(403, "Forbidden", request.forbidden_message(user))

    def allowed(self, user: User, request: Request) -> bool:
        if "system:masters" in user.groups:
            return True
        if "system:nodes" in user.groups and request.plural == "configmaps" and request.verb == "get":
            return request.namespace == "kube-system" and request.name.startswith("worker-config-")
        if "system:nodes" in user.groups and request.plural == "pods":
            # The kubelet reads the pods and reports their status (the Node authorizer narrows this to its own).
            return request.verb in ("get", "list", "watch") or (request.verb == "update"
                                                                and request.subresource == "status")
        if "system:nodes" in user.groups and request.plural == "events":
            # ClusterRole system:node lets kubelets record events (bootstrappolicy's eventsRule).
            return request.verb in ("create", "update", "get")
        if "system:nodes" in user.groups and request.plural == "nodes":
            # The Node authorizer: a kubelet reads every node but writes only its own.
            own = user.name == f"system:node:{request.name}"
            return request.verb in ("get", "list", "watch", "create") or own
        return any(rule_allows(rule, request) for rule in self.rules_for(user, request.namespace))

    def rules_for(self, user: User, namespace: str):
        def bound(subjects) -> bool:
            return any((s.get("kind") == "User" and s.get("name") == user.name)
                       or (s.get("kind") == "Group" and s.get("name") in user.groups) for s in subjects or [])

        def role_rules(ref: dict, binding_namespace: str) -> list:
            kind = "clusterroles" if ref.get("kind") == "ClusterRole" else "roles"
            try:
                role = self.store.get(BY_PLURAL[(RBAC, kind)], binding_namespace, ref.get("name", ""))
            except ApiError:
                return []
            return role.get("rules") or []

        for binding in self.store.list(BY_PLURAL[(RBAC, "clusterrolebindings")]):
            if bound(binding.get("subjects")) and binding.get("roleRef", {}).get("kind") == "ClusterRole":
                yield from role_rules(binding["roleRef"], "")
        if namespace:
            for binding in self.store.list(BY_PLURAL[(RBAC, "rolebindings")], namespace):
                if bound(binding.get("subjects")):
                    yield from role_rules(binding.get("roleRef", {}), namespace)

    def access_review(self, user: User, review: dict) -> dict:
        attributes = (review.get("spec") or {}).get("resourceAttributes")
        if attributes:
            request = Request(attributes.get("verb", ""), None, attributes.get("namespace", ""),
                              attributes.get("name", ""), attributes.get("subresource", ""),
                              group=attributes.get("group", ""), plural=attributes.get("resource", "*"))
        else:
            non_resource = (review.get("spec") or {}).get("nonResourceAttributes") or {}
            request = Request(non_resource.get("verb", ""), path=non_resource.get("path", ""))
        review["status"] = {"allowed": self.allowed(user, request)}
        return review

    def sign_csr(self, user: User, csr_object: dict) -> dict:
        """Kubelet client CSRs from bootstrap tokens are approved and signed at once."""
        refusal = self.controller.join_refusal()
        if refusal:
            raise ApiError(503, "ServiceUnavailable", refusal)
        try:
            csr = x509.load_pem_x509_csr(base64.b64decode(csr_object["spec"]["request"]))
        except (KeyError, ValueError) as exc:
            raise ApiError(400, "BadRequest", f"invalid certificate request: {exc}") from exc
        common_name = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        organizations = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        if not common_name or not common_name[0].value.startswith("system:node:") or organizations != ["system:nodes"]:
            raise ApiError(403, "Forbidden", "only kubelet client certificates (CN=system:node:<name>, "
                                             "O=system:nodes) are signed for bootstrap tokens")
        cert = self.controller.ca.issue(csr.public_key(), common_name[0].value, organizations)
        node = common_name[0].value.removeprefix("system:node:")
        log("csrapprover", "info", f"approved and signed kubelet client certificate for node {node} "
                                   f"(requested by {user.name})")
        csr_object.setdefault("metadata", {})["name"] = f"csr-{secrets.token_hex(3)[:5]}"
        csr_object["status"] = {"certificate": b64(pem_cert(cert)),
                                "conditions": [{"type": "Approved", "status": "True", "reason": "AutoApproved"}]}
        return csr_object

    def node_status(self, name: str, update: dict) -> dict:
        """A kubelet heartbeat: the controller remembers when it last heard from the node."""
        resource = BY_PLURAL[("", "nodes")]
        node = self.store.get(resource, "", name)
        node["status"] = update.get("status", node.get("status", {}))
        self.store.heartbeat_seen[name] = time.monotonic()
        return self.store.put(resource, node, persist=False)

    def pod_status(self, namespace: str, name: str, update: dict) -> dict:
        resource = BY_PLURAL[("", "pods")]
        pod = self.store.get(resource, namespace, name)
        pod["status"] = update.get("status", pod.get("status", {}))
        return self.store.put(resource, pod, persist=False)

    def pod_log(self, namespace: str, name: str, query: dict) -> str:
        """A container's log. The stand-in keeps only the crashed run's output (the termination message the
        kubelet reports); a running container of the stand-in writes nothing."""
        pod = self.store.get(BY_PLURAL[("", "pods")], namespace, name)
        statuses = pod.get("status", {}).get("containerStatuses") or []
        container = (query.get("container") or [""])[0]
        status = next((s for s in statuses if s["name"] == container), statuses[0] if statuses else None)
        if status is None or (container and status["name"] != container):
            raise ApiError(400, "BadRequest", f'container "{container}" in pod "{name}" is not valid' if container
                           else f'container in pod "{name}" is waiting to start: ContainerCreating')
        waiting = status.get("state", {}).get("waiting")
        terminated = status.get("lastState", {}).get("terminated")
        if waiting and not terminated:
            raise ApiError(400, "BadRequest", f'container "{status["name"]}" in pod "{name}" is waiting to start: '
                                              f'{waiting.get("reason", "")}')
        if (query.get("previous") or ["false"])[0] == "true" and not terminated:
            raise ApiError(400, "BadRequest", f'previous terminated container "{status["name"]}" in pod "{name}" '
                                              "not found")
        lines = terminated["message"].splitlines() if terminated else []
        tail = int((query.get("tailLines") or ["-1"])[0])
        if tail >= 0:
            lines = lines[len(lines) - tail:] if tail else []
        return "".join(line + "\n" for line in lines)

    def decorate(self, resource: Resource, obj: dict) -> dict:
        """Nodes whose heartbeats stopped longer than the grace period read as NotReady (node lifecycle)."""
        if resource.plural != "nodes":
            return obj
        name = obj["metadata"]["name"]
        seen = self.store.heartbeat_seen.get(name)
        if seen is not None and time.monotonic() - seen <= knob("node_grace_seconds"):
            return obj
        for condition in obj.get("status", {}).get("conditions", []):
            condition.update(status="Unknown", reason="NodeStatusUnknown",
                             message="Kubelet stopped posting node status.")
        return obj


