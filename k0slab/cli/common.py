"""What every task module shares: one-line errors instead of tracebacks, the words after `--`."""
from __future__ import annotations

import functools
import os
import shlex
import signal
import sys
import threading
import traceback
from pathlib import Path
from collections.abc import Callable
from typing import Any

from invoke import Exit

from k0slab.core import cancel, ui
from k0slab.core.paths import crash_report_path
from k0slab.core.state import private_folder, write_private
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
    """The one error boundary between k0slab and its user: K0slabError becomes one line on stderr and
    a non-zero exit; anything else (a bug) one line plus a saved traceback; never a traceback on the
    terminal. Non-root is refused at once for every task that needs root.

    The task runs in a worker thread while the main thread only waits, so that Ctrl-C or SIGTERM is
    handled at once even while the task is inside a libvirt or SSH call that Python cannot
    interrupt. The cancel event then stops every wait at its next check."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        outcome: dict[str, Any] = {}

        def body() -> None:
            try:
                check_command_line(func.__name__, kwargs)
                if func.__name__ not in UNPRIVILEGED:
                    require_root(func.__name__.replace("_", ".", 1).replace("_", "-"))
                outcome["result"] = func(*args, **kwargs)
            except (Exit, cancel.Cancelled, KeyboardInterrupt) as stop:
                outcome["stop"] = stop
            except K0slabError as error:
                ui.error_console.print(ui.format_error(error), markup=False)
                outcome["stop"] = Exit(code=1)
            except Exception as bug:  # the last resort: one line, the traceback in a file
                ui.error_console.print(ui.format_error(_unexpected(bug)), markup=False)
                outcome["stop"] = Exit(code=1)

        worker = threading.Thread(target=body, name=f"k0slab-{func.__name__}", daemon=True)
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            worker.start()
            while worker.is_alive():
                worker.join(0.2)
        except (KeyboardInterrupt, _Terminated) as interruption:
            _stop_now(worker, 143 if isinstance(interruption, _Terminated) else 130)
        finally:
            signal.signal(signal.SIGTERM, previous)
        if "stop" in outcome:
            raise outcome["stop"]
        return outcome.get("result")

    return wrapper


class _Terminated(Exception):
    """SIGTERM, turned into an exception in the main thread like SIGINT's KeyboardInterrupt."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


# How long an interrupted task may take to unwind (its `finally` blocks save state and forget a VM
# that was half-created) before the process exits regardless.
UNWIND_GRACE_S = 1.5


def _stop_now(worker: threading.Thread, code: int) -> None:
    cancel.cancel()
    ui.error_console.print("interrupted: run the same command again to continue, or lab.down to clean up",
                           markup=False)
    worker.join(UNWIND_GRACE_S)
    # Exit without joining the task's own threads: one may be inside a libvirt call that cannot be
    # interrupted. State files are written atomically, so nothing is half-written; lab.down and
    # lab.prune find a domain that such a call creates afterwards by its name.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _unexpected(bug: Exception) -> K0slabError:
    """A failure k0slab did not translate: keep the traceback where the user can send it."""
    report = crash_report_path()
    try:
        private_folder(report.parent, 0o700)  # a traceback may quote paths and values of a lab
        write_private(report, "".join(traceback.format_exception(bug)))
        where = f"the traceback is in {report}"
    except OSError:
        where = "the traceback could not be saved"
    first_line = (str(bug).strip().splitlines() or [""])[0][:300]
    known = _LIBRARY_HINTS.get(type(bug).__module__.split(".")[0])
    if known is not None:
        return K0slabError(f"{known[0]}: {first_line}", f"{known[1]}; {where}")
    return K0slabError(f"unexpected {type(bug).__name__}: {first_line}",
                       f"{where}; please report it with the command you ran")


# Failures of the libraries underneath that no layer translated: what they mean, and where to look.
_LIBRARY_HINTS = {
    "libvirt": ("libvirt failed", "check libvirtd with: k0slab host.status, and its log in /var/log/libvirt/"),
    "paramiko": ("SSH to a node failed", "check the node with: k0slab lab.status, and its console log"),
}


def remainder_argv() -> list[str]:
    """Words after `--` on the command line, with their original quoting."""
    return sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
