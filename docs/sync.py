"""Keep the quoted blocks of README.md and docs/*.md equal to what they quote.

Two kinds of block, each between an opening and a closing HTML comment (invisible on GitHub):

- ``<!-- quote: reports/report.md ## Every framework -->`` ... ``<!-- /quote -->``: the body of
  that section of a committed file (up to its next heading), optionally only its ``table`` or
  its ``bullets`` (``<!-- quote: reports/report.md ## Conclusions bullets -->``);
- ``<!-- output: dvc metrics show --md -->`` ... ``<!-- /output -->``: what the command prints,
  run in the project root with the project's environment first on ``PATH``; shown as a code
  block under ``$ command``, or as Markdown itself where the command has ``--md``.

    .venv/bin/python docs/sync.py           # rewrite every stale block in place (make docs)
    .venv/bin/python docs/sync.py --check   # list the stale blocks, exit 1 if any

tests/test_readme.py runs the check, so a rerun that moves the committed results or a command
whose output changed fails the suite until ``make docs`` is run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?P<open><!-- (?P<kind>quote|output): (?P<spec>.+?) -->\n)(?P<body>.*?)"
                   r"(?P<close><!-- /(?P=kind) -->)", re.DOTALL)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def section(path: Path, heading: str, part: str | None) -> str:
    """The lines under ``heading`` in ``path`` up to the next heading of any level (``part``:
    only the Markdown table, or only the bullet items with their continuation lines)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if heading not in lines:
        raise ValueError(f"{path.relative_to(ROOT)} has no line {heading!r}")
    body: list[str] = []
    for line in lines[lines.index(heading) + 1:]:
        if line.startswith("#"):
            break
        body.append(line)
    if part == "table":
        body = [line for line in body if line.startswith("|")]
    elif part == "bullets":
        kept, inside = [], False
        for line in body:
            inside = line.startswith("- ") or (inside and line.startswith("  "))
            if inside:
                kept.append(line)
        body = kept
    elif part is not None:
        raise ValueError(f"unknown part {part!r}: expected table or bullets")
    return "\n".join(body).strip("\n") + "\n"


def command_output(command: str) -> str:
    environment = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                   "COLUMNS": "120", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(command, shell=True, cwd=ROOT, env=environment, capture_output=True, text=True,
                            timeout=300)
    output = (result.stdout + result.stderr).rstrip("\n") + "\n"
    if "--md" in command.split():
        return output
    return f"```\n$ {command}\n{output}```\n"


def expected(kind: str, spec: str) -> str:
    if kind == "output":
        return command_output(spec)
    path, _, rest = spec.partition(" ")
    part = None
    for name in ("table", "bullets"):
        if rest.endswith(f" {name}"):
            rest, part = rest[: -len(name) - 1], name
    return section(ROOT / path, rest, part)


def stale_blocks(paths: list[Path] | None = None) -> list[tuple[Path, str, str, str]]:
    """(document, opening comment, what it holds, what it should hold) for every stale block."""
    stale = []
    for path in paths or documents():
        for match in BLOCK.finditer(path.read_text(encoding="utf-8")):
            want = expected(match["kind"], match["spec"])
            if match["body"] != want:
                stale.append((path, match["open"].strip(), match["body"], want))
    return stale


def rewrite(paths: list[Path] | None = None) -> list[Path]:
    changed = []
    for path in paths or documents():
        text = path.read_text(encoding="utf-8")
        new = BLOCK.sub(lambda match: match["open"] + expected(match["kind"], match["spec"]) + match["close"], text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments.add_argument("--check", action="store_true", help="only list stale blocks; exit 1 if any")
    if arguments.parse_args().check:
        stale = stale_blocks()
        for path, opening, _, _ in stale:
            print(f"{path.relative_to(ROOT)}: stale: {opening}")
        sys.exit(1 if stale else 0)
    for path in rewrite():
        print(f"updated {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
