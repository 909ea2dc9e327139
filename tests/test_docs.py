"""README.md and docs/ stay short and their relative links resolve (on GitHub and the Hub alike: plain relative
paths, anchors made from headings the way GitHub makes them)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold no links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_every_relative_link_resolves():
    broken = []
    for doc in documents():
        for target in relative_links(doc):
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{doc.name}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{doc.name}: {target} (no such heading)")
    assert not broken, broken
    assert sum(len(relative_links(doc)) for doc in documents()) > 10  # the parser finds the links there are


def test_readme_is_short_and_teaches_the_two_make_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "make demo" in readme and "make test" in readme and "pip install ." in readme
    assert all(f"(docs/{name}.md)" in readme for name in ("recipes", "schedules", "api", "benchmarks", "results",
                                                          "safety"))  # fmt: skip
    makefile = (ROOT / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile


def test_the_study_moved_to_docs_with_its_numbers():
    results = (ROOT / "docs" / "results.md").read_text()
    study = (ROOT / "examples" / "fashion_mnist" / "results" / "study" / "STUDY.md").read_text()
    for number in re.findall(r"\*\*(\d+\.\d\d)\*\*", results):  # every bold top-1 in the table is in STUDY.md
        assert number in study, number
    readme = (ROOT / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| ") and "top-1" not in line]
    numbers = re.findall(r"\d+\.\d\d", " ".join(table))  # README's verdict table: every number from STUDY.md
    assert len(numbers) >= 12 and all(n in study for n in numbers), numbers
