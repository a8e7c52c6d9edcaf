"""Pre-shared join tokens, made on the host without a running cluster (contract section 4).

A k0s join token is base64(gzip(kubeconfig)) whose user authenticates with a Kubernetes bootstrap
token `<id>.<secret>`. The controller only honours it once a matching bootstrap-token Secret exists;
k0slab writes that Secret into the controller's manifests folder, which k0s applies at start. This is
what `k0s token pre-shared` does, so workers can begin joining while the controller still boots.
The Secret must not outlive the join: lab code removes the manifest and invalidates the token after
every worker joined, and the Secret carries an expiration in any case.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import gzip
import re
import secrets
import string
from typing import Any
from urllib.parse import urlsplit

import yaml

from k0slab.core.errors import K0slabError

# k0s applies every manifest below /var/lib/k0s/manifests at start; a folder of our own keeps ours apart.
MANIFESTS_DIR = "/var/lib/k0s/manifests/k0slab"
ROLES = ("worker", "controller")
# The kubeconfig user name is how k0s tells a worker token from a controller token.
_TOKEN_USERS = {"worker": "kubelet-bootstrap", "controller": "controller-bootstrap"}
_ALPHABET = string.ascii_lowercase + string.digits
_ID_RE = re.compile(r"[a-z0-9]{6}")
_SECRET_RE = re.compile(r"[a-z0-9]{16}")


def secret_name(token_id: str) -> str:
    return f"bootstrap-token-{_checked_id(token_id)}"


def secret_manifest_path(token_id: str) -> str:
    """Where the token's Secret manifest goes on the controller (remove it after the join)."""
    return f"{MANIFESTS_DIR}/{secret_name(token_id)}.yaml"


def _checked_id(token_id: str) -> str:
    if not _ID_RE.fullmatch(token_id or ""):
        raise K0slabError(f"bootstrap token id {token_id!r} is malformed", "it must be 6 of [a-z0-9]")
    return token_id


def _checked_pair(token_id: str, token_secret: str) -> None:
    _checked_id(token_id)
    if not _SECRET_RE.fullmatch(token_secret or ""):
        # The secret itself is never echoed: it is a credential.
        raise K0slabError(f"bootstrap token secret for {token_id} is malformed", "it must be 16 of [a-z0-9]")


def _checked_role(role: str) -> str:
    if role not in ROLES:
        raise K0slabError(f"token role {role!r} is unknown", f"use one of: {', '.join(ROLES)}")
    return role


def new_bootstrap_token() -> tuple[str, str]:
    """A fresh (token id, token secret) from the OS's CSPRNG."""

    def draw(length: int) -> str:
        return "".join(secrets.choice(_ALPHABET) for _ in range(length))

    return draw(6), draw(16)


def join_token(role: str, ca_cert_pem: bytes, url: str, token_id: str, token_secret: str) -> str:
    """A k0s join token: workers use the API URL (:6443), controllers the join API URL (:9443)."""
    _checked_role(role)
    _checked_pair(token_id, token_secret)
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.port is None:
        raise K0slabError(f"join URL {url!r} is not https://HOST:PORT", "e.g. https://192.168.50.11:6443")
    user = _TOKEN_USERS[role]
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "k0s", "cluster": {
            "server": url, "certificate-authority-data": base64.b64encode(ca_cert_pem).decode(),
        }}],
        "contexts": [{"name": "k0s", "context": {"cluster": "k0s", "user": user}}],
        "current-context": "k0s",
        "preferences": {},
        "users": [{"name": user, "user": {"token": f"{token_id}.{token_secret}"}}],
    }
    text = yaml.safe_dump(kubeconfig, sort_keys=False)
    return base64.b64encode(gzip.compress(text.encode(), compresslevel=9)).decode()


def worker_token(ca_cert_pem: bytes, api_url: str, token_id: str, token_secret: str) -> str:
    return join_token("worker", ca_cert_pem, api_url, token_id, token_secret)


def decode_token(token: str) -> dict[str, Any]:
    """The kubeconfig inside a join token, for tests and diagnostics; K0slabError if it is not one."""
    try:
        text = gzip.decompress(base64.b64decode(token.strip(), validate=True)).decode()
        config = yaml.safe_load(text)
    except (binascii.Error, OSError, EOFError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise K0slabError(f"not a k0s join token: {error}", "a token is base64 of a gzipped kubeconfig") from error
    if not isinstance(config, dict) or config.get("kind") != "Config":
        raise K0slabError("not a k0s join token: it holds no kubeconfig", "a token is base64 of a gzipped kubeconfig")
    return config


def bootstrap_secret_manifest(
    token_id: str, token_secret: str, role: str, expiration: dt.datetime | None, description: str
) -> str:
    """The bootstrap-token Secret that makes the controller accept the token, as YAML."""
    _checked_pair(token_id, token_secret)
    data = {"token-id": token_id, "token-secret": token_secret, "description": description}
    if expiration is not None:
        if expiration.tzinfo is None:
            raise K0slabError("token expiration has no time zone", "pass an aware datetime, e.g. in UTC")
        data["expiration"] = expiration.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # Both roles may call the k0s join API; the remaining usages mirror what `k0s token create` sets.
    data["usage-bootstrap-api-auth"] = "true"
    if _checked_role(role) == "worker":
        data["usage-bootstrap-authentication"] = "true"
        data["usage-bootstrap-api-worker-calls"] = "true"
    else:
        data["usage-bootstrap-authentication"] = "false"
        data["usage-bootstrap-signing"] = "false"
        data["usage-controller-join"] = "true"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(token_id), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": data,
    }
    return yaml.safe_dump(secret, sort_keys=False)
