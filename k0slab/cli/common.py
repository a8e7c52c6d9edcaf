"""What every task module shares: one-line errors instead of tracebacks, the words after `--`."""
from __future__ import annotations

import functools
import os
import shlex
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

from invoke import Exit

from k0slab.core import ui
from k0slab.core.errors import K0slabError

LAB_HELP = "lab name (default: default); several labs live side by side"
# Tasks that work without root: they only read the recipes, profiles and cache, or ask libvirt who
# runs. lab.up checks for itself, since its --dry-run needs no root either.
UNPRIVILEGED = frozenset({"image_list", "host_status", "lab_up"})


def require_root(task_name: str) -> None:
    """Root is k0slab's supported path: libvirt's system instance, mmdebstrap, and VM disks and an image
    cache that QEMU's own user can read. As another user those fail half-way, so refuse at once."""
    if os.geteuid() != 0:
        raise K0slabError(f"{task_name} needs root (libvirt's system instance, image builds, disks QEMU can read)",
                          f"run it as root, e.g. sudo {_program()} {task_name} ...")


def _program() -> str:
    """How the user started the tasks: the installed `k0slab` command, or invoke in a checkout."""
    return "k0slab" if Path(sys.argv[0]).name == "k0slab" else "invoke"


# Tasks that pass the words after `--` on; every other task refuses them instead of dropping them.
TAKES_REMAINDER = frozenset({"vm_exec", "vm_shell", "lab_ssh"})


def check_command_line(task_name: str, kwargs: dict[str, Any]) -> None:
    """Refuse what invoke would misread or drop: words after `--` for a task that takes none, a
    value like `-node` that invoke splits into the short flag -n and "ode", and empty option values."""
    words = sys.argv[1:sys.argv.index("--")] if "--" in sys.argv else sys.argv[1:]
    if task_name not in TAKES_REMAINDER and remainder_argv():
        raise K0slabError(f"{shlex.join(remainder_argv())!r} after -- is not read by this task",
                          f"give options before --, e.g. {_program()} lab.up --nodes 3")
    for word in words:
        if word.startswith("-") and not word.startswith("--") and len(word) > 2:
            raise K0slabError(f"{word!r} would be read as the short option {word[:2]} with value {word[2:]!r}",
                              "use long options (--name), and no value that starts with '-'")
    for option, value in kwargs.items():
        if isinstance(value, str) and not value.strip():
            raise K0slabError(f"--{option.replace('_', '-')} {value!r} is empty",
                              "give a value, or leave the option out for its default")


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn K0slabError into one line on stderr and a non-zero exit, never a traceback; refuse non-root
    at once for every task that needs root."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            check_command_line(func.__name__, kwargs)
            if func.__name__ not in UNPRIVILEGED:
                require_root(func.__name__.replace("_", ".", 1).replace("_", "-"))
            return func(*args, **kwargs)
        except K0slabError as error:
            ui.error_console.print(ui.format_error(error), markup=False)
            raise Exit(code=1) from None
        except KeyboardInterrupt:
            ui.error_console.print("interrupted: run the same command again to continue, or lab.down to clean up")
            # Exit now: worker threads may be inside a long wait, and an orderly interpreter exit
            # would join them. State files are written atomically, so nothing is half-written.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)

    return wrapper


def remainder_argv() -> list[str]:
    """Words after `--` on the command line, with their original quoting."""
    return sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
