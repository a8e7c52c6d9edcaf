"""Named waits: every wait says what it waits for, how long it waited, and where to look.

Modelled on Lima's host-agent requirements: a user never sees a bare timeout. Retries use
tenacity with exponential backoff and jitter, and retry only on errors that can heal.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from k0slab.core import cancel
from k0slab.core.errors import K0slabError

log = logging.getLogger("k0slab")
T = TypeVar("T")


class NotYet(Exception):
    """Raised by a probe whose condition does not hold yet but may heal (refused, timeout, not ready)."""


class WaitTimeout(K0slabError):
    pass


@dataclass
class Requirement:
    description: str  # "node2: SSH answers on 10.213.1.12:22"
    debug_hint: str  # "see the console log /var/lib/k0slab/labs/x/logs/node2.console.log"
    timeout_s: float
    min_interval_s: float = 1.0
    max_interval_s: float = 8.0

    def wait(self, probe: Callable[[], T], *, healable: tuple[type[BaseException], ...] = (NotYet,)) -> T:
        """Call probe until it returns; healable exceptions are retried (each logged with its reason)."""
        started = time.monotonic()
        last_error: list[BaseException] = []

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            if error is not None:
                last_error[:] = [error]
                log.info(
                    "waiting for %s: attempt %d not yet (%s), retrying in %.1fs",
                    self.description, state.attempt_number, _one_line(error), state.upcoming_sleep,
                )

        def checked_probe() -> T:
            cancel.raise_if_cancelled()
            return probe()

        retrying = Retrying(
            retry=retry_if_exception_type(healable),
            sleep=cancel.sleep,  # a Ctrl-C ends the wait at once, not after the backoff
            stop=stop_after_delay(self.timeout_s),
            wait=wait_random_exponential(multiplier=self.min_interval_s, max=self.max_interval_s),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(checked_probe)
        except healable as exc:
            waited = time.monotonic() - started
            raise WaitTimeout(
                f"timed out after {waited:.0f}s waiting for {self.description}; last error: {_one_line(exc)}",
                self.debug_hint,
            ) from None


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
