"""Stage ``report``: compare every framework over every replicate seed, with intervals.

``python -m stages.report`` (see ``__main__.py``). Modules: ``inputs`` (read and check every
replicate's files), ``stats`` (scipy-based intervals and tests), ``compare`` (what is compared
and the sentences that state it), ``figures`` (one function per figure), ``markdown``
(report.md). No deep-learning framework is imported.
"""
