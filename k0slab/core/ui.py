"""Terminal output: progress lines with elapsed time, tables, and one-line errors."""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any
from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from k0slab.core.errors import K0slabError

console = Console(highlight=False, soft_wrap=True)
error_console = Console(stderr=True, highlight=False, soft_wrap=True)
_started = time.monotonic()


def setup_logging() -> None:
    """k0slab's retries and waits are logged at INFO, one line each; paramiko's own tracebacks for
    connection attempts that k0slab retries anyway are noise."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(relativeCreated)9.0fms %(message)s"))
    logger = logging.getLogger("k0slab")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)


def progress(message: str) -> None:
    console.print(f"[dim]{time.monotonic() - _started:7.1f}s[/dim] {message}", markup=True)


def table(rows: Iterable[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    view = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for column in columns:
        view.add_column(column.upper() if column.islower() else column)
    for row in rows:
        view.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(view)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def format_error(error: K0slabError) -> str:
    text = f"error: {error.message}"
    if error.hint:
        text += f" ({error.hint})"
    if error.details:
        text += "\n" + "\n".join("  | " + line for line in error.details.splitlines())
    return text
