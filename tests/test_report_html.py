"""hpcexec report --html: one self-contained page with a timeline, rendered by headless
Chromium (tests/clusters/chromium.sh installs it; CI must have it) and looked at."""

from __future__ import annotations

import os
import shutil
import subprocess

import matplotlib
import numpy as np
import pytest
from matplotlib.image import imread

from hpcexec.report import JobUsage
from hpcexec.report_html import FAILED_COLOUR, RUN_COLOUR, render, timeline_svg

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def usage(key, name, state="completed", submitted=100.0, waited=5.0, ran=30.0):
    return JobUsage(key, name, state, submitted, waited, ran, 2, 40.0, 900.0, 4096.0, 3600.0)


ROWS = [
    usage("a" * 32, "prep", submitted=100.0, waited=2.0, ran=20.0),
    usage("b" * 32, "sweep", submitted=101.0, waited=25.0, ran=40.0),
    usage("c" * 32, "sweep", "failed", submitted=101.0, waited=30.0, ran=12.0),
]


def page() -> str:
    return render(ROWS, ["KEY", "NAME"], [[r.key[:12], r.name] for r in ROWS], "3 jobs", ["tip"])


def test_the_page_holds_its_timeline_table_and_advice_and_nothing_from_elsewhere():
    before = (matplotlib.get_backend(), matplotlib.rcParams["svg.fonttype"])
    text = page()
    assert text.count("<svg") == 1 and "<script" not in text and "src=" not in text
    assert 'href="http' not in text and "url(http" not in text  # no network
    for r in ROWS:
        assert f"{r.name} {r.key[:8]}" in text  # a bar per job, labelled
    assert "<td>sweep</td>" in text and "<li>tip</li>" in text and "<p>3 jobs</p>" in text
    assert (matplotlib.get_backend(), matplotlib.rcParams["svg.fonttype"]) == before
    assert "<svg" in timeline_svg([])  # no job: an empty timeline, not an error


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="no chromium here")
def test_chromium_draws_the_timeline(tmp_path):
    assert CHROMIUM, "CI renders the report: tests/clusters/chromium.sh start installs chromium"
    html = tmp_path / "report.html"
    html.write_text(page())
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1000,700",
            html.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = imread(shot)[:, :, :3]
    not_white = (pixels < 0.95).any(axis=2).mean()
    assert not_white > 0.02, f"the page looks blank ({not_white:.1%} of it drawn)"
    for colour in (RUN_COLOUR, FAILED_COLOUR):  # a completed run and a failed one are drawn
        close = (np.abs(pixels - _rgb(colour)) < 0.06).all(axis=2).sum()
        assert close > 200, f"no bar of {colour} on the page"
