"""What the sweep prints and writes: progress lines, failure reports, the summary table, logs."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from pathlib import Path

STATUSES = ("done", "skipped", "failed", "error")
FAILURE_LINES = 15  # log lines printed under a failed experiment (the whole log is in its file)
# DVC's notes, at the start of an experiment, on outputs the commit has no hash for: not the cause
NOISE = ("WARNING: No file hash info found",)


def progress(counts: dict[str, int]) -> str:
    """``sweep: 2 finished, 1 running, 1 failed, 3 queued (of 7)``."""
    total = counts.get("total", 0)
    return (f"sweep: {counts.get('finished', 0)} finished, {counts.get('running', 0)} running, "
            f"{counts.get('failed', 0)} failed, {counts.get('queued', 0)} queued (of {total})")


def counts(total: int, results: list[dict], running: int) -> dict[str, int]:
    finished = sum(result["status"] == "done" for result in results)
    failed = sum(result["status"] in ("failed", "error") for result in results)
    running = min(running, total - finished - failed)
    return {"total": total, "finished": finished, "failed": failed, "running": running,
            "queued": total - finished - failed - running}


def event(result: dict) -> str:
    """One line per finished experiment, plus the log tail and overrides of a failed one."""
    overrides = " ".join(result["overrides"]) or "(base params)"
    seconds = f" in {result['seconds']:.0f} s" if result.get("seconds") else ""
    if result["status"] == "done":
        return f"done    {result['name']}  {overrides}{seconds}"
    if result["status"] == "skipped":
        return f"skipped {result['name']}  {overrides}  (already on the git remote)"
    lines = [f"FAILED  {result['name']}  {overrides}{seconds}"]
    if result["status"] == "error":
        lines.append(f"  the task itself failed (after Dask's retries): {result.get('error', '')}")
    log_tail = [line for line in (result.get("log") or "").splitlines()
                if not line.startswith(NOISE)][-FAILURE_LINES:]
    lines.extend(f"  | {line}" for line in log_tail)
    if result.get("log_path"):
        lines.append(f"  full log: {result['log_path']}")
    lines.append(f"  rerun it alone: {rerun_command(result['overrides'])}")
    return "\n".join(lines)


def rerun_command(overrides: list[str]) -> str:
    """The ``dvc exp run`` that reruns one point in the user's checkout, quoted for a POSIX shell."""
    return " ".join(["dvc exp run", *(f"-S {shlex.quote(override)}" for override in overrides)])


def summary(results: list[dict]) -> str:
    """A fixed-width table: experiment, status, seconds, overrides; then the totals."""
    header = ("experiment", "status", "seconds", "overrides")
    rows = [(r["name"], r["status"], f"{r['seconds']:.0f}" if r.get("seconds") else "-",
             " ".join(r["overrides"]) or "(base params)") for r in results]
    widths = [max(len(row[index]) for row in [header, *rows]) for index in range(3)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]

    tally = Counter(r["status"] for r in results)
    totals = ", ".join(f"{tally[status]} {status}" for status in STATUSES if tally[status])
    return "\n".join([line(header), line(tuple("-" * w for w in widths) + ("-" * 9,)),
                      *(line(row) for row in rows), f"{len(results)} experiments: {totals or 'none'}"])


def write_log(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.log"
    path.write_text(text + "\n", encoding="utf-8")
    return path


def write_json(path: Path, results: list[dict], prepared: dict | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"prepare": prepared, "experiments": results}, indent=2) + "\n", encoding="utf-8")
