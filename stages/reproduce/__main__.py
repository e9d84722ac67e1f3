"""Did the rerun reproduce the study? The workspace's results against a git revision's committed ones.

Not a stage of the pipeline: run it after `make run` (or `dvc repro`) to compare what the rerun
wrote with what ``--against REV`` (default ``HEAD``) committed. Reads, from the revision through
git (nothing is checked out, no DVC cache is needed): ``dvc.lock`` (the outputs' md5s, the params
each stage recorded), ``params.yaml`` (``report.equivalence``: the study's margins),
``eval/<arm>/<seed>/metrics.json`` and ``dvclive/<arm>/<seed>/metrics.json`` (test figures,
timings, the recorded environment), ``reports/verdicts.json`` (or ``reports/report.md``'s
Conclusions) and ``timing/sittings.json``; and the same files in the workspace, whose DVC
outputs (``models/``, ``eval/<arm>/<seed>/predictions.npy``, ``data/``) are hashed as DVC hashes
them. Prints one line:

- ``reproduced bitwise``: the same params; data, initial weights, models and predictions
  byte-identical, and the same test figures;
- ``reproduced within margins``: the same params; per arm, old against new test accuracy, loss
  and macro F1 paired by seed are equivalent within ``report.equivalence`` (the report's TOST),
  and no accuracy, loss or F1 conclusion changed its word;
- ``not reproduced: ...``: what failed (params that differ, as ``dvc params diff`` names them;
  missing replicates; metrics beyond the margins; changed conclusions). Exit status 1.

Speed verdicts are compared, never failed: on another machine (another recorded CPU) they are
"not comparable: another machine". Writes ``reports/reproduction.md`` (the whole comparison:
bitwise, margins, conclusions side by side, speed, the environment fields that differ, params),
which ``.dvcignore`` keeps out of the ``report`` stage's output.
"""

from __future__ import annotations

import logging
import sys

from stages.common import atomic, cli, paths
from stages.common.errors import run_stage
from stages.reproduce import checks, sources
from stages.reproduce.verdict import Reproduction, render

log = logging.getLogger("reproduce")


def compare(revision: sources.Revision, workspace: sources.Source) -> Reproduction:
    old_lock, new_lock = sources.read_lock(revision), sources.read_lock(workspace)
    hashes = {path: sources.workspace_md5(path) for path in old_lock.outputs}
    old_eval, new_eval = checks.records(revision, "eval"), checks.records(workspace, "eval")
    if not old_eval:
        raise sources.StageError(f"{revision.name}: no eval/<arm>/<seed>/metrics.json committed; expected a "
                                 "revision with the study's results")
    old_logs, new_logs = checks.records(revision, "dvclive"), checks.records(workspace, "dvclive")
    margins, missing = checks.margins(old_eval, new_eval, checks.report_settings(revision))
    arms = sorted(set(old_eval) | set(new_eval))
    conclusions = checks.conclusions(checks.recorded_verdicts(revision, arms),
                                     checks.recorded_verdicts(workspace, arms))
    pairs = list(dict.fromkeys(item.pair for item in conclusions if item.speed))
    old_machines, new_machines = checks.machines(old_eval), checks.machines(new_eval)
    speeds = checks.speeds(pairs, (old_eval, old_logs), (new_eval, new_logs), old_machines == new_machines,
                           checks.sittings_record(revision))
    environment = checks.environment_diff(checks.environments(old_eval), checks.environments(new_eval))
    return Reproduction(revision.described, checks.artifacts(old_lock, hashes), margins, missing, conclusions,
                        speeds, environment, checks.params_diff(old_lock, new_lock),
                        ("; ".join(sorted(old_machines)), "; ".join(sorted(new_machines))))


def main(argv: list[str] | None = None) -> int:
    arguments = cli.parser("stages.reproduce", __doc__)
    arguments.add_argument("--against", default="HEAD", metavar="REV",
                           help="the git revision whose committed results to compare with (default: HEAD)")
    options = arguments.parse_args(argv)
    result = compare(sources.Revision(options.against), sources.Workspace())
    atomic.write_text(paths.REPRODUCTION, render(result))
    summary = result.summary()
    print(summary)
    log.info("wrote %s", paths.REPRODUCTION)
    return 1 if summary.startswith("not reproduced") else 0


if __name__ == "__main__":
    run_stage(lambda: sys.exit(main(sys.argv[1:])), "reproduce")
