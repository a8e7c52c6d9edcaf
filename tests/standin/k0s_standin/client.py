"""The HTTPS client used by kubectl, the worker and the token commands."""
from __future__ import annotations

import http.client
import http.server
import json
import os
import ssl
import tempfile
import urllib.parse

from .common import VERSION


class ClientError(Exception):
    """Transport failure, worded like client-go / kubectl."""


class HttpsClient:
    def __init__(self, server: str, ca_pem: bytes | None, cert_pem: bytes | None = None,
                 key_pem: bytes | None = None, token: str | None = None):
        parsed = urllib.parse.urlsplit(server)
        self.host, self.port = parsed.hostname, parsed.port or 443
        self.server, self.token = server, token
        self.context = ssl.create_default_context(cadata=ca_pem.decode()) if ca_pem else \
            ssl.create_default_context()
        if cert_pem and key_pem:
            with tempfile.TemporaryDirectory() as scratch:
                cert_file, key_file = os.path.join(scratch, "c"), os.path.join(scratch, "k")
                with open(cert_file, "wb") as handle:
                    handle.write(cert_pem)
                with open(os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as handle:
                    handle.write(key_pem)
                self.context.load_cert_chain(cert_file, key_file)

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 10) -> tuple[int, bytes]:
        connection = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=timeout)
        headers = {"Accept": "application/json", "User-Agent": f"k0s-standin/{VERSION}"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        except ConnectionRefusedError as exc:
            raise ClientError(f"The connection to the server {self.host}:{self.port} was refused - "
                              "did you specify the right host or port?") from exc
        except ssl.SSLCertVerificationError as exc:
            detail = "x509: certificate signed by unknown authority" if exc.verify_code in (19, 20, 21) \
                else f"x509: {exc.verify_message}"
            raise ClientError(f"Unable to connect to the server: tls: failed to verify certificate: {detail}") \
                from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ClientError(f'Unable to connect to the server: dial tcp {self.host}:{self.port}: {exc}') from exc
        finally:
            connection.close()


def api_error_text(code: int, body: bytes) -> str:
    """kubectl's `Error from server (Reason): message` for a non-2xx answer."""
    try:
        status = json.loads(body)
        reason, message = status.get("reason") or "", status.get("message") or ""
    except ValueError:
        status, reason, message = None, "", body.decode(errors="replace").strip()
    if code == 401:
        return "error: You must be logged in to the server (Unauthorized)"
    if status is None or not reason:
        return (f'Error from server (InternalError): an error on the server ("{message}") has prevented '
                "the request from succeeding")
    return f"Error from server ({reason}): {message}"


