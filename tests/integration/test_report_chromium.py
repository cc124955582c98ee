"""The report in a real headless Chromium: it loads offline, with no console error
and no network request, and its charts are drawn. A screenshot is left for people."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from orchestrator import report

from .chromium import Chromium, chromium_binary  # noqa: F401 - a fixture

pytestmark = pytest.mark.browser

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "bundle-small"
CHARTS = ("throughput", "convergence", "time-vs-code", "monitor")


def test_report_renders_offline_in_chromium(chromium_binary, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(report.render(report.load(FIXTURE)), encoding="utf-8")
    browser = Chromium(chromium_binary, tmp_path / "profile")
    try:
        browser.load(page.as_uri())
        charts = browser.evaluate("""[...document.querySelectorAll('figure.chart svg')].map(svg => {
            const box = svg.getBoundingClientRect();
            return {id: svg.id, width: box.width, height: box.height,
                    marks: svg.querySelectorAll('path, text, use, rect').length};
        })""")
        headings = browser.evaluate("[...document.querySelectorAll('h2')].map(h => h.textContent)")
        shot = browser.screenshot(tmp_path / "report.png")
        errors, requests = browser.console_errors(), browser.requests()
    finally:
        browser.close()
    print(f"\nreport screenshot: {shot} ({shot.stat().st_size:,} bytes); "
          f"report.html {page.stat().st_size:,} bytes")
    assert errors == []
    assert requests == [page.as_uri()], requests  # the page itself, nothing else
    assert [c["id"] for c in charts] == [f"chart-{name}" for name in CHARTS]
    for chart in charts:
        assert chart["width"] > 300 and chart["height"] > 100 and chart["marks"] > 10, chart
    assert {"Summary", "Charts", "Environment"} <= set(headings)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
