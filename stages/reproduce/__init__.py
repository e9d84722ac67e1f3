"""The reproduction of a committed study: ``python -m stages.reproduce --help`` (``__main__.py``)."""
