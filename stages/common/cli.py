"""The command line every stage shares: ``--help`` prints the module's docstring (what the stage
reads and writes) and exits without touching anything; unknown arguments are refused with a
usage line and exit status 2 (argparse's convention)."""

from __future__ import annotations

import argparse


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def seed_argument(text: str) -> int:
    """A replicate seed on the command line (the matrix value from dvc.yaml)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole-number seed, got {text!r}") from None
    if not 0 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {2**31 - 1}, got {value}")
    return value
