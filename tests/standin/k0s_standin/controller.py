"""The controller process."""
from __future__ import annotations

import hmac
import json
import os
import socket
import ssl
import sys
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from .apiserver import ApiHandler, ApiLogic, JoinApiHandler, TLSServer
from .common import version_at_least
from .common import (
    BOOTSTRAP_SECRET_TYPE,
    BOOTSTRAP_TOKEN_RE,
    DATA_DIR,
    HOST_MODE,
    KNOB_FILE,
    MANIFESTS_DIR,
    PKI_DIR,
    RUN_DIR,
    STATUS_SOCKET,
    VERSION,
    CliError,
    crash_if_asked,
    host_path,
    knob,
    log,
    now_utc,
    parse_rfc3339,
    with_ignored_oserror,
    write_file,
)
from .config import load_config
from .node import NodeIdentity
from .pki import ClusterCA, pem_cert, pem_key
from .rbac import BY_KIND, BY_PLURAL, User
from .status import process_status, serve_status
from .store import ApiError, Store, secret_values
from .tokens import b64, make_kubeconfig
from .images import minor, release_images
from .workloads import bind_target, missing_system_pods
from .worker import WorkerAgent, wait_for_signal
from .yamlsubset import YamlError, yaml_load_all


class Controller:
    def __init__(self, opts: dict):
        self.opts = opts
        self.config = load_config(opts.get("config"))
        self.single = bool(opts.get("single"))
        self.with_worker = self.single or bool(opts.get("enable-worker"))
        self.role = "controller+worker" if self.with_worker else "controller"
        self.started = time.monotonic()
        self.ready_latched = False
        self.join_refusals = 0
        self.refusal_lock = threading.Lock()
        self.manifest_mtimes: dict[str, float] = {}
        self.ca: ClusterCA | None = None
        self.store: Store | None = None
        self.api: ApiLogic | None = None
        self.worker: WorkerAgent | None = None

    def ready(self) -> bool:
        if not self.ready_latched and time.monotonic() - self.started >= knob("ready_delay_seconds"):
            self.ready_latched = True
            log("controller", "info", "kube-apiserver is ready (readyz ok)")
        return self.ready_latched

    def join_refusal(self) -> str | None:
        with self.refusal_lock:
            limit = knob("refuse_first_joins")
            if self.join_refusals >= limit:
                return None
            self.join_refusals += 1
            message = (f"join attempt {self.join_refusals} of the first {limit} refused by fault knob "
                       f"refuse_first_joins ({KNOB_FILE}); try again")
        log("controller", "warning", message)
        return message

    # Bootstrap tokens -------------------------------------------------------------------------------
    def token_secret(self, token: str) -> dict | None:
        match = BOOTSTRAP_TOKEN_RE.match(token)
        if not match:
            return None
        try:
            secret = self.store.get(BY_PLURAL[("", "secrets")], "kube-system", f"bootstrap-token-{match.group(1)}")
        except ApiError:
            return None
        values = secret_values(secret)
        if secret.get("type") != BOOTSTRAP_SECRET_TYPE or values.get("token-id") != match.group(1) \
                or not hmac.compare_digest(values.get("token-secret", ""), match.group(2)):
            return None
        expiration = values.get("expiration")
        if expiration:
            try:
                if parse_rfc3339(expiration) <= now_utc():
                    return None
            except ValueError:
                return None
        return values

    def token_valid(self, token: str, usage: str) -> bool:
        values = self.token_secret(token)
        return values is not None and values.get(usage) == "true"

    def bootstrap_user(self, token: str) -> User | None:
        if not self.token_valid(token, "usage-bootstrap-authentication"):
            log("controller", "warning", f"rejected bootstrap token {token.split('.')[0]!r}: unknown, "
                                         "expired, invalidated or not a worker token")
            return None
        extra = [g for g in self.token_secret(token).get("auth-extra-groups", "").split(",") if g]
        return User(f"system:bootstrap:{token.split('.')[0]}",
                    ["system:bootstrappers", *extra, "system:authenticated"])

    # Start-up ---------------------------------------------------------------------------------------
    def prepare(self) -> None:
        for directory in (DATA_DIR, PKI_DIR, MANIFESTS_DIR, RUN_DIR):
            os.makedirs(host_path(directory), exist_ok=True)
        os.chmod(host_path(PKI_DIR), 0o751)
        self.ca = ClusterCA.ensure()
        self.write_admin_conf()
        self.store = Store()
        # The worker profile workers of this minor load before they start (k0s pkg/component/controller/
        # workerconfig/reconciler.go, `worker-config-<profile>-<minor>`).
        self.store.put(BY_PLURAL[("", "configmaps")], {
            "metadata": {"name": f"worker-config-default-{minor()}", "namespace": "kube-system"},
            "data": {"pauseImage": json.dumps({"image": release_images()["pause"].rsplit(":", 1)[0],
                                               "version": release_images()["pause"].rsplit(":", 1)[1]})}})
        self.api = ApiLogic(self)
        self.apply_manifests()

    def write_admin_conf(self) -> None:
        cert_path, key_path = host_path(PKI_DIR + "/admin.crt"), host_path(PKI_DIR + "/admin.key")
        if os.path.exists(cert_path) and os.path.exists(key_path):
            with open(cert_path, "rb") as crt, open(key_path, "rb") as key:
                cert_pem, key_pem = crt.read(), key.read()
            if x509.load_pem_x509_certificate(cert_pem).issuer != self.ca.cert.subject:
                cert_pem = None
        else:
            cert_pem = None
        if cert_pem is None:
            cert, key = self.ca.issue_rsa_client("kubernetes-admin", ["system:masters"], 365 * 86400)
            cert_pem, key_pem = pem_cert(cert), pem_key(key)
            write_file(PKI_DIR + "/admin.key", key_pem, 0o600)
            write_file(PKI_DIR + "/admin.crt", cert_pem, 0o644)
        write_file(PKI_DIR + "/admin.conf",
                   make_kubeconfig(self.admin_server(), self.ca.cert_pem, "user",
                                   {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)},
                                   cluster="local", context="Default"), 0o600)

    def admin_server(self) -> str:
        """admin.conf's server: spec.api.address up to v1.31, localhost from v1.32 unless onlyBindToAddress
        (k0s cmd/controller/certificates.go; pkg/apis/k0s/v1beta1/api.go LocalURL)."""
        api = self.config["spec"]["api"]
        if version_at_least(1, 32) and not api.get("onlyBindToAddress"):
            return f"https://localhost:{api['port']}"
        host = f"[{api['address']}]" if ":" in api["address"] else api["address"]
        return f"https://{host}:{api['port']}"

    def server_context(self, name: str, client_ca: bool) -> ssl.SSLContext:
        api = self.config["spec"]["api"]
        key = ec.generate_private_key(ec.SECP256R1())
        names = [api["address"], *(api.get("sans") or []), "127.0.0.1", "localhost", "kubernetes",
                 "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
                 socket.gethostname().lower()]
        if api.get("externalAddress"):
            names.append(api["externalAddress"])
        cert = self.ca.issue(key.public_key(), "kube-apiserver" if name == "server" else "k0s-api",
                             client=False, server_names=names)
        write_file(f"{PKI_DIR}/{name}.key", pem_key(key), 0o600)
        write_file(f"{PKI_DIR}/{name}.crt", pem_cert(cert), 0o644)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(host_path(f"{PKI_DIR}/{name}.crt"), host_path(f"{PKI_DIR}/{name}.key"))
        if client_ca:
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cadata=self.ca.cert_pem.decode())
        return context

    def bind_address(self) -> str:
        api = self.config["spec"]["api"]
        return api["address"] if HOST_MODE or api.get("onlyBindToAddress") else "0.0.0.0"

    def listen(self, port_field: str, handler, name: str, client_ca: bool) -> TLSServer:
        port = self.config["spec"]["api"][port_field]
        try:
            server = TLSServer((self.bind_address(), port), handler, self.server_context(name, client_ca), self)
        except OSError as exc:
            raise CliError(f"failed to listen on {self.bind_address()}:{port}: {exc.strerror}") from exc
        threading.Thread(target=server.serve_forever, daemon=True).start()
        log("controller", "info", f"listening on https://{self.bind_address()}:{port} ({name})")
        return server

    # Manifests (contract §2: the controller applies /var/lib/k0s/manifests at start) ----------------
    def apply_manifests(self) -> None:
        root = host_path(MANIFESTS_DIR)
        for directory, _, files in os.walk(root):
            for file_name in sorted(files):
                if not file_name.endswith((".yaml", ".yml", ".json")):
                    continue
                path = os.path.join(directory, file_name)
                mtime = os.stat(path).st_mtime
                if self.manifest_mtimes.get(path) == mtime:
                    continue
                self.manifest_mtimes[path] = mtime
                self.apply_manifest_file(path, os.path.relpath(path, root))

    def apply_manifest_file(self, path: str, shown: str) -> None:
        try:
            with open(path, encoding="utf-8") as handle:
                documents = yaml_load_all(handle.read())
        except (OSError, YamlError) as exc:
            log("applier", "error", f"failed to read manifest {shown}: {exc}")
            return
        for document in documents:
            resource = BY_KIND.get((document.get("apiVersion"), document.get("kind"))) \
                if isinstance(document, dict) else None
            if resource is None:
                log("applier", "warning", f"manifest {shown}: kind {document.get('kind')!r} is not supported by "
                                          "the stand-in; skipped" if isinstance(document, dict) else
                    f"manifest {shown}: not an object; skipped")
                continue
            try:
                self.store.put(resource, document)
                log("applier", "info", f"applied {resource.singular_qualified}/"
                                       f"{document['metadata'].get('name')} from {shown}")
            except ApiError as exc:
                log("applier", "error", f"failed to apply {shown}: {exc.message}")

    def remove_expired_tokens(self) -> None:
        secrets_resource = BY_PLURAL[("", "secrets")]
        for secret in self.store.list(secrets_resource, "kube-system"):
            expiration = secret_values(secret).get("expiration")
            if secret.get("type") == BOOTSTRAP_SECRET_TYPE and expiration:
                try:
                    expired = parse_rfc3339(expiration) <= now_utc()
                except ValueError:
                    expired = False
                if expired:
                    with_ignored_api_error(self.store.delete, secrets_resource, "kube-system",
                                           secret["metadata"]["name"])
                    log("tokencleaner", "info", f"deleted expired bootstrap token {secret['metadata']['name']}")

    def reconcile_pods(self) -> None:
        """k0s's kube-system stack per node, and the scheduler's binding of pods without a node."""
        nodes = self.store.list(BY_PLURAL[("", "nodes")])
        pods_resource = BY_PLURAL[("", "pods")]
        pods = self.store.list(pods_resource)
        spec = self.config["spec"]
        provider = (spec.get("network") or {}).get("provider") or "kuberouter"
        pull_policy = (spec.get("images") or {}).get("default_pull_policy") or "IfNotPresent"
        for pod in missing_system_pods(nodes, pods, provider, pull_policy):
            with_ignored_api_error(lambda new=pod: self.store.put(pods_resource, new, create=True))
        unbound = [pod for pod in pods if not pod.get("spec", {}).get("nodeName")]
        for index, pod in enumerate(unbound):
            target = bind_target(nodes, index)
            if target is not None:
                pod["spec"]["nodeName"] = target
                with_ignored_api_error(self.store.put, pods_resource, pod)

    def housekeeping(self, stop: threading.Event) -> None:
        while not stop.wait(2):
            self.apply_manifests()
            self.remove_expired_tokens()
            self.reconcile_pods()

    def start_embedded_worker(self, stop: threading.Event) -> None:
        """--enable-worker / --single: the node registers itself with a kubelet certificate from the CA."""
        identity = NodeIdentity(self.opts.get("kubelet-extra-args", ""), self.opts.get("labels", ""), True,
                                taint=not (self.single or self.opts.get("no-taints")))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.ca.issue(key.public_key(), f"system:node:{identity.name}", ["system:nodes"])
        host = self.config["spec"]["api"]["address"]
        server = f"https://{host}:{self.config['spec']['api']['port']}"
        self.worker = WorkerAgent(identity, stop, credentials=(server, self.ca.cert_pem, pem_cert(cert), pem_key(key)))
        threading.Thread(target=self.worker.run, daemon=True).start()

    def status_info(self) -> dict:
        probe = self.worker.probe if self.worker else {"Message": "", "Success": False}
        return process_status(self.role, sys.argv[1:], self.config, self.single, probe)

    def run(self) -> None:
        crash_if_asked("controller")
        log("controller", "info", f"starting k0s controller {VERSION} (role {self.role})")
        self.prepare()
        servers = [self.listen("port", ApiHandler, "server", True)]
        if not self.single:
            servers.append(self.listen("k0sApiPort", JoinApiHandler, "k0s-api", False))
        stop = threading.Event()
        status = serve_status(self.status_info)
        threading.Thread(target=self.housekeeping, args=(stop,), daemon=True).start()
        if self.with_worker:
            self.start_embedded_worker(stop)
        log("controller", "info", "Controller has started")
        try:
            wait_for_signal(stop)
        finally:
            for server in servers:
                server.shutdown()
                server.server_close()
            status.server_close()
            with_ignored_oserror(os.unlink, host_path(STATUS_SOCKET))
            self.store.save()


def with_ignored_api_error(func, *args):
    try:
        func(*args)
    except ApiError:
        pass


