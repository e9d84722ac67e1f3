"""Pipeline stages: one module per DVC stage, each runnable as ``python -m stages.<name>``.

``stages.common`` holds the small shared modules (params, IDX format, numpy format, seeding,
architecture spec, metrics) that the stage modules build on.

A stage started by an interpreter without the project's packages says so in one line (see
``stages.common.errors.report_missing_packages``).
"""

from stages.common.errors import report_missing_packages

report_missing_packages()
