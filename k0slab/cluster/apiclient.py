"""The lab's API server, asked from the host with the lab's own kubeconfig: plain HTTPS GETs.

For the questions "does the API answer" and "is every node Ready" as a user would ask them, from
outside the guests. Asking through `k0s kubectl` on the controller costs an SSH round trip and the
start of a kubectl in a guest (seconds under TCG) per question; a GET from here costs milliseconds,
and it proves the kubeconfig itself (its server address, CA and client certificate) at the same
time. Both paths are standard kube-apiserver ones: `/readyz` prints `ok` when ready (the check
k0sctl makes), `/api/v1/nodes` lists the Node objects.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from k0slab.core.errors import K0slabError
from k0slab.core.waits import NotYet

REQUEST_TIMEOUT_S = 10.0


class LabAPI:
    """The API server a kubeconfig names, with that kubeconfig's CA and client certificate."""

    def __init__(self, kubeconfig: Path, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        cluster, user = _current_cluster_and_user(kubeconfig)
        server = urlsplit(str(cluster.get("server", "")))
        if server.scheme != "https" or not server.hostname:
            raise K0slabError(f"{kubeconfig} names no https server ({cluster.get('server')!r})",
                              "fetch it again with: invoke lab.up")
        self.host, self.port = server.hostname, server.port or 443
        try:
            self._context = ssl.create_default_context(
                cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
            _load_client_certificate(self._context, base64.b64decode(user["client-certificate-data"]),
                                     base64.b64decode(user["client-key-data"]))
        except (KeyError, ValueError, ssl.SSLError) as exc:
            raise K0slabError(f"{kubeconfig} has no usable CA or client certificate ({exc})",
                              "fetch it again with: invoke lab.up") from None

    def get(self, path: str) -> str:
        """The body of GET path; NotYet (a wait retries it) when the API cannot answer it now."""
        connection = http.client.HTTPSConnection(self.host, self.port, context=self._context,
                                                 timeout=self.timeout_s)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
            raise NotYet(f"GET https://{self.host}:{self.port}{path}: {type(exc).__name__}: {exc}") from None
        finally:
            connection.close()
        if response.status != 200:
            raise NotYet(f"GET {path}: HTTP {response.status}: {body.strip()[:200]}")
        return body

    def readyz(self) -> None:
        body = self.get("/readyz").strip()
        if body != "ok":
            raise NotYet(f"/readyz: {body[:200]}")

    def nodes(self) -> list[dict[str, Any]]:
        try:
            return json.loads(self.get("/api/v1/nodes")).get("items", [])
        except json.JSONDecodeError as exc:
            raise NotYet(f"/api/v1/nodes: not JSON ({exc})") from None


def _current_cluster_and_user(kubeconfig: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        config = yaml.safe_load(kubeconfig.read_text())
        contexts = {c["name"]: c["context"] for c in config.get("contexts", [])}
        context = contexts.get(config.get("current-context")) or next(iter(contexts.values()))
        clusters = {c["name"]: c["cluster"] for c in config["clusters"]}
        users = {u["name"]: u["user"] for u in config["users"]}
        return clusters[context["cluster"]], users[context["user"]]
    except (OSError, yaml.YAMLError, AttributeError, KeyError, StopIteration, TypeError) as exc:
        raise K0slabError(f"cannot read the lab's kubeconfig {kubeconfig} ({type(exc).__name__}: {exc})",
                          "fetch it again with: invoke lab.up") from None


def _load_client_certificate(context: ssl.SSLContext, certificate: bytes, key: bytes) -> None:
    """ssl loads a certificate only from files: they live in a private folder only while it reads them."""
    with tempfile.TemporaryDirectory(prefix="k0slab-api-") as folder:
        pem = Path(folder) / "client.pem"
        with open(os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(certificate.rstrip(b"\n") + b"\n" + key)
        context.load_cert_chain(pem)
