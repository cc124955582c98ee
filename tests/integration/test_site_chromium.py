"""The results site in a real headless Chromium: every page loads offline, with no console
error and no request but the page itself, and the leaderboard chart is drawn. Bundles: the
fixture and its recorded variant from a second machine (tests/unit/test_site.py says how)."""
from __future__ import annotations

import os
import shutil

import pytest

from orchestrator.report import site
from tests.unit.test_site import recorded

from .chromium import Chromium, chromium_binary  # noqa: F401 - a fixture

pytestmark = pytest.mark.browser


def test_site_renders_offline_in_chromium(chromium_binary, tmp_path):
    a = recorded(tmp_path, "20261122-000000-small", throughputs={"01-pytorch-eager": [470, 480, 490]})
    b = recorded(tmp_path, "20261123-000000-small-h100", gpus=2,
                 throughputs={"01-pytorch-eager": [2000, 2100, 1900]})
    built = site.build([a, b], tmp_path / "site")
    (board,) = built.leaderboards
    pages = ["index.html", "machines.html", f"workloads/{board.slug}.html",
             *(f"bundles/{r.slug}/{name}" for r in built.bundles for name in ("index.html", "report.html"))]
    browser = Chromium(chromium_binary, tmp_path / "profile")
    try:
        seen = {}
        for rel in pages:
            page = built.path / rel
            browser.events.clear()
            browser.load(page.as_uri())
            seen[rel] = {
                "errors": browser.console_errors(), "requests": browser.requests(),
                "charts": browser.evaluate("""[...document.querySelectorAll('figure.chart svg')].map(svg => {
                    const box = svg.getBoundingClientRect();
                    return {id: svg.id, width: box.width, height: box.height,
                            marks: svg.querySelectorAll('path, text, use, rect').length};
                })"""),
                "rows": browser.evaluate("document.querySelectorAll('tbody tr').length")}
            if rel.startswith("workloads/"):
                shot = browser.screenshot(tmp_path / "leaderboard.png")
    finally:
        browser.close()
    print(f"\nsite screenshot: {shot} ({shot.stat().st_size:,} bytes)")
    for rel, found in seen.items():
        assert found["errors"] == [], (rel, found["errors"])
        assert found["requests"] == [(built.path / rel).as_uri()], (rel, found["requests"])
        for chart in found["charts"]:
            assert chart["width"] > 300 and chart["height"] > 100 and chart["marks"] > 10, (rel, chart)
    assert [c["id"] for c in seen[f"workloads/{board.slug}.html"]["charts"]] == [f"chart-leaderboard-{board.slug}"]
    assert seen[f"workloads/{board.slug}.html"]["rows"] == 4  # 2 machines × 2 frameworks
    assert seen["index.html"]["rows"] == 4  # 2 machines, 2 bundles
    assert seen["machines.html"]["rows"] >= 2
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
