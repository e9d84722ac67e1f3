"""Stage ``evaluate``: test-set metrics, predictions and speed of one trained replicate.

``python -m stages.evaluate <framework> <seed> [--tuning tuned]`` (see ``__main__.py``); the
trained replicate is read back by ``stages.common.trained``, which ``export`` shares.
"""
