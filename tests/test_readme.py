"""The README and docs/ say what the committed files and commands say: every quoted block is
current (docs/sync.py), every command they show exists, every link resolves, and the README
stays a front door (at most 250 lines)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from tests.support import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "docs"))
import sync  # noqa: E402

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md")),
         PROJECT_ROOT / "sweep" / "README.md", PROJECT_ROOT / "presets" / "README.md",
         PROJECT_ROOT / "BENCHMARKS.md", PROJECT_ROOT / "TESTING.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(PROJECT_ROOT)) for path in paths]


def test_the_readme_is_a_front_door():
    assert len((PROJECT_ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


def test_every_quoted_block_is_what_it_quotes_now():
    """Each ``<!-- quote: -->`` block equals its section of the committed report, and each
    ``<!-- output: -->`` block what its command prints on the committed results (`make docs`
    rewrites them)."""
    stale = sync.stale_blocks()
    assert not stale, "stale (run `make docs`): " + "; ".join(f"{path.name}: {opening}"
                                                              for path, opening, _, _ in stale)


def test_the_readme_quotes_the_report_and_a_command():
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert "<!-- quote: reports/report.md ## Every framework table -->" in text
    assert "<!-- quote: reports/report.md ## Conclusions bullets -->" in text
    assert "<!-- output: dvc metrics show --md -->" in text


def test_a_stale_block_is_found(tmp_path):
    """The check is not vacuous: a block that holds something else is reported."""
    page = tmp_path / "page.md"
    page.write_text("<!-- quote: reports/report.md ## Every framework table -->\n| old | row |\n<!-- /quote -->\n")
    [(path, opening, held, wanted)] = sync.stale_blocks([page])
    assert held == "| old | row |\n" and wanted.startswith("|  | ") and "Test accuracy" in wanted
    sync.rewrite([page])
    assert sync.stale_blocks([page]) == []


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    slugs = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slugs.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return slugs


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_every_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.name}: {target}: no heading #{anchor}"


def makefile_targets() -> set[str]:
    text = (PROJECT_ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([\w-]+):", text, flags=re.MULTILINE)) | {"test-keras", "test-torch"}


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_every_command_shown_exists(page):
    text = page.read_text(encoding="utf-8")
    targets = makefile_targets()
    for target in re.findall(r"\bmake ([a-z][\w-]*)", text):
        assert target in targets, f"{page.name}: `make {target}` is not a Makefile target"
    for module in re.findall(r"python -m ([a-z_]\w*(?:\.\w+)*)", text):
        if module.split(".")[0] in ("stages", "sweep"):
            assert importlib.util.find_spec(module) is not None, f"{page.name}: no module {module}"
    for script in re.findall(r"\b((?:bench|docs)/[\w/]+\.py)\b", text):
        assert (PROJECT_ROOT / script).is_file(), f"{page.name}: {script} does not exist"


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_the_text_speaks_of_the_project_not_of_who_worked_on_it(page):
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"\bsessions?\b|\bround of work\b", text, flags=re.IGNORECASE), page.name
