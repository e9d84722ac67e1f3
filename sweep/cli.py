"""Command line: ``python -m sweep grid.yaml [options]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sweep import driver
from sweep.gitrepo import RepoError
from sweep.grid import GridError

DESCRIPTION = """\
Run a grid of DVC experiments on a Dask cluster.

Reads: GRID (YAML: `params:` and/or `grids:`, lists of `dvc exp run -S` overrides in DVC's sweep
syntax, e.g. `train.learning_rate=0.001,0.01` or `train.batch_size=range(32,129,32)`, and an
optional `name:` prefix), the repository's HEAD commit (which must be on the git remote), its git
remote and its DVC remote. Each experiment runs as one Dask task in a fresh clone of the git
remote (`dvc exp run --pull -n <name> -S ...`) and is pushed with `dvc exp push` (git refs to the
git remote, outputs to the DVC remote). The stages no override can change run once first, and
their outputs go to the DVC remote and its run cache, so no experiment recomputes them.

Writes: experiment refs on the git remote and outputs in the DVC remote; then pulls every
finished experiment into this repository (`dvc exp show` lists them), one log per experiment
under .dvc/tmp/sweep/<commit>/ (or --logs) and, with --json, a machine-readable summary.
Experiments already on the git remote for this commit are skipped. Exit status: 0 if every
experiment finished, 1 if one failed, 2 for an invalid grid, repository or option.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sweep", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", nargs="?", type=Path, help="grid file (YAML); optional with -S")
    p.add_argument("-S", "--set-param", action="append", default=[], metavar="KEY=VALUES",
                   help="one more override for a grid of its own (dvc exp run -S syntax); repeatable")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="a running Dask scheduler (tcp://host:8786); default: a local cluster on this machine")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local cluster size; default: cores // train.threads (each worker runs one experiment)")
    p.add_argument("--git-remote", default="origin", metavar="NAME|URL",
                   help="git remote the workers clone from and push to (default: origin)")
    p.add_argument("--dvc-remote", metavar="NAME", help="DVC remote for outputs (default: the default remote)")
    p.add_argument("--upstream", action="append", metavar="STAGE",
                   help="stage to run once before the grid (repeatable); default: every stage no override "
                        "changes, found from dvc.yaml's params")
    p.add_argument("--no-upstream", action="store_true", help="run no stage before the grid")
    p.add_argument("--retries", type=int, default=2, metavar="N",
                   help="Dask retries of a task that raised (clone, push; default: 2). A worker dying during a "
                        "task is retried by the scheduler (distributed.scheduler.allowed-failures)")
    p.add_argument("--workdir", metavar="DIR", help="where workers make their temporary clones (default: system temp)")
    p.add_argument("--logs", type=Path, metavar="DIR", help="experiment logs folder (default: .dvc/tmp/sweep/<commit>)")
    p.add_argument("--json", type=Path, dest="json_path", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--no-pull", action="store_true", help="leave the experiments on the remotes, do not dvc exp pull")
    p.add_argument("--progress-interval", type=float, default=30.0, metavar="S",
                   help="repeat the progress line at least this often (default: 30 s; it also prints on change)")
    p.add_argument("--dry-run", action="store_true", help="list the grid's experiments and what is left to run")
    return p


def options(args: argparse.Namespace) -> driver.Options:
    if args.grid is None and not args.set_param:
        raise GridError("no grid: give a grid file or -S options (see --help)")
    for name in ("workers", "retries"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "workers" else 0):
            raise GridError(f"--{name}: expected at least {1 if name == 'workers' else 0}, got {value}")
    upstream = () if args.no_upstream else (tuple(args.upstream) if args.upstream else None)
    return driver.Options(grid_file=args.grid, set_params=tuple(args.set_param), scheduler=args.scheduler,
                          workers=args.workers, git_remote=args.git_remote, dvc_remote=args.dvc_remote,
                          upstream=upstream, retries=args.retries, workdir=args.workdir, logs=args.logs,
                          json_path=args.json_path, pull=not args.no_pull, dry_run=args.dry_run,
                          progress_interval=args.progress_interval)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return driver.execute(options(args), Path.cwd(), say=lambda line: print(line, flush=True))
    except (GridError, RepoError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sweep: interrupted; experiments already pushed stay on the remotes, a rerun skips them",
              file=sys.stderr)
        return 130
