"""The README's results are the committed report's: every row of its results table, value for
value, is a row of ``reports/report.md``'s table of every framework (a rerun that moves the
results and a README left behind fail here)."""

from tests.support import PROJECT_ROOT


def table_rows(markdown: str, header: str) -> dict[str, list[str]]:
    """The rows (label -> cells) of the first Markdown table after the line ``header``."""
    lines = markdown.splitlines()
    start = lines.index(header)
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] and not set(cells[0]) <= {":", "-"}:
            rows[cells[0]] = cells[1:]
    return rows


def test_readme_results_table_is_the_committed_reports():
    readme = table_rows((PROJECT_ROOT / "README.md").read_text(encoding="utf-8"),
                        "## Results (default params, real MNIST, this machine: 2 CPU cores)")
    report = table_rows((PROJECT_ROOT / "reports" / "report.md").read_text(encoding="utf-8"),
                        "## Every framework")
    assert len(readme) >= 7
    for label, values in readme.items():
        assert report.get(label.replace(", batch 1000", "")) == values, label
