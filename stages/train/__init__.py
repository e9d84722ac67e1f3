"""Stage ``train``: one replicate of the shared architecture, trained by one framework.

``python -m stages.train <framework> <seed> [--tuning tuned]`` (see ``__main__.py``). Modules:
``training`` (the framework-neutral loop around a backend, and the writers of its two folders).
"""
