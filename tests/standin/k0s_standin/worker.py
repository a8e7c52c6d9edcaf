"""The worker process: bootstrap, register, heartbeat."""
from __future__ import annotations

import base64
import json
import os
import signal
import sys
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .client import ClientError, HttpsClient, api_error_text
from .common import (
    KNOB_FILE,
    KUBELET_CONF,
    STATUS_SOCKET,
    VERSION,
    CliError,
    crash_if_asked,
    host_path,
    knob,
    log,
    read_text,
    with_ignored_oserror,
    write_file,
)
from .node import NodeIdentity
from .pki import pem_key, x509_name
from .rbac import BY_PLURAL
from .status import process_status, serve_status
from .tokens import Kubeconfig, b64, decode_join_token, make_kubeconfig


class WorkerAgent:
    """What kubelet does for k0slab's purposes: join with the token, register the node, post status."""

    def __init__(self, identity: NodeIdentity, stop: threading.Event, *, token_kubeconfig: Kubeconfig | None = None,
                 credentials: tuple[str, bytes, bytes, bytes] | None = None):
        self.identity, self.stop = identity, stop
        self.token_kubeconfig = token_kubeconfig
        self.credentials = credentials  # (server, ca_pem, cert_pem, key_pem) once the node has a client cert
        self.probe = {"Message": "", "Success": False}

    def run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                if self.credentials is None:
                    self.credentials = self.load_kubelet_conf() or self.bootstrap()
                self.register()
                backoff = 0.5
                self.heartbeat_until_error()
            except ClientError as exc:
                self.report_failure(str(exc))
            if self.stop.wait(backoff):
                return
            backoff = min(backoff * 2, 4.0)

    def report_failure(self, message: str) -> None:
        self.probe = {"Message": message, "Success": False}
        log("kubelet", "error", message + "; retrying")

    def load_kubelet_conf(self):
        if not os.path.exists(host_path(KUBELET_CONF)):
            return None
        try:
            config = Kubeconfig(read_text(KUBELET_CONF), KUBELET_CONF)
        except (CliError, OSError, KeyError):
            return None
        if self.token_kubeconfig and config.ca_pem != self.token_kubeconfig.ca_pem:
            log("kubelet", "info", f"{KUBELET_CONF} belongs to another cluster CA; bootstrapping again")
            return None
        return config.server, config.ca_pem, config.cert_pem, config.key_pem

    def bootstrap(self):
        """Trade the bootstrap token for a kubelet client certificate (TLS bootstrapping)."""
        join = self.token_kubeconfig
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509_name(f"system:node:{self.identity.name}", ["system:nodes"]))
               .sign(key, hashes.SHA256()))
        log("kubelet", "info", f"bootstrapping client certificate at {join.server} with bootstrap token "
                               f"{join.token.split('.')[0]}")
        client = HttpsClient(join.server, join.ca_pem, token=join.token)
        code, body = client.request("POST", BY_PLURAL[("certificates.k8s.io", "certificatesigningrequests")].path(),
                                    {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
                                     "metadata": {"generateName": "csr-"},
                                     "spec": {"request": b64(csr.public_bytes(serialization.Encoding.PEM)),
                                              "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                                              "usages": ["digital signature", "client auth"]}})
        if code == 401:
            raise ClientError("failed to bootstrap kubelet client certificate: Unauthorized: the bootstrap token "
                              "is unknown, expired or invalidated")
        if code != 201:
            raise ClientError(f"failed to bootstrap kubelet client certificate: {api_error_text(code, body)}")
        cert_pem = base64.b64decode(json.loads(body)["status"]["certificate"])
        write_file(KUBELET_CONF, make_kubeconfig(join.server, join.ca_pem, "kubelet",
                                                 {"client-certificate-data": b64(cert_pem),
                                                  "client-key-data": b64(pem_key(key))}), 0o600)
        log("kubelet", "info", f"client certificate issued, wrote {KUBELET_CONF}")
        return join.server, join.ca_pem, cert_pem, pem_key(key)

    def client(self) -> HttpsClient:
        server, ca_pem, cert_pem, key_pem = self.credentials
        return HttpsClient(server, ca_pem, cert_pem, key_pem)

    def check(self, code: int, body: bytes, what: str) -> None:
        if code in (401, 403):
            # The cluster no longer accepts this client certificate (e.g. it was reset): bootstrap again.
            self.credentials = None
        if code >= 300:
            raise ClientError(f"{what}: {api_error_text(code, body)}")

    def register(self) -> None:
        nodes = BY_PLURAL[("", "nodes")]
        node = self.identity.node_object()
        client = self.client()
        code, body = client.request("POST", nodes.path(), node)
        if code == 409:
            code, body = client.request("GET", nodes.path(name=self.identity.name))
            self.check(code, body, "failed to read node")
            existing = json.loads(body)
            existing["metadata"]["labels"] = {**existing["metadata"].get("labels", {}), **self.identity.labels}
            existing["status"] = node["status"]
            code, body = client.request("PUT", nodes.path(name=self.identity.name), existing)
        self.check(code, body, "unable to register node with API server")
        log("kubelet", "info", f'successfully registered node "{self.identity.name}" '
                               f"(InternalIP {self.identity.ip})")
        self.probe = {"Message": "", "Success": True}

    def heartbeat_until_error(self) -> None:
        stopped_logged = False
        while not self.stop.wait(knob("heartbeat_seconds")):
            if knob("stop_heartbeats"):
                if not stopped_logged:
                    log("kubelet", "warning", f"stop_heartbeats is set in {KNOB_FILE}: not posting node status")
                    stopped_logged = True
                continue
            if stopped_logged:
                log("kubelet", "info", "stop_heartbeats cleared: posting node status again")
                stopped_logged = False
            code, body = self.client().request("PUT", BY_PLURAL[("", "nodes")].path(name=self.identity.name) +
                                               "/status", {"status": self.identity.status()})
            if code == 404:
                raise ClientError(f'node "{self.identity.name}" not found; registering again')
            self.check(code, body, "error updating node status")
            self.probe = {"Message": "", "Success": True}


def read_token_file(path: str) -> str:
    """The token file must exist and be non-empty at every (re)start (contract §2, k0s issue 7202)."""
    hint = (': obtain a new token via "k0s token create ..." and store it in the file or reinstall this node '
            'via "k0s install --force ..." or "k0sctl apply --force ..."')
    try:
        data = read_text(path)
    except FileNotFoundError:
        raise CliError(f'token file "{path}" not found{hint}') from None
    except OSError as exc:
        raise CliError(f"failed to read token file: {exc}") from exc
    if not data.strip():
        raise CliError(f'token file "{path}" is empty{hint}')
    return data


def token_kubeconfig(token: str, expected_user: str) -> Kubeconfig:
    text = decode_join_token(token)
    try:
        config = Kubeconfig(text, "join token")
    except CliError as exc:
        raise CliError(f"failed to load kubeconfig from join token: {exc}") from exc
    if config.user_name != expected_user:
        raise CliError(f"wrong token type {config.user_name}, expected type: {expected_user}")
    return config


def wait_for_signal(stop: threading.Event) -> None:
    def handler(signum, _frame):
        log("k0s", "info", f"Shutting down k0s: received {signal.Signals(signum).name}")
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop.wait(1):
        pass


def run_worker(opts: dict) -> None:
    crash_if_asked("worker")
    if not opts.get("token-file"):
        raise CliError("no join token given: use --token-file [path], a CLI argument or K0S_TOKEN")
    token = read_token_file(opts["token-file"])
    join = token_kubeconfig(token, "kubelet-bootstrap")
    identity = NodeIdentity(opts.get("kubelet-extra-args", ""), opts.get("labels", ""), False, False)
    stop = threading.Event()
    agent = WorkerAgent(identity, stop, token_kubeconfig=join)
    log("worker", "info", f"starting worker {identity.name} ({VERSION}), API server {join.server}")
    status = serve_status(lambda: process_status("worker", sys.argv[1:], None, False, agent.probe))
    threading.Thread(target=agent.run, daemon=True).start()
    try:
        wait_for_signal(stop)
    finally:
        status.server_close()
        with_ignored_oserror(os.unlink, host_path(STATUS_SOCKET))


