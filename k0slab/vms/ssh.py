"""SSH to lab VMs with fabric: per-lab ed25519 keys, command runs and file transfer.

When k0slab itself runs outside the network namespace that holds the lab bridges (set
K0SLAB_NETNS), connections go through `ip netns exec NS nc` so that no packet to a lab
address ever leaves from the host's main namespace.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fabric import Config, Connection

from k0slab.vms.remote import CommandResult, RemoteCommandError
from k0slab.core.state import write_private
from k0slab.core.waits import NotYet

CONNECT_TIMEOUT_S = 10


def generate_keypair(private_path: Path) -> str:
    """Write an OpenSSH ed25519 key pair (private 0600, public next to it); return the public line."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode()} k0slab\n"
    write_private(private_path, private)
    write_private(private_path.with_suffix(".pub"), line, mode=0o644)
    return line


def netns_proxy_command(host: str, port: int = 22) -> str | None:
    """The ProxyCommand that enters K0SLAB_NETNS, or None when we are already inside it (or none is set)."""
    netns = os.environ.get("K0SLAB_NETNS")
    if not netns:
        return None
    try:
        if os.stat(f"/run/netns/{netns}").st_ino == os.stat("/proc/self/ns/net").st_ino:
            return None
    except FileNotFoundError:
        pass
    return f"ip netns exec {shlex.quote(netns)} nc {host} {port}"


class SSHNode:
    """A Runner for one VM over SSH as root (see k0slab.remote.Runner)."""

    def __init__(self, name: str, host: str, key_path: Path) -> None:
        self.name = name
        self.host = host
        self.key_path = key_path
        self._connection: Connection | None = None

    def _connect(self) -> Connection:
        if self._connection is None or not self._connection.is_connected:
            config = Config(overrides={"load_ssh_configs": False})
            proxy = netns_proxy_command(self.host)
            connection = Connection(
                self.host,
                user="root",
                config=config,
                gateway=proxy,
                connect_timeout=CONNECT_TIMEOUT_S,
                connect_kwargs={
                    "key_filename": str(self.key_path),
                    "look_for_keys": False,
                    "allow_agent": False,
                    "banner_timeout": CONNECT_TIMEOUT_S,
                    "auth_timeout": CONNECT_TIMEOUT_S,
                },
            )
            # Lab VMs make a fresh host key at first boot and live on a private bridge; there is no
            # earlier key to compare with, so trust on first use is the only meaningful policy.
            connection.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
            connection.open()
            self._connection = connection
        return self._connection

    def probe(self) -> None:
        """Raise NotYet unless a root login works and runs a command (the real readiness signal)."""
        try:
            result = self.run("true", check=False, timeout=CONNECT_TIMEOUT_S)
        except (TimeoutError, OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            raise NotYet(f"ssh root@{self.host}: {exc or type(exc).__name__}") from None
        if not result.ok:
            raise NotYet(f"ssh root@{self.host}: `true` exited {result.exit_code}")

    def run(
        self, command: str, *, stdin: str | None = None, check: bool = True, timeout: float | None = None
    ) -> CommandResult:
        connection = self._connect()
        channel = connection.client.get_transport().open_session(timeout=CONNECT_TIMEOUT_S)
        if timeout is not None:
            channel.settimeout(timeout)
        channel.exec_command(command)
        if stdin is not None:
            channel.sendall(stdin.encode())
        channel.shutdown_write()
        stdout = _read_all(channel.makefile("rb"))
        stderr = _read_all(channel.makefile_stderr("rb"))
        exit_code = channel.recv_exit_status()
        channel.close()
        result = CommandResult(command=command, exit_code=exit_code, stdout=stdout, stderr=stderr)
        if check and not result.ok:
            raise RemoteCommandError(self.name, result)
        return result

    def put_text(self, text: str, path: str, mode: int = 0o644) -> None:
        self.put_bytes(text.encode(), path, mode)

    def put_bytes(self, data: bytes, path: str, mode: int = 0o644) -> None:
        self.run(
            f"mkdir -p {shlex.quote(os.path.dirname(path) or '/')} && "
            f"install -m {mode:o} /dev/null {shlex.quote(path)}"
        )
        sftp = self._connect().sftp()
        with sftp.open(path, "wb") as handle:
            handle.set_pipelined(True)
            handle.write(data)

    def put_file(self, local: Path, path: str, mode: int | None = None) -> None:
        connection = self._connect()
        connection.put(str(local), remote=path)
        if mode is not None:
            self.run(f"chmod {mode:o} {shlex.quote(path)}")

    def get_file(self, path: str, local: Path) -> None:
        self._connect().get(path, local=str(local))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _read_all(stream) -> str:
    return stream.read().decode(errors="replace")


def interactive_argv(host: str, key_path: Path, command: list[str]) -> list[str]:
    """An OpenSSH command line for an interactive shell (a real TTY is what users want there)."""
    argv = [
        "ssh", "-i", str(key_path), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
    ]
    proxy = netns_proxy_command("%h", 22)
    if proxy:
        argv += ["-o", f"ProxyCommand={proxy.replace(' 22', ' %p')}"]
    if command:
        argv.append("-t")
    return argv + [f"root@{host}", *command]
