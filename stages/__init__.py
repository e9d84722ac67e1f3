"""Pipeline stages: one module per DVC stage, each runnable as ``python -m stages.<name>``.

``stages.common`` holds the small shared modules (params, IDX format, numpy format, seeding,
architecture spec, metrics) that the stage modules build on.

A stage started by an interpreter without the project's packages says so in one line (see
``stages.common.errors.require_packages``).
"""

from stages.common.errors import require_packages

require_packages()
