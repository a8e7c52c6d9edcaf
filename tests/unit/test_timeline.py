"""lab.up's per-node timeline (issue 14): phases and node steps as spans, drawn as an SVG."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from k0slab.core.phases import Phase, PhaseManager
from k0slab.core.timeline import PHASES_LANE, Span, svg

SVG = "{http://www.w3.org/2000/svg}"


def test_the_picture_has_a_lane_per_node_and_a_bar_per_span():
    spans = [Span(PHASES_LANE, "wait for SSH", 0.0, 30.0), Span("node2", "wait for SSH", 0.0, 2.3),
             Span("node1", "wait for SSH", 0.0, 30.0), Span(PHASES_LANE, "push", 30.0, 40.0),
             Span("node2", "push", 30.0, 34.0)]
    picture = ET.fromstring(svg(spans, "lab.up demo"))
    texts = [t.text for t in picture.iter(f"{SVG}text")]
    assert texts[0] == "lab.up demo (40.0 s)"
    # Phases first, then the nodes by name; the legend names each step once.
    assert texts[1:4] == ["phases", "node1", "node2"] and texts.count("push") == 1
    bars = [r for r in picture.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(bars) == len(spans)
    tips = {r.find(f"{SVG}title").text for r in bars}
    assert "wait for SSH: 0.0-2.3 s (2.3 s)" in tips
    # node2 answered SSH after 2.3 s and then waited: its bar is a small part of the phase's.
    widths = {r.find(f"{SVG}title").text: float(r.get("width")) for r in bars}
    assert widths["wait for SSH: 0.0-2.3 s (2.3 s)"] < widths["wait for SSH: 0.0-30.0 s (30.0 s)"] / 10


def test_the_phase_manager_records_each_phase_it_runs():
    manager = PhaseManager(lambda _line: None)
    timeline = manager.timeline
    manager.run([Phase("one", lambda: None), Phase("skipped", lambda: None, lambda: False), Phase("two", lambda: None)])
    assert [(s.lane, s.label) for s in timeline.spans] == [(PHASES_LANE, "one"), (PHASES_LANE, "two")]
    assert all(s.end_s >= s.start_s >= 0 for s in timeline.spans)
    assert ET.fromstring(svg([], "empty")).tag == f"{SVG}svg"
