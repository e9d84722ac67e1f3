"""Stage ``preprocess``: IDX files -> the shared numpy format.

``python -m stages.preprocess`` (see ``__main__.py``). Modules: ``idx`` (the IDX reader and writer).
"""
