"""Bring-up as an ordered list of small phases (the idea of k0sctl's phase manager).

Each phase has a title, a cheap "does it need to run" test, a run step and its plan in words. The manager prints
each phase with its duration, skips those with nothing to do (which is what makes a re-run
on a ready lab fast), records timings, and stops at the first error.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from k0slab.core import cancel
from k0slab.core.timeline import PHASES_LANE, Timeline


@dataclass
class Phase:
    title: str
    run: Callable[[], None]
    should_run: Callable[[], bool] = field(default=lambda: True)
    plan: str = ""  # what the phase does, in words: `lab.up --dry-run` prints it


class PhaseManager:
    def __init__(self, progress: Callable[[str], None]) -> None:
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.timeline = Timeline()
        self.current = ""  # the title of the phase that runs now (node steps are drawn under it)

    def run(self, phases: list[Phase]) -> dict[str, float]:
        for phase in phases:
            cancel.raise_if_cancelled()
            if not phase.should_run():
                self.progress(f"[skip] {phase.title}: nothing to do")
                self.timings[phase.title] = 0.0
                continue
            self.progress(f"==> {phase.title}")
            self.current = phase.title
            started = time.monotonic()
            try:
                with self.timeline.span(PHASES_LANE, phase.title):
                    phase.run()
            finally:
                self.timings[phase.title] = round(time.monotonic() - started, 2)
            self.progress(f"    {phase.title}: done in {self.timings[phase.title]:.1f}s")
        return self.timings
