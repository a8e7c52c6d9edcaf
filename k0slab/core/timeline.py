"""Where a bring-up's time went, per node: spans recorded while `lab.up` runs, drawn as an SVG.

Each span is (lane, label, start, end) in seconds since the timeline began. The "phases" lane holds
the phases; every node has a lane of its own with the steps that ran on it, so a node that waits
for the others shows as a gap.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from xml.sax.saxutils import escape

PHASES_LANE = "phases"
_ROW_PX, _LABEL_PX, _WIDTH_PX = 26, 90, 900
_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")


@dataclass(frozen=True)
class Span:
    lane: str
    label: str
    start_s: float
    end_s: float


class Timeline:
    """Spans from several threads (nodes are worked on in parallel)."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self.spans: list[Span] = []

    def now(self) -> float:
        return time.monotonic() - self._started

    def add(self, lane: str, label: str, start_s: float, end_s: float) -> None:
        with self._lock:
            self.spans.append(Span(lane, label, round(start_s, 3), round(end_s, 3)))

    @contextlib.contextmanager
    def span(self, lane: str, label: str) -> Iterator[None]:
        start = self.now()
        try:
            yield
        finally:
            self.add(lane, label, start, self.now())


def svg(spans: list[Span], title: str) -> str:
    """A Gantt chart: one row per lane (phases first, then the nodes by name), one bar per span,
    coloured by label, with its label and duration as the bar's tooltip."""
    lanes = [PHASES_LANE] if any(s.lane == PHASES_LANE for s in spans) else []
    lanes += sorted({s.lane for s in spans} - {PHASES_LANE})
    total = max((s.end_s for s in spans), default=0.0) or 1.0
    scale = (_WIDTH_PX - _LABEL_PX - 10) / total
    colours: dict[str, str] = {}
    labels = list(dict.fromkeys(s.label for s in spans))
    height = _ROW_PX * (len(lanes) + 2) + 16 * len(labels) + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH_PX}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<text x="4" y="16" font-size="13">{escape(title)} ({total:.1f} s)</text>']
    for row, lane in enumerate(lanes, start=1):
        y = row * _ROW_PX
        parts.append(f'<text x="4" y="{y + 16}">{escape(lane)}</text>')
        for span in (s for s in spans if s.lane == lane):
            colour = colours.setdefault(span.label, _COLOURS[len(colours) % len(_COLOURS)])
            x = _LABEL_PX + span.start_s * scale
            width = max(1.0, (span.end_s - span.start_s) * scale)
            tip = f"{span.label}: {span.start_s:.1f}-{span.end_s:.1f} s ({span.end_s - span.start_s:.1f} s)"
            parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{width:.1f}" height="{_ROW_PX - 6}" '
                         f'fill="{colour}"><title>{escape(tip)}</title></rect>')
    axis_y = (len(lanes) + 1) * _ROW_PX
    for second in range(0, int(total) + 1, max(1, int(total // 8))):
        x = _LABEL_PX + second * scale
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 14}" fill="#555">{second}s</text>')
    # The legend: which colour is which step.
    for number, (label, colour) in enumerate(colours.items()):
        y = axis_y + 34 + 16 * number
        parts.append(f'<rect x="{_LABEL_PX}" y="{y - 10}" width="12" height="12" fill="{colour}"/>'
                     f'<text x="{_LABEL_PX + 18}" y="{y}">{escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
