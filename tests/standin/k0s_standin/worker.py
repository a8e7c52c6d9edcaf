"""The worker process: bootstrap, register, heartbeat."""
from __future__ import annotations

import base64
import json
import os
import secrets
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
    now_utc,
    read_text,
    rfc3339,
    with_ignored_oserror,
    write_file,
)
from .images import minor, release_images
from .kubelet import CNI_COMPONENT, NodeFacts, pod_status, sandbox_image_failure
from .node import NodeIdentity
from .pki import pem_key, x509_name
from .rbac import BY_PLURAL
from .status import process_status, serve_status
from .tokens import Kubeconfig, b64, decode_join_token, make_kubeconfig


BOOTSTRAP_ATTEMPTS = 10  # retry-go's default, used by k0s's worker bootstrap


class WorkerAgent:
    """What kubelet does for k0slab's purposes: join with the token, register the node, post status."""

    def __init__(self, identity: NodeIdentity, stop: threading.Event, *, token_kubeconfig: Kubeconfig | None = None,
                 credentials: tuple[str, bytes, bytes, bytes] | None = None):
        self.identity, self.stop = identity, stop
        self.token_kubeconfig = token_kubeconfig
        self.credentials = credentials  # (server, ca_pem, cert_pem, key_pem) once the node has a client cert
        self.probe = {"Message": "", "Success": False}
        self.facts = NodeFacts()  # the bundles present now, when k0s starts on this node
        self.network_ready = False
        self.sandbox_failures: dict[str, dict] = {}  # pod uid -> its FailedCreatePodSandBox event
        self.gave_up = False  # bootstrapping failed BOOTSTRAP_ATTEMPTS times: the process exits
        self.registered_once = False

    def run(self) -> None:
        """Join, load the worker profile, register, heartbeat. Until the first registration every failure
        counts: after BOOTSTRAP_ATTEMPTS, with retry-go's default backoff (1 s doubling: about 8.5 minutes),
        the worker gives up and exits (k0s pkg/component/worker/utils.go, config/loader.go); systemd starts
        it again after RestartSec=10. The knob retry_delay_scale shortens the delays for tests. Later
        failures are retried without end."""
        backoff, bootstrap_failures = 0.5, 0
        while not self.stop.is_set():
            delay = backoff
            try:
                if self.credentials is None:
                    self.credentials = self.load_kubelet_conf() or self.bootstrap()
                if not self.registered_once:
                    self.load_worker_profile()
                self.register()
                self.registered_once = True
                backoff = 0.5
                self.heartbeat_until_error()
            except ClientError as exc:
                if not self.registered_once and self.token_kubeconfig is not None:
                    bootstrap_failures += 1
                    if bootstrap_failures >= BOOTSTRAP_ATTEMPTS:
                        self.probe = {"Message": str(exc), "Success": False}
                        log("kubelet", "error", f"giving up after {BOOTSTRAP_ATTEMPTS} attempts: {exc}")
                        self.gave_up = True
                        self.stop.set()
                        return
                    delay = 2.0 ** (bootstrap_failures - 1) * knob("retry_delay_scale")
                self.report_failure(str(exc))
            if self.stop.wait(delay):
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

    def load_worker_profile(self) -> None:
        """The worker's profile ConfigMap, named for its own Kubernetes minor (k0s pkg/component/worker/config/
        loader.go): a controller of another minor has none, so such a worker never starts."""
        name = f"worker-config-default-{minor()}"
        code, body = self.client().request("GET", BY_PLURAL[("", "configmaps")].path("kube-system", name))
        if code == 404:
            raise ClientError(f"failed to load configuration for worker profile: configmaps \"{name}\" not found")
        self.check(code, body, "failed to load configuration for worker profile")

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
            self.sync_pods()
            code, body = self.client().request("PUT", BY_PLURAL[("", "nodes")].path(name=self.identity.name) +
                                               "/status", {"status": self.identity.status(self.network_ready)})
            if code == 404:
                raise ClientError(f'node "{self.identity.name}" not found; registering again')
            self.check(code, body, "error updating node status")
            self.probe = {"Message": "", "Success": True}

    def sync_pods(self) -> None:
        """Report the status of every pod bound to this node; the node's network is ready once its CNI runs."""
        pods = BY_PLURAL[("", "pods")]
        client = self.client()
        code, body = client.request("GET", pods.path())
        self.check(code, body, "failed to list pods")
        pause = release_images()["pause"]
        mine = [pod for pod in json.loads(body)["items"] if pod.get("spec", {}).get("nodeName") == self.identity.name]
        cni = [pod for pod in mine if pod["metadata"].get("labels", {}).get("k8s-app") == CNI_COMPONENT]
        cni_status = [pod_status(self.facts, pod, pause, False) for pod in cni]
        self.network_ready = any(status["conditions"][-1]["status"] == "True" for status in cni_status)
        sandbox_failure = sandbox_image_failure(self.facts, pause)
        for pod in mine:
            if sandbox_failure is not None:
                self.report_sandbox_failure(pod, sandbox_failure)
            status = pod_status(self.facts, pod, pause, self.network_ready)
            status["hostIP"] = self.identity.ip
            if pod.get("spec", {}).get("hostNetwork"):
                status["podIP"] = self.identity.ip
            if without_times(status) == without_times(pod.get("status", {})):
                continue  # like the kubelet's status manager: post only changes
            pod["status"] = status
            code, body = client.request("PUT", pods.path(namespace=pod["metadata"]["namespace"],
                                                         name=pod["metadata"]["name"]) + "/status", pod)
            if code != 404:  # deleted meanwhile
                self.check(code, body, "failed to update pod status")

    def report_sandbox_failure(self, pod: dict, failure: str) -> None:
        """The kubelet's Warning event for a sandbox it failed to create, once per sync attempt; the
        event recorder folds repeats into one event whose count climbs."""
        meta = pod["metadata"]
        stamp = rfc3339(now_utc())
        event = self.sandbox_failures.get(meta["uid"])
        if event is None:
            event = {"apiVersion": "v1", "kind": "Event", "type": "Warning", "reason": "FailedCreatePodSandBox",
                     "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
                     "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": meta["namespace"],
                                        "name": meta["name"], "uid": meta["uid"]},
                     "source": {"component": "kubelet", "host": self.identity.name},
                     "firstTimestamp": stamp, "count": 0}
            self.sandbox_failures[meta["uid"]] = event
        event.update(count=event["count"] + 1, lastTimestamp=stamp,
                     message=f"Failed to create pod sandbox: rpc error: code = Unknown desc = {failure}")
        events = BY_PLURAL[("", "events")]
        client = self.client()
        if event["count"] == 1:
            code, body = client.request("POST", events.path(namespace=meta["namespace"]), event)
        else:
            code, body = client.request("PUT", events.path(namespace=meta["namespace"],
                                                           name=event["metadata"]["name"]), event)
        self.check(code, body, "failed to record event")


def without_times(value):
    """A pod status without its timestamps, to tell a real change from the clock moving on."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if not k.endswith(("Time", "At"))}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


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
    if agent.gave_up:
        raise CliError("failed to bootstrap client configuration: " + agent.probe["Message"])


