"""Stage ``report``: compare every framework over every replicate seed, with intervals.

``python -m stages.report`` (see ``__main__.py``; each module's docstring says what it holds, and
docs/design.md lists them). No deep-learning framework is imported.
"""
