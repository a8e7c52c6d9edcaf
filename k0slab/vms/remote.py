"""The one thing k0s code needs from a node: run a shell command as root and get its result.

The SSH layer implements it for real VMs; unit tests implement it with fakes. Keeping k0s,
users and smoke code behind this protocol is what lets them be tested without VMs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from k0slab.core.errors import K0slabError


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def last_error_line(self) -> str:
        lines = (self.stderr or self.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit {self.exit_code}"


class RemoteCommandError(K0slabError):
    def __init__(self, node: str, result: CommandResult) -> None:
        super().__init__(
            f"{node}: `{result.command}` failed (exit {result.exit_code}): {result.last_error_line()}"
        )
        self.node = node
        self.result = result


class RemoteCommandTimeout(K0slabError):
    """A remote command that stayed silent past its bound: its own error, never a dropped connection
    to retry, since repeating a command that hangs would only hang again."""

    def __init__(self, node: str, command: str, bound_s: float, hint: str = "") -> None:
        short = command if len(command) <= 80 else command[:77] + "..."
        super().__init__(f"{node}: `{short}` gave no answer for {bound_s:.0f}s", hint)
        self.node = node


class Runner(Protocol):
    """A node to run commands on, as root."""

    name: str

    def run(
        self, command: str, *, stdin: str | None = None, check: bool = True, timeout: float | None = None
    ) -> CommandResult:
        """Run `command` through the node's shell; raise RemoteCommandError when check and it fails."""
        ...

    def put_text(self, text: str, path: str, mode: int = 0o644) -> None:
        """Write `text` to `path` on the node (parent folders created), with `mode`."""
        ...
