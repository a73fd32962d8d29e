"""The documentation holds together: its links resolve, and the code's design citations exist.

Two ways documentation rots without anyone noticing: a page is renamed or a heading reworded
and the links to it dangle, and code cites "design §N" for a section the design no longer has
(or never had). Both are checked here against the files in the repository, so a broken link
or citation fails CI instead of a reader.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "design.md"

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"`[^`]*`")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SECTION = re.compile(r"^(\d+(?:\.\d+)?)\.?\s")
_CITATION = re.compile(r"[Dd]esign (§\d+(?:\.\d+)?(?:(?:,\s*|\s+and\s+)§\d+(?:\.\d+)?)*)")
_SECTION_NUMBER = re.compile(r"§(\d+(?:\.\d+)?)")

# The numbering the code was written against: every one of these must stay a heading.
DESIGN_SECTIONS: tuple[str, ...] = (
    *("1", "2", "2.1", "3", "4", "4.1", "5", "5.1", "6", "6.1", "6.2"),
    *("7", "7.1", "8", "9", "10", "11", "12", "13", "14", "15"),
)


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "bench" / "README.md"]
    files += sorted((ROOT / "docs").glob("**/*.md"))
    return files


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked out."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, _INLINE_CODE.sub("``", line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercased, punctuation removed,
    spaces to hyphens (`## 4.1 Targeting: rules` -> `41-targeting-rules`)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file defines; repeated headings get GitHub's -1, -2 suffixes."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(path: Path) -> Iterator[tuple[int, str]]:
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in _LINK.finditer(line):
            yield number, match.group(1)


def broken_links(path: Path) -> list[str]:
    """What is wrong with the relative links of one file, as `file:line target: why`."""
    problems: list[str] = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ... not ours to check
            continue
        where = f"{path.relative_to(ROOT)}:{number} {target}"
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{where}: no such file {dest.relative_to(ROOT)}")
            continue
        if anchor and (dest.is_dir() or dest.suffix != ".md"):
            problems.append(f"{where}: an anchor into a file that is not Markdown")
        elif anchor and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in {dest.name}")
    return problems


def design_sections(path: Path = DESIGN) -> set[str]:
    """Section numbers of the design's headings: `## 4. Evaluation` -> 4, `### 4.1 ...` -> 4.1."""
    out: set[str] = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        heading = _HEADING.match(line)
        if heading is not None:
            number = _SECTION.match(heading.group(2))
            if number is not None:
                out.add(number.group(1))
    return out


def cited_files() -> list[Path]:
    files: list[Path] = []
    for folder in ("sidecar", "clients/python/plangate", "tests", "bench"):
        files += sorted((ROOT / folder).glob("**/*.py"))
    return files + sorted((ROOT / "proto").glob("**/*.proto"))  # stubs copy their comments


def citations(text: str) -> Iterator[tuple[int, str]]:
    """(line, section) for every "design §N" in `text`, lists like "design §2, §6" included."""
    for number, line in enumerate(text.splitlines(), start=1):
        for match in _CITATION.finditer(line):
            for section in _SECTION_NUMBER.findall(match.group(1)):
                yield number, section


def test_slugs_follow_github() -> None:
    assert slug("4.1 Targeting: rules and rollouts") == "41-targeting-rules-and-rollouts"
    assert slug("Shared mode: many sidecars on one PostgreSQL") == (
        "shared-mode-many-sidecars-on-one-postgresql"
    )
    assert slug("`has_access` for non-metered features") == "has_access-for-non-metered-features"
    assert slug("Errors, validation and reloads") == "errors-validation-and-reloads"


def test_citations_are_found_in_lists() -> None:
    text = 'x = 1  # design §2, §6\n"""Design §4.1 and §5.1: ..."""\n'
    assert list(citations(text)) == [(1, "2"), (1, "6"), (2, "4.1"), (2, "5.1")]


def test_every_relative_link_resolves() -> None:
    files = doc_files()
    missing = [f.relative_to(ROOT) for f in files if not f.exists()]
    assert not missing, f"documentation files missing: {missing}"
    checked = sum(1 for f in files for _ in links(f))
    assert checked > 50, f"only {checked} links found; is the link pattern still right?"
    problems = [p for f in files for p in broken_links(f)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_design_keeps_its_section_numbers() -> None:
    missing = [s for s in DESIGN_SECTIONS if s not in design_sections()]
    assert not missing, f"docs/design.md lost sections {missing}; the code cites them by number"


def test_every_design_citation_names_a_section() -> None:
    sections = design_sections()
    found = 0
    problems: list[str] = []
    for path in cited_files():
        for number, section in citations(path.read_text(encoding="utf-8")):
            found += 1
            if section not in sections:
                where = path.relative_to(ROOT)
                problems.append(f"{where}:{number} cites design §{section}, which has no heading")
    assert found > 20, f"only {found} citations found; is the citation pattern still right?"
    assert not problems, "\n".join(problems)


def test_every_decision_record_is_in_the_index() -> None:
    decisions = ROOT / "docs" / "decisions"
    index = (decisions / "README.md").read_text(encoding="utf-8")
    records = sorted(p.name for p in decisions.glob("[0-9][0-9][0-9][0-9]-*.md"))
    assert records, "no decision records found"
    unlisted = [name for name in records if f"]({name})" not in index]
    assert not unlisted, f"decision records missing from docs/decisions/README.md: {unlisted}"
