"""SSH to lab VMs with fabric: per-lab ed25519 keys, pinned host keys, command runs and file transfer.

Each node's host key is pinned in the lab's known_hosts before k0slab sends it anything: read from
the guest over the QEMU guest agent before the first SSH (libvirt), or, where a backend has no
agent channel (Vagrant), recorded on first contact. A key that differs from the pin is refused, and
vm.shell / lab.ssh (OpenSSH) read the same file with StrictHostKeyChecking=yes.

When k0slab itself runs outside the network namespace that holds the lab bridges (set
K0SLAB_NETNS), connections go through `ip netns exec NS nc` so that no packet to a lab
address ever leaves from the host's main namespace.
"""
from __future__ import annotations

import base64
import contextlib
import os
import shlex
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fabric import Config, Connection

from k0slab.core.errors import K0slabError
from k0slab.vms.remote import CommandResult, RemoteCommandError, RemoteCommandTimeout
from k0slab.core.state import write_private
from k0slab.core.waits import NotYet

CONNECT_TIMEOUT_S = 10
# The bound of a remote command that names none: the longest it may stay silent (no output, no
# exit). Long steps (k0s backup, bundle imports, smoke waits) pass their own.
COMMAND_TIMEOUT_S = 300.0
HOST_KEY_TYPE = "ssh-ed25519"  # the only host key k0slab's image makes (image._customise)
# Nodes of one lab come up in parallel threads; each rewrites the lab's known_hosts once.
_PIN_LOCK = threading.Lock()


def pinned_key(known_hosts: Path, host: str) -> str | None:
    """The base64 host key pinned for host, or None."""
    if not known_hosts.is_file():
        return None
    for line in known_hosts.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == host and fields[1] == HOST_KEY_TYPE:
            return fields[2]
    return None


def pin_host_key(known_hosts: Path, host: str, public_key_line: str) -> None:
    """Record `ssh-ed25519 AAAA... [comment]` as host's key (replacing no other pin: forget it first)."""
    fields = public_key_line.split()
    if len(fields) < 2 or fields[0] != HOST_KEY_TYPE:
        raise K0slabError(f"host key {public_key_line[:40]!r} of {host} is not an {HOST_KEY_TYPE} key",
                          "the node image makes an ed25519 host key at first boot; rebuild the image")
    try:
        paramiko.Ed25519Key(data=base64.b64decode(fields[1], validate=True))
    except (ValueError, paramiko.SSHException) as exc:
        raise K0slabError(f"host key of {host} is malformed ({exc})", "recreate the VM") from None
    with _PIN_LOCK:
        existing = pinned_key(known_hosts, host)
        if existing == fields[1]:
            return
        if existing is not None:
            raise K0slabError(f"{host} already has another pinned host key", "forget it first")
        text = known_hosts.read_text() if known_hosts.is_file() else ""
        write_private(known_hosts, text + f"{host} {HOST_KEY_TYPE} {fields[1]}\n")


def forget_host_key(known_hosts: Path, host: str) -> None:
    """Drop host's pin: k0slab does this when it deletes the VM, so a new VM on the address can be pinned."""
    with _PIN_LOCK:
        if not known_hosts.is_file():
            return
        kept = [line for line in known_hosts.read_text().splitlines() if line.split()[:1] != [host]]
        write_private(known_hosts, "".join(f"{line}\n" for line in kept))


class NodeUnreachable(K0slabError):
    """SSH to a node failed at the connection level (down, booting, wrong namespace)."""


class _PinOnFirstContact(paramiko.MissingHostKeyPolicy):
    """For a node without a pin: record the key it shows (trust on first use) when allowed, else refuse."""

    def __init__(self, node: str, known_hosts: Path, allowed: bool) -> None:
        self.node, self.known_hosts, self.allowed = node, known_hosts, allowed

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.allowed:
            raise K0slabError(f"{self.node} ({hostname}) has no pinned host key in {self.known_hosts}",
                              f"k0slab pins it from the guest agent at boot; recreate the VM: "
                              f"invoke vm.delete {self.node}, then launch it again")
        pin_host_key(self.known_hosts, hostname, f"{key.get_name()} {key.get_base64()}")


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


class RemoteTally:
    """SSH connections, remote commands and file transfers, per node and per phase of the run that
    counts them: the budget of a bring-up (issue 14: one connection per node per phase, a few
    commands), which lab.up writes into up-timings.json and the benchmark reports."""

    KINDS = ("connections", "commands", "transfers")

    def __init__(self, phase_of: Callable[[], str]) -> None:
        self._phase_of = phase_of
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], Counter[str]] = {}

    def add(self, node: str, kind: str) -> None:
        with self._lock:
            self._counts.setdefault((node, self._phase_of()), Counter())[kind] += 1

    def by_node(self) -> dict[str, dict[str, dict[str, int]]]:
        """{node: {phase: {kind: count}}}, every kind present, and the node's totals under "total"."""
        with self._lock:
            found: dict[str, dict[str, dict[str, int]]] = {}
            for (node, phase), counted in self._counts.items():
                found.setdefault(node, {})[phase] = {kind: counted[kind] for kind in self.KINDS}
        for phases in found.values():
            phases["total"] = {kind: sum(p[kind] for p in phases.values()) for kind in self.KINDS}
        return dict(sorted(found.items()))


# The tally of the run in progress. One per process, like the run itself: every SSHNode made while it
# is set reports to it, whichever thread it runs on (a context variable would not reach pool threads).
_tally: RemoteTally | None = None


@contextlib.contextmanager
def tallied(phase_of: Callable[[], str]) -> Iterator[RemoteTally]:
    """Count every connection, command and transfer of the enclosed run."""
    global _tally
    tally = _tally = RemoteTally(phase_of)
    try:
        yield tally
    finally:
        _tally = None


def _count(node: str, kind: str) -> None:
    tally = _tally
    if tally is not None:
        tally.add(node, kind)


class SSHNode:
    """A Runner for one VM over SSH as root (see k0slab.remote.Runner)."""

    def __init__(self, name: str, host: str, key_path: Path, known_hosts: Path,
                 pin_on_first_contact: bool = False) -> None:
        self.name = name
        self.host = host
        self.key_path = key_path
        self.known_hosts = known_hosts
        self.pin_on_first_contact = pin_on_first_contact
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
            if self.known_hosts.is_file():
                connection.client.get_host_keys().load(str(self.known_hosts))
            connection.client.set_missing_host_key_policy(
                _PinOnFirstContact(self.name, self.known_hosts, self.pin_on_first_contact))
            try:
                connection.open()
            except (OSError, EOFError, paramiko.SSHException) as exc:
                if not isinstance(exc, paramiko.BadHostKeyException):
                    raise NodeUnreachable(
                        f"cannot reach {self.name} at {self.host} over SSH ({str(exc).strip() or type(exc).__name__})",
                        f"check that it runs (invoke vm.list) and that K0SLAB_NETNS names the namespace of its "
                        f"network; start it with: invoke vm.start {self.name}",
                    ) from None
                raise K0slabError(
                    f"host key of {self.name} ({self.host}) is not the one pinned when the VM was created "
                    f"({exc.key.get_base64()[:16]}... instead of {exc.expected_key.get_base64()[:16]}...)",
                    f"something else answers on {self.host} (check K0SLAB_NETNS); if the VM was rebuilt "
                    f"outside k0slab, run: ssh-keygen -f {self.known_hosts} -R {self.host}",
                ) from None
            self._connection = connection
            _count(self.name, "connections")
        return self._connection

    def probe(self) -> None:
        """Raise NotYet unless a root login works and runs a command (the real readiness signal)."""
        try:
            result = self.run("true", check=False, timeout=CONNECT_TIMEOUT_S)
        except (OSError, EOFError, paramiko.SSHException, NodeUnreachable, RemoteCommandTimeout) as exc:
            self.close()
            reason = exc.message if isinstance(exc, K0slabError) else (str(exc) or type(exc).__name__)
            raise NotYet(f"ssh root@{self.host}: {reason}") from None
        if not result.ok:
            raise NotYet(f"ssh root@{self.host}: `true` exited {result.exit_code}")

    def run(
        self, command: str, *, stdin: str | None = None, check: bool = True, timeout: float | None = None
    ) -> CommandResult:
        connection = self._connect()
        _count(self.name, "commands")
        bound = COMMAND_TIMEOUT_S if timeout is None else timeout
        channel = connection.client.get_transport().open_session(timeout=CONNECT_TIMEOUT_S)
        channel.settimeout(bound)
        try:
            channel.exec_command(command)
            if stdin is not None:
                channel.sendall(stdin.encode())
            channel.shutdown_write()
            stdout = _read_all(channel.makefile("rb"))
            stderr = _read_all(channel.makefile_stderr("rb"))
            if not channel.status_event.wait(bound):
                raise TimeoutError
            exit_code = channel.recv_exit_status()
        except TimeoutError:
            # The guest is frozen or the command hangs; the connection is no longer trustworthy.
            self.close()
            raise RemoteCommandTimeout(
                self.name, command, bound,
                # known_hosts sits in the lab folder, beside logs/ (LabDir).
                f"the node may be frozen: see {self.known_hosts.parent / 'logs' / f'{self.name}.console.log'}, "
                f"and its journal with lab.logs {self.name}") from None
        finally:
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
        with self._transfer(f"sftp write {path}") as sftp:
            with sftp.open(path, "wb") as handle:
                handle.set_pipelined(True)
                handle.write(data)

    def put_file(self, local: Path, path: str, mode: int | None = None) -> None:
        with self._transfer(f"sftp put {path}"):
            self._connect().put(str(local), remote=path)  # fabric reuses the bounded session
        if mode is not None:
            self.run(f"chmod {mode:o} {shlex.quote(path)}")

    def get_file(self, path: str, local: Path) -> None:
        with self._transfer(f"sftp get {path}"):
            self._connect().get(path, local=str(local))

    @contextlib.contextmanager
    def _transfer(self, what: str) -> Iterator[paramiko.SFTPClient]:
        """The connection's SFTP session, bounded like a command: silent for COMMAND_TIMEOUT_S fails."""
        sftp = self._connect().sftp()
        _count(self.name, "transfers")
        sftp.get_channel().settimeout(COMMAND_TIMEOUT_S)
        try:
            yield sftp
        except TimeoutError:
            self.close()
            raise RemoteCommandTimeout(self.name, what, COMMAND_TIMEOUT_S,
                                       "the node may be frozen or its disk full; see lab.status") from None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _read_all(stream) -> str:
    return stream.read().decode(errors="replace")


def interactive_argv(host: str, key_path: Path, known_hosts: Path, command: list[str]) -> list[str]:
    """An OpenSSH command line for an interactive shell (a real TTY is what users want there), checking
    the host key against the lab's pins."""
    argv = [
        "ssh", "-i", str(key_path), "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR",
    ]
    proxy = netns_proxy_command("%h", 22)
    if proxy:
        argv += ["-o", f"ProxyCommand={proxy.replace(' 22', ' %p')}"]
    if command:
        argv.append("-t")
    return argv + [f"root@{host}", *command]
