"""Run a grid of DVC experiments on a Dask cluster (``python -m sweep grid.yaml``).

The grid is written in DVC's own ``dvc exp run -S`` syntax (choice and range sweeps expand to a
product, as with ``dvc exp run --queue``). Each Dask task runs one experiment with real DVC in a
fresh clone of the git remote at the sweep's commit and pushes it to the git and DVC remotes;
the driver then pulls every finished experiment back, so ``dvc exp show`` lists the grid.

Modules: ``grid`` (grid file, expansion, names: pure), ``gitrepo`` (the local repository and
the remote's experiment refs), ``task`` (what a worker runs; standard library only, shipped to
the workers by value), ``engine`` (the Dask client and the progress loop), ``report``
(progress lines, summary table, logs), ``cli`` (the command line).
"""
