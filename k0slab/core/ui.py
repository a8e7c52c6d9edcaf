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
from rich.text import Text

from k0slab.core.errors import K0slabError

console = Console(highlight=False, soft_wrap=True, markup=False)
error_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
_started = time.monotonic()


def setup_logging() -> None:
    """k0slab's retries and waits are logged at INFO, one line each; paramiko's own tracebacks for
    connection attempts that k0slab retries anyway are noise."""
    handler = logging.StreamHandler()
    handler.setFormatter(_SameClock())
    logger = logging.getLogger("k0slab")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)


class _SameClock(logging.Formatter):
    """Retry and wait lines carry the same clock and format as progress lines: seconds since start."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{_elapsed()} {record.getMessage()}"


def _elapsed() -> str:
    return f"{time.monotonic() - _started:7.1f}s"


def progress(message: str) -> None:
    # The message is plain text: "[skip]" or a "[/path]" in it must print as written, never as markup.
    console.print(Text.assemble((_elapsed(), "dim"), " ", message))


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
