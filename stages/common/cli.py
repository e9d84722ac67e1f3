"""The command line every stage shares: ``--help`` prints the module's docstring (what the stage
reads and writes, its reStructuredText ``literals`` shown as `literals`) and exits without
touching anything; unknown arguments are refused with a usage line and exit status 2
(argparse's convention), an unknown flag named before any missing argument."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any

RST_LITERAL = re.compile(r"``([^`]+)``")
NEGATIVE_NUMBER = re.compile(r"-\d+$|-\d*\.\d+$")  # argparse's own pattern


class StageParser(argparse.ArgumentParser):
    """argparse, except that an unknown flag is reported first: plain argparse checks the
    required positionals before it looks at unknown flags, so ``--bogus`` alone would be
    answered with "the following arguments are required". The parser keeps the option strings
    it was given (``add_argument`` returns each ``Action`` with its ``option_strings``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.flags: set[str] = set()  # before argparse's own __init__ adds -h/--help
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.flags.update(action.option_strings)
        return action

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: Any = None) -> tuple[Any, list[str]]:
        arguments = list(sys.argv[1:] if args is None else args)
        unknown = [argument for argument in arguments[:_end_of_options(arguments)] if self._is_unknown_flag(argument)]
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return super().parse_known_args(arguments, namespace)

    def _is_unknown_flag(self, argument: str) -> bool:
        if not argument.startswith("-") or argument == "-" or NEGATIVE_NUMBER.fullmatch(argument):
            return False  # a positional (or a negative number)
        name = argument.split("=", 1)[0]
        if name.startswith("--"):  # argparse accepts an unambiguous prefix of a long option
            return not any(flag.startswith(name) for flag in self.flags if flag.startswith("--"))
        return name[:2] not in self.flags


def _end_of_options(arguments: list[str]) -> int:
    return arguments.index("--") if "--" in arguments else len(arguments)


def plain_text(doc: str | None) -> str | None:
    """A module docstring for the terminal: reStructuredText's double backticks become single ones."""
    return None if doc is None else RST_LITERAL.sub(r"`\1`", doc)


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    return StageParser(prog=f"python -m {module}", description=plain_text(doc),
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


TUNING_HELP = "stock (default): the framework as its getting-started guide writes it; tuned: plus its docs' switches"
SWITCHES_HELP = ("with --tuning tuned: turn on only these of the backend's tuned switches, comma-separated "
                 "(default: all of them); measures one switch alone (bench/fair_bench.py)")


def add_tuning(arguments: argparse.ArgumentParser, levels: tuple[str, ...]) -> None:
    """``--tuning`` (the level) and ``--switches`` (a subset of the tuned level's switches)."""
    arguments.add_argument("--tuning", choices=levels, default="stock", help=TUNING_HELP)
    arguments.add_argument("--switches", type=switch_names, default=None, help=SWITCHES_HELP)


def switch_names(text: str) -> tuple[str, ...]:
    """``--switches``' comma-separated names; none at all is refused: the run would overwrite the
    tuned arm's model with one that had no switch on."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected one or more switch names, comma-separated, got {text!r}; leave "
                                         "--switches out to turn on all of the tuned level's switches")
    return names


def switches(framework: str, tuning: str, requested: tuple[str, ...] | None, tuned: tuple[str, ...]) -> tuple[str, ...]:
    """The switches a run turns on: none for stock, the backend's ``tuned`` ones, or ``requested`` of them."""
    from stages.common.failures import StageError

    if requested is None:
        return tuned if tuning == "tuned" else ()
    if tuning != "tuned":
        raise StageError("--switches needs --tuning tuned: the stock level turns no switch on")
    unknown = [name for name in requested if name not in tuned]
    if unknown:
        raise StageError(f"--switches: {', '.join(unknown)} is not a tuned switch of {framework}; expected some of "
                         f"{', '.join(tuned)}")
    return tuple(name for name in tuned if name in requested)
