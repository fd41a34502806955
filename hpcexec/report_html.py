"""``hpcexec report --html FILE``: the report as one self-contained page (no server, no
network): a timeline with one bar per job (its wait in the queue and its run in two colours,
a failure marked), then the table, the totals and the advice. The timeline is drawn by
matplotlib (the ``report`` extra) as SVG inside the page."""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import Any

from .errors import HpcexecError
from .report import JobUsage

WAIT_COLOUR = "#c9d6e3"
RUN_COLOUR = "#2b6cb0"
FAILED_COLOUR = "#c53030"
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1a202c; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 0.25em 0.75em; text-align: left; border-bottom: 1px solid #e2e8f0; }
th { background: #f7fafc; }
.advice li { margin: 0.25em 0; }
"""


def render(
    rows: Sequence[JobUsage],
    headers: Sequence[str],
    cells: Sequence[Sequence[str]],
    totals: str,
    advice: Sequence[str],
) -> str:
    """The page: the timeline of ``rows``, the table (``headers``, ``cells``), the totals
    line and the advice."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>hpcexec report</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>hpcexec report: {len(rows)} jobs</h1>",
        timeline_svg(rows),
        "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>",
        *("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells),
        "</table>",
        f"<p>{html.escape(totals)}</p>",
    ]
    if advice:
        items = "".join(f"<li>{html.escape(a)}</li>" for a in advice)
        parts.append(f'<h2>Advice</h2><ul class="advice">{items}</ul>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def timeline_svg(rows: Sequence[JobUsage]) -> str:
    """One bar per job that was submitted, from the first submission: the wait, then the
    run; a job that did not complete has its run in red and an ``x`` at its end."""
    matplotlib, figure = _matplotlib()
    timed = [r for r in rows if r.submitted is not None]
    t0 = min((r.submitted for r in timed if r.submitted is not None), default=0.0)
    # a Figure of its own (no pyplot): no global state of the caller's is touched
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text: searchable
        fig = figure.Figure(figsize=(10, max(2.0, 0.3 * len(timed) + 1.2)))
        ax = fig.subplots()
        for y, r in enumerate(timed):
            _bar(ax, y, r, (r.submitted or t0) - t0)
        ax.set_yticks(range(len(timed)), [f"{r.name} {r.key[:8]}" for r in timed])
        ax.invert_yaxis()
        ax.set_xlabel("seconds since the first submission")
        ax.legend(handles=_legend(), loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3)
        fig.tight_layout()
        out = io.StringIO()
        fig.savefig(out, format="svg")
    svg = out.getvalue()
    return svg[svg.index("<svg") :]  # inline: without the XML prologue


def _bar(ax: Any, y: int, r: JobUsage, start: float) -> None:
    if r.waited:
        ax.barh(y, r.waited, left=start, color=WAIT_COLOUR)
    if r.ran is not None:
        failed = r.state != "completed"
        run_start = start + (r.waited or 0.0)
        ax.barh(y, max(r.ran, 0.01), left=run_start, color=FAILED_COLOUR if failed else RUN_COLOUR)
        if failed:
            ax.plot([run_start + r.ran], [y], marker="x", color="black")


def _legend() -> list[Any]:
    from matplotlib.patches import Patch

    return [
        Patch(color=WAIT_COLOUR, label="waiting in the queue"),
        Patch(color=RUN_COLOUR, label="running"),
        Patch(color=FAILED_COLOUR, label="running, did not complete"),
    ]


def _matplotlib() -> tuple[Any, Any]:
    try:
        import matplotlib
        import matplotlib.figure
    except ImportError:
        raise HpcexecError(
            "the HTML report draws with matplotlib: pip install 'hpcexec[report]'"
        ) from None
    return matplotlib, matplotlib.figure
