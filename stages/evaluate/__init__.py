"""Stage ``evaluate``: test-set metrics, predictions and speed of one trained replicate.

``python -m stages.evaluate <framework> <seed> [--tuning tuned]`` (see ``__main__.py``). Modules:
``trained`` (a trained replicate read back, also used by ``export``).
"""
