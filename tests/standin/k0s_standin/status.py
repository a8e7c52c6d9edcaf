"""The status socket (contract §2: `k0s status` reads /run/k0s/status.sock)."""
from __future__ import annotations

import http.client
import http.server
import json
import os
import socket
import socketserver
import threading
import urllib.parse

from .apiserver import JsonHandler
from .common import DATA_DIR, PKI_DIR, RUN_DIR, STATUS_SOCKET, UNIT_DIR, VERSION, host_path


class StatusServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class StatusHandler(JsonHandler):
    def do_GET(self):
        if urllib.parse.urlsplit(self.path).path == "/status":
            self.send_body(200, self.server.status_info())
        else:
            self.send_body(404, "404 page not found\n", "text/plain")


def serve_status(status_info) -> StatusServer:
    path = host_path(STATUS_SOCKET)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    server = StatusServer(path, StatusHandler)
    server.status_info = status_info
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=5)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.socket_path)


def read_status() -> dict | None:
    """The running k0s process's status, or None when no process answers on the socket."""
    connection = _UnixHTTPConnection(host_path(STATUS_SOCKET))
    try:
        connection.request("GET", "/status")
        response = connection.getresponse()
        return json.loads(response.read()) if response.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def process_status(role: str, args: list[str], config: dict | None, single: bool, probe: dict) -> dict:
    unit = "k0scontroller" if role.startswith("controller") else "k0sworker"
    return {"Version": VERSION, "Pid": os.getpid(), "PPid": os.getppid(), "Role": role,
            "SysInit": "linux-systemd", "StubFile": f"{UNIT_DIR}/{unit}.service", "Output": "",
            "Workloads": role != "controller", "SingleNode": single, "Args": args,
            "WorkerToAPIConnectionStatus": probe, "ClusterConfig": config,
            "K0sVars": {"DataDir": DATA_DIR, "CertRootDir": PKI_DIR, "RunDir": RUN_DIR,
                        "AdminKubeConfigPath": PKI_DIR + "/admin.conf"}}


