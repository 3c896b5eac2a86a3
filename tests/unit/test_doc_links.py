"""Every relative link in the README, docs/ and bench/README.md names a file that exists, and a heading in it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose(text: str) -> str:
    """The text outside fenced blocks and inline code, where a link is a link."""
    kept: list[str] = []
    fenced = False
    for line in text.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as hyphens, repeats -1, -2."""
    found: set[str] = set()
    for line in prose_headings(path.read_text()):
        slug = re.sub(r"[^\w\- ]", "", line.lower()).replace(" ", "-")
        candidate, repeat = slug, 0
        while candidate in found:
            repeat += 1
            candidate = f"{slug}-{repeat}"
        found.add(candidate)
    return found


def prose_headings(text: str) -> list[str]:
    headings: list[str] = []
    fenced = False
    for line in text.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"^#{1,6} (.*)$", line)):
            headings.append(heading[1].strip())
    return headings


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for link in LINK.finditer(prose(page.read_text())):
        target = link["target"]
        if re.match(r"^[a-z]+:", target):
            continue  # http, https, mailto: not ours to check
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        where = f"{page.relative_to(root)}: {target}"
        if not linked.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{where} (no such heading in {linked.relative_to(root)})")
    return broken


def test_every_relative_link_names_a_file_and_heading_that_exist() -> None:
    broken = [problem for page in PAGES for problem in broken_links(page)]
    assert broken == [], "\n".join(broken)


def test_the_readme_links_every_reference_page() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name}" in readme or page.name == "README.md", f"the README does not link {page.name}"
    assert "(docs/README.md)" in readme


def test_headings_become_github_anchors(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Jobs\n## The job's disk\n### `kind: tasks`\n## Network `none` without Docker's setup\n## Jobs\n")
    assert anchors(page) == {"jobs", "the-jobs-disk", "kind-tasks", "network-none-without-dockers-setup", "jobs-1"}
    page.write_text("# Jobs\n[a](#jobs) [b](#nowhere) [c](other.md) `[d](#inline)`\n```\n[e](#fenced)\n```\n")
    assert [problem.split(": ", 1)[1] for problem in broken_links(page, tmp_path)] == [
        "#nowhere (no such heading in page.md)",
        "other.md (no such file)",
    ]
