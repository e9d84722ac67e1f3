"""Recognising a numpy file before ``np.load`` reads it.

Without pickle, numpy reads a file that lacks the ``.npy`` magic as a pickle and refuses it as
"pickled (object) data": random bytes, an empty or truncated file, an HTML page all get that
message. ``check(path, rerun)`` looks at the first bytes instead and names what the file is
not: a ``.npy`` starts with ``\\x93NUMPY``, a ``.npz`` is a zip archive. A missing file is left
to the caller (``FileNotFoundError``), which knows the stage that writes it.
"""

from __future__ import annotations

from pathlib import Path

from stages.common.failures import StageError

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip's end record


def check(path: Path, rerun: str) -> None:
    """Raise StageError "<path>: not a numpy file (...); <rerun>" unless ``path`` starts as a
    ``.npy`` file, or for a ``.npz`` name as a zip archive."""
    with open(path, "rb") as handle:
        start = handle.read(len(NPY_MAGIC))
    archive = Path(path).suffix == ".npz"
    if start.startswith(ZIP_MAGICS if archive else (NPY_MAGIC,)):
        return
    found = "it is empty" if not start else f"it starts with {start!r}"
    expected = "a .npz file is a zip archive" if archive else f"a .npy file starts with {NPY_MAGIC!r}"
    raise StageError(f"{path}: not a numpy file ({found}; {expected}); {rerun}")
