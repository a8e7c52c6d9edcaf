"""One cancel event for the whole process: Ctrl-C (SIGINT) or SIGTERM sets it, and every wait and
retry loop checks it, so a running step stops at its next check instead of sleeping on.

Cancelled derives from BaseException on purpose: an `except Exception` in a retry loop must not
swallow it, exactly as it does not swallow KeyboardInterrupt.
"""
from __future__ import annotations

import threading

_event = threading.Event()


class Cancelled(BaseException):
    """The user asked k0slab to stop (Ctrl-C or SIGTERM)."""


def cancel() -> None:
    _event.set()


def raise_if_cancelled() -> None:
    if _event.is_set():
        raise Cancelled()


def sleep(seconds: float) -> None:
    """time.sleep that returns at once, raising Cancelled, when the process is cancelled."""
    if _event.wait(max(0.0, seconds)):
        raise Cancelled()


def reset() -> None:
    """For tests that cancel and then go on in the same process."""
    _event.clear()
