"""A running controller and workers on 127.0.0.1: PKI, tokens, joins, heartbeats, kubectl, RBAC (contract §2-§4, §7)."""
from __future__ import annotations

import base64
import datetime as dt
import gzip
import http.client
import json
import re
import time

import pytest
import yaml
from conftest import start_controller, start_worker, wait_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PKI = "/var/lib/k0s/pki"


def load_cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                           cert.signature_hash_algorithm)
    return cert.issuer == ca.subject


def subject(cert: x509.Certificate, oid) -> list[str]:
    return [attribute.value for attribute in cert.subject.get_attributes_for_oid(oid)]


def decode_token(token: str) -> dict:
    return yaml.safe_load(gzip.decompress(base64.b64decode(token, validate=True)))


def join_api_get(node, token: str | None = None) -> int:
    connection = http.client.HTTPSConnection("127.0.0.1", node.join_port, context=node.ca_context(), timeout=5)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        connection.request("GET", "/v1beta1/ca", headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


# --- controller PKI and endpoints -------------------------------------------------------------------

def test_controller_creates_ca_and_admin_conf__contract_3(cluster):
    controller, _ = cluster
    ca = load_cert(controller.path(f"{PKI}/ca.crt").read_bytes())
    assert subject(ca, NameOID.COMMON_NAME) == ["kubernetes-ca"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    admin_conf = controller.path(f"{PKI}/admin.conf")
    assert admin_conf.stat().st_mode & 0o777 == 0o600
    kubeconfig = yaml.safe_load(admin_conf.read_text())
    # v1.31: spec.api.address; from v1.32 localhost (test_admin_conf_points_at_localhost_from_v1_32)
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{controller.api_port}"
    assert base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]) == \
        controller.path(f"{PKI}/ca.crt").read_bytes()
    admin = load_cert(base64.b64decode(kubeconfig["users"][0]["user"]["client-certificate-data"]))
    assert subject(admin, NameOID.COMMON_NAME) == ["kubernetes-admin"]
    assert subject(admin, NameOID.ORGANIZATION_NAME) == ["system:masters"]
    assert signed_by(admin, ca)


@pytest.mark.parametrize("port_attribute", ["api_port", "join_port"])
def test_serving_certs_are_signed_by_the_cluster_ca_with_sans__contract_2(cluster, port_attribute):
    controller, _ = cluster
    context = controller.ca_context()  # verifies the chain and that 127.0.0.1 is a SAN
    with context.wrap_socket(__import__("socket").create_connection(
            ("127.0.0.1", getattr(controller, port_attribute)), timeout=5), server_hostname="127.0.0.1") as tls:
        served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1"}


def test_readyz_prints_ok_through_kubectl__contract_7(cluster):
    controller, _ = cluster
    assert controller.ok("kubectl", "get", "--raw=/readyz") == "ok"


def test_version_endpoint_reports_k0s_kube_version__contract_7(cluster):
    controller, _ = cluster
    version = json.loads(controller.ok("kubectl", "get", "--raw=/version"))
    assert version["gitVersion"] == "v1.31.1+k0s"
    assert (version["major"], version["minor"]) == ("1", "31")


def test_join_api_answers_401_without_token__contract_7(cluster):
    controller, _ = cluster
    assert join_api_get(controller) == 401
    worker_token = decode_token(controller.ok("token", "create", "--role=worker").strip())
    assert join_api_get(controller, worker_token["users"][0]["user"]["token"]) == 401
    controller_token = decode_token(controller.ok("token", "create", "--role=controller").strip())
    assert join_api_get(controller, controller_token["users"][0]["user"]["token"]) == 200


def test_readyz_fails_until_the_ready_delay_passed__contract_7(make_node):
    node = make_node("slow")
    node.knobs(ready_delay_seconds=1.5)
    node.write_config()
    node.ok("install", "controller", "-c", "/etc/k0s/k0s.yaml")
    node.ok("start")
    wait_for(lambda: node.path(f"{PKI}/admin.conf").exists() and node.readyz()[0] == 500, 10, "API answering 500")
    early = node.k0s("kubectl", "get", "--raw=/readyz")
    assert early.returncode == 1 and "Error from server (InternalError)" in early.stderr
    node.wait_ready(timeout=10)
    assert node.ok("kubectl", "get", "--raw=/readyz") == "ok"


def test_precreated_ca_is_used_instead_of_a_new_one__contract_2(make_node):
    node = make_node("ca")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-ca")])
    start = dt.datetime.now(dt.UTC)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start)
          .not_valid_after(start + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    node.write(f"{PKI}/ca.crt", ca_pem.decode())
    node.write(f"{PKI}/ca.key", key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                                  serialization.NoEncryption()).decode())
    start_controller(node)
    assert node.path(f"{PKI}/ca.crt").read_bytes() == ca_pem
    token = decode_token(node.ok("token", "create").strip())
    assert base64.b64decode(token["clusters"][0]["cluster"]["certificate-authority-data"]) == ca_pem


# --- tokens -----------------------------------------------------------------------------------------

def test_worker_token_is_base64_gzip_kubeconfig__contract_4(cluster):
    controller, _ = cluster
    token = controller.ok("token", "create", "--role=worker", "--expiry", "10m").strip()
    kubeconfig = decode_token(token)
    assert [c["name"] for c in kubeconfig["clusters"]] == ["k0s"]
    assert [c["name"] for c in kubeconfig["contexts"]] == ["k0s"]
    assert kubeconfig["current-context"] == "k0s"
    assert kubeconfig["contexts"][0]["context"] == {"cluster": "k0s", "user": "kubelet-bootstrap"}
    assert kubeconfig["users"][0]["name"] == "kubelet-bootstrap"
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", kubeconfig["users"][0]["user"]["token"])
    cluster_entry = kubeconfig["clusters"][0]["cluster"]
    assert cluster_entry["server"] == f"https://127.0.0.1:{controller.api_port}"
    assert base64.b64decode(cluster_entry["certificate-authority-data"]) == \
        controller.path(f"{PKI}/ca.crt").read_bytes()

    token_id = kubeconfig["users"][0]["user"]["token"].split(".")[0]
    listing = controller.ok("token", "list")
    row = next(line for line in listing.splitlines() if line.startswith(token_id))
    assert row.split()[1] == "worker"
    expires = dt.datetime.fromisoformat(row.split()[2].replace("Z", "+00:00"))
    assert abs((expires - dt.datetime.now(dt.UTC)).total_seconds() - 600) < 30


def test_controller_token_targets_the_join_api__contract_4(cluster):
    controller, _ = cluster
    kubeconfig = decode_token(controller.ok("token", "create", "--role=controller").strip())
    assert kubeconfig["users"][0]["name"] == "controller-bootstrap"
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{controller.join_port}"


def test_token_invalidate_removes_it_from_the_list__contract_2(cluster):
    controller, _ = cluster
    token_id = decode_token(controller.ok("token", "create").strip())["users"][0]["user"]["token"][:6]
    assert token_id in controller.ok("token", "list", "--role=worker")
    assert controller.ok("token", "invalidate", token_id) == f"token {token_id} deleted successfully\n"
    assert token_id not in controller.ok("token", "list")


def test_token_create_needs_a_running_controller__contract_2(make_node):
    result = make_node("down").k0s("token", "create")
    assert (result.returncode, result.stderr.strip()) == (1, "Error: k0s is not running")


def test_token_role_is_checked__contract_2(cluster):
    controller, _ = cluster
    result = controller.k0s("token", "create", "--role=admin")
    assert result.returncode == 1
    assert 'unsupported role "admin"; supported roles are "controller" and "worker"' in result.stderr


def test_preshared_token_and_secret_join_a_worker_before_first_start__contract_2_contract_4(make_node):
    host, controller, worker = make_node("host"), make_node("ctl"), make_node("wrk")
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-ca")])
    now = dt.datetime.now(dt.UTC)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
    host.write("/work/ca.crt", ca_pem)
    host.ok("token", "pre-shared", "--role", "worker", "--cert", "/work/ca.crt",
            "--url", f"https://127.0.0.1:{controller.api_port}", "--valid", "1h", "--out", "/work/out")
    out = host.path("/work/out")
    token_file = next(out.glob("token_*"))
    token_id = token_file.name.removeprefix("token_")
    secret_file = out / f"bootstrap-token-{token_id}.yaml"
    secret = yaml.safe_load(secret_file.read_text())
    assert (secret["kind"], secret["type"]) == ("Secret", "bootstrap.kubernetes.io/token")
    assert secret["metadata"] == {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system",
                                  "creationTimestamp": None}
    data = secret["stringData"]
    assert data["token-id"] == token_id and len(data["token-secret"]) == 16
    # v1.30+ dropped usage-bootstrap-api-auth (k0s commit 29fba0c663): the worker usage alone.
    assert {key: value for key, value in data.items() if key.startswith("usage-")} == \
        {"usage-bootstrap-authentication": "true"}
    expires = dt.datetime.fromisoformat(data["expiration"].replace("Z", "+00:00"))
    assert abs((expires - now).total_seconds() - 3600) < 60
    kubeconfig = decode_token(token_file.read_text())
    assert kubeconfig["users"][0]["user"]["token"] == f"{token_id}.{data['token-secret']}"
    assert base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]).decode() == ca_pem

    # The worker starts first and keeps retrying; the controller gets the CA and Secret before its first start.
    start_worker(worker, token_file.read_text(), "--kubelet-extra-args=--hostname-override=early")
    controller.write(f"{PKI}/ca.crt", ca_pem)
    controller.write(f"{PKI}/ca.key", ca_key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                                           serialization.NoEncryption()).decode())
    controller.write(f"/var/lib/k0s/manifests/k0slab/{secret_file.name}", secret_file.read_text())
    wait_for(lambda: "connection to the server 127.0.0.1" in worker.log(), 10, "worker logging refused connections")
    start_controller(controller)
    wait_for(lambda: controller.ready_condition("early") == "True", 15, "pre-shared worker Ready")


# --- workers ----------------------------------------------------------------------------------------

def test_joined_nodes_carry_kubelet_labels_addresses_and_roles__contract_2_contract_5(cluster):
    controller, _ = cluster
    nodes = controller.nodes()
    assert set(nodes) >= {"cp1", "w1"}  # --hostname-override is lowercased like a node name
    worker = nodes["w1"]
    arch = {"x86_64": "amd64", "aarch64": "arm64"}[__import__("os").uname().machine]
    assert worker["metadata"]["labels"] == {
        **worker["metadata"]["labels"], "kubernetes.io/arch": arch, "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": "w1", "lab.k0slab.dev/pool": "blue", "tier": "edge"}
    assert not any(key.startswith("node-role.kubernetes.io/") for key in worker["metadata"]["labels"])
    assert {"type": "InternalIP", "address": "127.0.0.1"} in worker["status"]["addresses"]
    assert {"type": "Hostname", "address": "w1"} in worker["status"]["addresses"]
    assert worker["status"]["nodeInfo"]["architecture"] == arch
    assert worker["status"]["nodeInfo"]["kubeletVersion"] == "v1.31.1+k0s"
    ready = next(c for c in worker["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    assert "lastHeartbeatTime" in ready

    control_plane = nodes["cp1"]
    assert control_plane["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == "true"
    assert control_plane["spec"]["taints"] == [{"key": "node-role.kubernetes.io/control-plane",
                                                "effect": "NoSchedule"}]


def test_get_nodes_tables_match_kubectl__contract_7(cluster):
    controller, _ = cluster
    table = controller.ok("kubectl", "get", "nodes").splitlines()
    assert re.fullmatch(r"NAME +STATUS +ROLES +AGE +VERSION", table[0])
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["cp1"][1:3] == ["Ready", "control-plane"] and rows["cp1"][4] == "v1.31.1+k0s"
    assert rows["w1"][1:3] == ["Ready", "<none>"]
    assert table[0].index("STATUS") == len("NAME") + 3  # tabwriter padding 3 after the longest name

    wide = controller.ok("kubectl", "get", "nodes", "-o", "wide").splitlines()
    assert wide[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP",
                               "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    w1 = next(line for line in wide if line.startswith("w1 "))
    assert "127.0.0.1" in w1 and "<none>" in w1 and w1.endswith("containerd://1.7.22")

    assert controller.ok("kubectl", "get", "nodes", "-o", "name").split() == ["node/cp1", "node/w1"]
    single = json.loads(controller.ok("kubectl", "get", "node", "w1", "-o", "json"))
    assert (single["kind"], single["metadata"]["name"]) == ("Node", "w1")
    missing = controller.k0s("kubectl", "get", "node", "nope")
    assert (missing.returncode, missing.stderr.strip()) == (1, 'Error from server (NotFound): nodes "nope" not found')


def test_kubectl_shows_node_labels(cluster):
    controller, _ = cluster
    labels = controller.ok("kubectl", "get", "node", "w1", "--show-labels").splitlines()
    assert labels[0].split()[-1] == "LABELS" and "tier=edge" in labels[1]


def test_worker_status_reports_api_probe__contract_2(cluster):
    _, worker = cluster
    status = worker.ok("status")
    assert "Role: worker\n" in status and "Workloads: true\n" in status
    assert "Kube-api probing successful: true\n" in status
    assert "Service file: /etc/systemd/system/k0sworker.service\n" in status


def test_worker_writes_kubelet_conf_with_node_client_cert__contract_3(cluster):
    controller, worker = cluster
    kubelet_conf = yaml.safe_load(worker.path("/var/lib/k0s/kubelet.conf").read_text())
    cert = load_cert(base64.b64decode(kubelet_conf["users"][0]["user"]["client-certificate-data"]))
    assert subject(cert, NameOID.COMMON_NAME) == ["system:node:w1"]
    assert subject(cert, NameOID.ORGANIZATION_NAME) == ["system:nodes"]
    assert signed_by(cert, load_cert(controller.path(f"{PKI}/ca.crt").read_bytes()))


def test_worker_with_wrong_or_invalidated_token_is_refused_and_retries__contract_4(cluster, make_node):
    controller, _ = cluster
    token = controller.ok("token", "create").strip()
    kubeconfig = decode_token(token)
    token_id = kubeconfig["users"][0]["user"]["token"][:6]
    forged = kubeconfig | {"users": [{"name": "kubelet-bootstrap", "user": {"token": f"{token_id}.{'x' * 16}"}}]}
    forged_token = base64.b64encode(gzip.compress(yaml.safe_dump(forged).encode())).decode()
    controller.ok("token", "invalidate", token_id)

    for name, join_token in (("forged", forged_token), ("revoked", token)):
        worker = start_worker(make_node(name), join_token, f"--kubelet-extra-args=--hostname-override={name}")
        wait_for(lambda w=worker: w.log().count("Unauthorized") >= 2, 15, f"{name} refusals logged twice")
        assert name not in controller.nodes()


def test_refuse_first_joins_knob_is_retried_by_the_worker(make_node):
    controller = start_controller(make_node("ctl"), refuse_first_joins=2)
    worker = start_worker(make_node("wrk"), controller.ok("token", "create").strip(),
                          "--kubelet-extra-args=--hostname-override=patient")
    wait_for(lambda: controller.ready_condition("patient") == "True", 20, "worker Ready after refusals")
    log = worker.log()
    assert log.count("refused by fault knob refuse_first_joins") == 2
    assert log.index("refused by fault knob") < log.index('successfully registered node \\"patient\\"')


def test_stopped_heartbeats_turn_the_node_not_ready_after_grace(make_node):
    controller = start_controller(make_node("ctl"), node_grace_seconds=1.5)
    worker = start_worker(make_node("wrk"), controller.ok("token", "create").strip(),
                          "--kubelet-extra-args=--hostname-override=flaky")
    wait_for(lambda: controller.ready_condition("flaky") == "True", 15, "worker Ready")
    worker.knobs(heartbeat_seconds=0.5, stop_heartbeats=True)
    started = time.monotonic()
    wait_for(lambda: controller.ready_condition("flaky") == "Unknown", 10, "worker NotReady")
    assert time.monotonic() - started >= 1.0
    node = controller.nodes()["flaky"]
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], ready["message"]) == ("NodeStatusUnknown", "Kubelet stopped posting node status.")
    row = controller.ok("kubectl", "get", "nodes").splitlines()[1].split()
    assert row[:2] == ["flaky", "NotReady"]
    worker.knobs(heartbeat_seconds=0.5)
    wait_for(lambda: controller.ready_condition("flaky") == "True", 10, "worker Ready again")


@pytest.mark.parametrize("token_file, expected", [
    (None, 'token file "/etc/k0s/k0stoken" not found'),
    ("not base64 at all!", "failed to decode join token: illegal base64 data"),
])
def test_worker_fails_to_start_with_missing_or_broken_token_file__contract_2_issue_7202(make_node, token_file,
                                                                                         expected):
    node = make_node("wrk")
    if token_file is not None:
        node.write("/etc/k0s/k0stoken", token_file)
    result = node.k0s("worker", "--token-file", "/etc/k0s/k0stoken", timeout=20)
    assert result.returncode == 1
    assert expected in result.stderr


def test_worker_refuses_a_controller_token__contract_4(cluster, make_node):
    controller, _ = cluster
    node = make_node("wrk")
    node.write("/etc/k0s/k0stoken", controller.ok("token", "create", "--role=controller"))
    result = node.k0s("worker", "--token-file", "/etc/k0s/k0stoken", timeout=20)
    assert result.returncode == 1
    assert "wrong token type controller-bootstrap, expected type: kubelet-bootstrap" in result.stderr


# --- kubectl, kubeconfigs, RBAC ---------------------------------------------------------------------

def test_kubeconfig_admin_points_at_api_address__contract_2(cluster):
    controller, _ = cluster
    kubeconfig = yaml.safe_load(controller.ok("kubeconfig", "admin"))
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{controller.api_port}"
    cert = load_cert(base64.b64decode(kubeconfig["users"][0]["user"]["client-certificate-data"]))
    assert subject(cert, NameOID.ORGANIZATION_NAME) == ["system:masters"]


def test_admin_kubeconfig_works_from_another_machine_over_tls__contract_2(cluster, make_node):
    controller, _ = cluster
    laptop = make_node("laptop")
    laptop.write("/home/dev/.kube/config", controller.ok("kubeconfig", "admin"))
    nodes = laptop.ok("kubectl", "--kubeconfig", "/home/dev/.kube/config", "get", "nodes", "-o", "name")
    assert "node/w1" in nodes.split()
    via_env = laptop.k0s("kubectl", "get", "--raw=/readyz",
                         env=laptop.env(KUBECONFIG="/home/dev/.kube/config"))
    assert (via_env.returncode, via_env.stdout) == (0, "ok")

    foreign = make_node("foreign")
    start_controller(foreign)
    wrong_ca = yaml.safe_load(controller.ok("kubeconfig", "admin"))
    wrong_ca["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(
        foreign.path(f"{PKI}/ca.crt").read_bytes()).decode()
    laptop.write("/home/dev/wrong", yaml.safe_dump(wrong_ca))
    refused = laptop.k0s("kubectl", "--kubeconfig=/home/dev/wrong", "get", "nodes")
    assert refused.returncode == 1
    assert "x509: certificate signed by unknown authority" in refused.stderr


def test_kubeconfig_create_issues_a_user_certificate__contract_2(cluster):
    controller, _ = cluster
    kubeconfig = yaml.safe_load(controller.ok("kubeconfig", "create", "alice", "--groups", "lab-devs"))
    assert kubeconfig["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{controller.api_port}"
    assert kubeconfig["current-context"] == "k0s"
    user = kubeconfig["users"][0]
    assert user["name"] == "alice"
    cert_pem = base64.b64decode(user["user"]["client-certificate-data"])
    cert = load_cert(cert_pem)
    assert subject(cert, NameOID.COMMON_NAME) == ["alice"]
    assert subject(cert, NameOID.ORGANIZATION_NAME) == ["lab-devs"]
    assert cert.public_key().key_size == 2048 and isinstance(cert.public_key(), rsa.RSAPublicKey)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert signed_by(cert, load_cert(controller.path(f"{PKI}/ca.crt").read_bytes()))
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert abs(lifetime.total_seconds() - 8760 * 3600) < 600
    assert controller.path(f"{PKI}/alice.crt").read_bytes() == cert_pem
    assert controller.path(f"{PKI}/alice.key").exists()

    short = yaml.safe_load(controller.ok("kubeconfig", "create", "bob", "--certificate-expires-after", "1h"))
    short_cert = load_cert(base64.b64decode(short["users"][0]["user"]["client-certificate-data"]))
    assert abs((short_cert.not_valid_after_utc - short_cert.not_valid_before_utc).total_seconds() - 3600) < 600
    assert subject(short_cert, NameOID.ORGANIZATION_NAME) == []


def test_kubeconfig_create_has_no_reserved_names__contract_2(cluster):
    # Like k0s: "admin" is accepted and rewrites pki/admin.crt (k0slab refuses such names on its own).
    controller, _ = cluster
    before = {name: controller.path(f"{PKI}/{name}").read_bytes() for name in ("admin.crt", "admin.key")}
    try:
        kubeconfig = yaml.safe_load(controller.ok("kubeconfig", "create", "admin"))
        cert = x509.load_pem_x509_certificate(controller.path(f"{PKI}/admin.crt").read_bytes())
        assert kubeconfig["users"][0]["name"] == "admin"
        assert cert.subject.rfc4514_string() == "CN=admin"
    finally:
        for name, data in before.items():
            controller.path(f"{PKI}/{name}").write_bytes(data)
    bad = controller.k0s("kubeconfig", "create", "a/b")
    assert bad.returncode == 1 and "no such file or directory" in bad.stderr


NODE_READER = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: lab-node-reader
rules:
  - apiGroups: [""]
    resources: ["nodes"]
    verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: demo-node-reader
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: lab-node-reader
subjects:
  - kind: User
    name: demo
    apiGroup: rbac.authorization.k8s.io
"""
VIEW_BINDING = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: demo-view
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: view
subjects:
- kind: Group
  name: demo-group
  apiGroup: rbac.authorization.k8s.io
"""
FORBIDDEN_NODES = ('Error from server (Forbidden): nodes is forbidden: User "demo" cannot list resource "nodes" '
                   'in API group "" at the cluster scope')


def test_rbac_forbidden_then_view_then_custom_role__contract_2(cluster):
    controller, _ = cluster
    controller.write("/home/demo/config", controller.ok("kubeconfig", "create", "demo", "--groups", "demo-group"))
    as_demo = ("kubectl", "--kubeconfig", "/home/demo/config")

    denied = controller.k0s(*as_demo, "get", "nodes")
    assert (denied.returncode, denied.stdout, denied.stderr.strip()) == (1, "", FORBIDDEN_NODES)
    pods = controller.k0s(*as_demo, "get", "pods", "-n", "default")
    assert pods.returncode == 1
    assert pods.stderr.strip() == ('Error from server (Forbidden): pods is forbidden: User "demo" cannot list '
                                   'resource "pods" in API group "" in the namespace "default"')
    assert controller.k0s(*as_demo, "auth", "can-i", "list", "pods").stdout == "no\n"

    controller.write("/tmp/view.yaml", VIEW_BINDING)
    assert controller.ok("kubectl", "apply", "-f", "/tmp/view.yaml") == \
        "clusterrolebinding.rbac.authorization.k8s.io/demo-view created\n"
    assert controller.ok("kubectl", "apply", "-f", "/tmp/view.yaml") == \
        "clusterrolebinding.rbac.authorization.k8s.io/demo-view unchanged\n"
    listed = controller.k0s(*as_demo, "get", "pods", "-A")
    assert listed.returncode == 0 and listed.stdout.split()[:2] == ["NAMESPACE", "NAME"]
    can_list_pods = controller.k0s(*as_demo, "auth", "can-i", "list", "pods", "-n", "kube-system")
    assert (can_list_pods.returncode, can_list_pods.stdout) == (0, "yes\n")
    secrets = controller.k0s(*as_demo, "auth", "can-i", "get", "secrets")
    assert (secrets.returncode, secrets.stdout) == (1, "no\n")
    still_denied = controller.k0s(*as_demo, "get", "nodes")
    assert (still_denied.returncode, still_denied.stderr.strip()) == (1, FORBIDDEN_NODES)
    no_nodes = controller.k0s(*as_demo, "auth", "can-i", "list", "nodes")
    assert (no_nodes.returncode, no_nodes.stdout) == (1, "no\n")

    applied = controller.ok("kubectl", "apply", "-f", "-", stdin=NODE_READER)
    assert applied == ("clusterrole.rbac.authorization.k8s.io/lab-node-reader created\n"
                       "clusterrolebinding.rbac.authorization.k8s.io/demo-node-reader created\n")
    assert "w1" in controller.ok(*as_demo, "get", "nodes")
    assert controller.k0s(*as_demo, "auth", "can-i", "list", "nodes").returncode == 0

    assert controller.ok("kubectl", "delete", "-f", "-", stdin=NODE_READER) == (
        'clusterrole.rbac.authorization.k8s.io "lab-node-reader" deleted\n'
        'clusterrolebinding.rbac.authorization.k8s.io "demo-node-reader" deleted\n')
    assert controller.k0s(*as_demo, "get", "nodes").stderr.strip() == FORBIDDEN_NODES
    assert controller.ok("kubectl", "delete", "clusterrolebinding", "demo-view") == \
        'clusterrolebinding.rbac.authorization.k8s.io "demo-view" deleted\n'
    assert controller.k0s(*as_demo, "get", "pods", "-A").returncode == 1


def test_namespaced_role_binding_grants_only_its_namespace__contract_2(cluster):
    controller, _ = cluster
    controller.write("/home/carol/config", controller.ok("kubeconfig", "create", "carol"))
    manifest = """\
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: carol-edit
  namespace: team-a
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects:
  - {kind: User, name: carol, apiGroup: rbac.authorization.k8s.io}
"""
    assert controller.ok("kubectl", "apply", "-f", "-", stdin=manifest) == (
        "namespace/team-a created\nrolebinding.rbac.authorization.k8s.io/carol-edit created\n")
    as_carol = ("kubectl", "--kubeconfig", "/home/carol/config")
    assert controller.k0s(*as_carol, "auth", "can-i", "create", "deployments.apps", "-n", "team-a").stdout == "yes\n"
    assert controller.k0s(*as_carol, "auth", "can-i", "create", "deployments", "-n", "default").stdout == "no\n"
    empty = controller.k0s(*as_carol, "get", "pods", "-n", "team-a")
    assert (empty.returncode, empty.stderr) == (0, "No resources found in team-a namespace.\n")
    assert "team-a" in controller.ok("kubectl", "get", "namespaces")
    listing = controller.ok("kubectl", "get", "rolebindings", "-n", "team-a").splitlines()
    assert listing[0].split() == ["NAME", "ROLE", "AGE"] and listing[1].split()[:2] == ["carol-edit",
                                                                                         "ClusterRole/edit"]
    assert controller.ok("kubectl", "delete", "rolebinding", "carol-edit", "-n", "team-a") == \
        'rolebinding.rbac.authorization.k8s.io "carol-edit" deleted\n'
    assert controller.k0s(*as_carol, "auth", "can-i", "create", "deployments", "-n", "team-a").stdout == "no\n"
    assert controller.ok("kubectl", "delete", "namespace", "team-a") == 'namespace "team-a" deleted\n'


def test_builtin_cluster_roles_exist_and_unknown_is_not_found__contract_2(cluster):
    controller, _ = cluster
    names = controller.ok("kubectl", "get", "clusterroles", "-o", "name").split()
    assert {f"clusterrole.rbac.authorization.k8s.io/{n}" for n in ("cluster-admin", "admin", "edit", "view")} \
        <= set(names)
    view = json.loads(controller.ok("kubectl", "get", "clusterrole", "view", "-o", "json"))
    assert not any("nodes" in rule.get("resources", []) for rule in view["rules"])
    assert any("pods" in rule.get("resources", []) for rule in view["rules"])
    missing = controller.k0s("kubectl", "get", "clusterrole", "no-such-role")
    assert missing.returncode == 1
    assert missing.stderr.strip() == ('Error from server (NotFound): clusterroles.rbac.authorization.k8s.io '
                                      '"no-such-role" not found')


def test_get_pods_and_namespaces__contract_7(cluster):
    controller, _ = cluster
    default = controller.k0s("kubectl", "get", "pods")
    assert (default.returncode, default.stdout, default.stderr) == (0, "", "No resources found in default namespace.\n")
    as_json = json.loads(controller.ok("kubectl", "get", "pods", "-n", "kube-system", "-o", "json"))
    assert as_json["kind"] == "List" and as_json["items"]
    namespaces = controller.ok("kubectl", "get", "namespaces").splitlines()
    assert namespaces[0].split() == ["NAME", "STATUS", "AGE"]
    assert {line.split()[0] for line in namespaces[1:]} >= {"default", "kube-system", "kube-public",
                                                            "kube-node-lease"}


def test_kubectl_reports_refused_connection_like_kubectl(make_node):
    node = make_node("gone")
    node.write("/kc", f"""\
apiVersion: v1
clusters:
- cluster:
    server: https://127.0.0.1:{node.api_port}
  name: k0s
contexts:
- context: {{cluster: k0s, user: u}}
  name: k0s
current-context: k0s
kind: Config
users:
- name: u
  user: {{token: abcdef.0123456789abcdef}}
""")
    result = node.k0s("kubectl", "--kubeconfig", "/kc", "get", "nodes")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"The connection to the server 127.0.0.1:{node.api_port} was refused - "
                                     "did you specify the right host or port?")


def test_kubectl_without_kubeconfig_on_a_non_controller_fails__contract_2(make_node):
    result = make_node("bare").k0s("kubectl", "get", "nodes")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot stat k0s kubeconfig, is the server running?")


def test_bootstrap_token_user_cannot_list_nodes(cluster):
    """A join token is no admin credential: with RBAC, its bootstrap user may only request certificates."""
    controller, _ = cluster
    token = decode_token(controller.ok("token", "create").strip())
    controller.write("/tmp/bootstrap.conf", yaml.safe_dump(token))
    version = controller.k0s("kubectl", "--kubeconfig", "/tmp/bootstrap.conf", "get", "--raw=/version")
    assert version.returncode == 0  # k0sctl's pre-join reachability check (contract §7)
    denied = controller.k0s("kubectl", "--kubeconfig", "/tmp/bootstrap.conf", "get", "nodes")
    assert denied.returncode == 1 and 'cannot list resource "nodes"' in denied.stderr

