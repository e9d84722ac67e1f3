"""Pipeline stages: one module per DVC stage, each runnable as ``python -m stages.<name>``.

``stages.common`` holds the small shared modules (params, IDX format, numpy format, seeding,
architecture spec, metrics) that the stage modules build on.
"""
