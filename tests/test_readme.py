"""The README stays a short front page: at most 12,000 bytes, the two commands CI and users
run, a link to every page of docs/; its links, and those of CONTRIBUTING.md and CHANGELOG.md,
lead somewhere. (Its Python block runs in test_docs_code.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
#: [text](target), a target without a scheme (http:, mailto:) being a path in the repository
LINK = re.compile(r"\[[^\]]*\]\((?![a-z]+:)([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def section(text: str, heading: str) -> str:
    m = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"README.md has no {heading!r} section"
    return m[1]


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as
    hyphens."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", text), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_readme_is_short():
    assert len(README.read_bytes()) <= 12_000


def test_the_two_commands_are_there():
    """.ci/run runs the second as "the README's test command"."""
    two = section(README.read_text(), "## The two commands")
    assert "pip install . && python examples/quickstart.py" in two
    assert "\nbash tests/run.sh\n" in two
    assert "bash tests/run.sh" in (REPO / ".ci" / "run").read_text()


def test_the_readme_links_every_docs_page():
    linked = set(LINK.findall(README.read_text()))
    pages = {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    assert sorted(pages - linked) == []


def leads_somewhere(page: Path, target: str) -> bool:
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
        return False
    return not anchor or dest.suffix != ".md" or anchor in anchors(dest.read_text())


@pytest.mark.parametrize("name", ["README.md", "CONTRIBUTING.md", "CHANGELOG.md"])
def test_links_lead_somewhere(name):
    page = REPO / name
    targets = LINK.findall(FENCE.sub("", page.read_text()))
    assert [t for t in targets if not leads_somewhere(page, t)] == [], f"{name}: links to nothing"
