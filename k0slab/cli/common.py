"""What every task module shares: one-line errors instead of tracebacks, the words after `--`."""
from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from invoke import Exit

from k0slab.core import ui
from k0slab.core.errors import K0slabError

LAB_HELP = "lab name (default: default); several labs live side by side"


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn K0slabError into one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
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
