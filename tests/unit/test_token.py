"""Pre-shared join tokens and their bootstrap-token Secrets (contract section 4)."""
from __future__ import annotations

import base64
import datetime as dt
import gzip
import re

import pytest
import yaml

from k0slab.cluster import pki
from k0slab.core.errors import K0slabError
from k0slab.cluster.k0s import token


@pytest.fixture(scope="module")
def ca_cert() -> bytes:
    return pki.create_ca()[0]


def test_bootstrap_tokens_have_the_kubernetes_format_and_differ():
    pairs = {token.new_bootstrap_token() for _ in range(50)}
    assert len(pairs) == 50
    for token_id, secret in pairs:
        assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", f"{token_id}.{secret}")


def test_worker_token_round_trip(ca_cert):
    token_id, secret = token.new_bootstrap_token()
    text = token.worker_token(ca_cert, "https://192.168.50.11:6443", token_id, secret)
    # The wire format itself: standard base64 of gzip of YAML.
    raw = yaml.safe_load(gzip.decompress(base64.b64decode(text, validate=True)))
    config = token.decode_token(text)
    assert raw == config
    assert config["kind"] == "Config" and config["current-context"] == "k0s"
    (cluster,) = config["clusters"]
    assert cluster["name"] == "k0s"
    assert cluster["cluster"]["server"] == "https://192.168.50.11:6443"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == ca_cert
    (context,) = config["contexts"]
    assert context == {"name": "k0s", "context": {"cluster": "k0s", "user": "kubelet-bootstrap"}}
    assert config["users"] == [{"name": "kubelet-bootstrap", "user": {"token": f"{token_id}.{secret}"}}]


def test_controller_token_uses_the_controller_user(ca_cert):
    text = token.join_token("controller", ca_cert, "https://10.0.0.1:9443", "abcdef", "0123456789abcdef")
    config = token.decode_token(text)
    assert config["users"][0]["name"] == "controller-bootstrap"
    assert config["clusters"][0]["cluster"]["server"] == "https://10.0.0.1:9443"


@pytest.mark.parametrize("url", ["http://10.0.0.1:6443", "https://10.0.0.1", "10.0.0.1:6443", ""])
def test_join_url_must_be_https_with_port(ca_cert, url):
    with pytest.raises(K0slabError, match="https://HOST:PORT"):
        token.worker_token(ca_cert, url, "abcdef", "0123456789abcdef")


@pytest.mark.parametrize("token_id,secret", [("ABCDEF", "0123456789abcdef"), ("abcde", "0123456789abcdef"),
                                             ("abcdef", "0123456789abcde"), ("abcdef", "0123456789abcdeF")])
def test_malformed_pairs_are_refused_without_echoing_the_secret(ca_cert, token_id, secret):
    with pytest.raises(K0slabError, match="malformed") as error:
        token.worker_token(ca_cert, "https://10.0.0.1:6443", token_id, secret)
    assert secret not in str(error.value)


@pytest.mark.parametrize("garbage", ["not base64!", base64.b64encode(b"plain").decode(),
                                     base64.b64encode(gzip.compress(b"- a list")).decode()])
def test_decode_refuses_non_tokens(garbage):
    with pytest.raises(K0slabError, match="not a k0s join token"):
        token.decode_token(garbage)


def test_worker_secret_manifest():
    expiry = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    doc = yaml.safe_load(token.bootstrap_secret_manifest("abcdef", "0123456789abcdef", "worker", expiry, "lab join"))
    assert doc["apiVersion"] == "v1" and doc["kind"] == "Secret"
    assert doc["metadata"] == {"name": "bootstrap-token-abcdef", "namespace": "kube-system"}
    assert doc["type"] == "bootstrap.kubernetes.io/token"
    assert doc["stringData"] == {
        "token-id": "abcdef",
        "token-secret": "0123456789abcdef",
        "description": "lab join",
        "expiration": "2030-01-02T01:04:05Z",  # converted to UTC
        "usage-bootstrap-api-auth": "true",
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-api-worker-calls": "true",
    }
    # Every value is a YAML string, as the Secret API requires ("true", not true).
    assert all(isinstance(value, str) for value in doc["stringData"].values())


def test_controller_secret_manifest_without_expiry():
    doc = yaml.safe_load(token.bootstrap_secret_manifest("abcdef", "0123456789abcdef", "controller", None, "x"))
    data = doc["stringData"]
    assert "expiration" not in data
    assert data["usage-controller-join"] == "true" and data["usage-bootstrap-api-auth"] == "true"
    assert data["usage-bootstrap-authentication"] == "false"
    assert "usage-bootstrap-api-worker-calls" not in data


def test_manifest_refuses_bad_role_and_naive_expiry():
    with pytest.raises(K0slabError, match="role 'admin'"):
        token.bootstrap_secret_manifest("abcdef", "0123456789abcdef", "admin", None, "x")
    with pytest.raises(K0slabError, match="time zone"):
        token.bootstrap_secret_manifest("abcdef", "0123456789abcdef", "worker", dt.datetime(2030, 1, 1), "x")


def test_manifest_path_is_in_the_k0slab_manifests_folder():
    assert token.secret_manifest_path("abcdef") == "/var/lib/k0s/manifests/k0slab/bootstrap-token-abcdef.yaml"
    with pytest.raises(K0slabError):
        token.secret_manifest_path("../etc")
