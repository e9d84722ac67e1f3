"""Pipeline stages: one module or package per DVC stage, each runnable as ``python -m stages.<name>``.

A stage's own helpers live in its package (``stages/train/``, ``stages/preprocess/``, ...);
``stages.common`` holds only what several stages share (params, paths, output schemas, the numpy
format, seeding, the architecture spec, metrics, atomic writes). docs/design.md lists them all.

A stage started by an interpreter without the project's packages says so in one line (see
``stages.common.failures.require_packages``, standard library only).
"""

from stages.common.failures import require_packages

require_packages()
