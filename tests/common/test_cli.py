"""The shared command line: which tuned switches a run turns on (``--tuning``, ``--switches``)."""

from __future__ import annotations

import pytest

from stages.common import cli
from stages.common.errors import StageError

TUNED = ("fast_a", "fast_b", "fast_c")


def test_stock_turns_no_switch_on_and_tuned_turns_on_all_of_them():
    assert cli.switches("toy", "stock", None, TUNED) == ()
    assert cli.switches("toy", "tuned", None, TUNED) == TUNED


def test_switches_picks_some_of_the_tuned_ones_in_the_backends_order():
    assert cli.switches("toy", "tuned", ("fast_c", "fast_a"), TUNED) == ("fast_a", "fast_c")


def test_an_unknown_switch_is_refused_naming_it_and_the_choices():
    with pytest.raises(StageError, match=r"--switches: fast_z is not a tuned switch of toy; expected some of "
                                         r"fast_a, fast_b, fast_c"):
        cli.switches("toy", "tuned", ("fast_a", "fast_z"), TUNED)


def test_switches_without_the_tuned_level_are_refused():
    with pytest.raises(StageError, match="--switches needs --tuning tuned"):
        cli.switches("toy", "stock", ("fast_a",), TUNED)


def test_the_option_parses_a_comma_separated_list():
    arguments = cli.parser("stages.toy", "Reads nothing. Writes nothing.")
    cli.add_tuning(arguments, ("stock", "tuned"))
    parsed = arguments.parse_args(["--tuning", "tuned", "--switches", "fast_b,fast_a"])
    assert (parsed.tuning, parsed.switches) == ("tuned", ("fast_b", "fast_a"))
    assert arguments.parse_args([]).switches is None


@pytest.mark.parametrize("empty", ["", ",", " , "])
def test_an_empty_switch_list_is_refused_in_one_line(empty, capsys):
    arguments = cli.parser("stages.toy", "Reads nothing. Writes nothing.")
    cli.add_tuning(arguments, ("stock", "tuned"))

    with pytest.raises(SystemExit) as exited:
        arguments.parse_args(["--tuning", "tuned", f"--switches={empty}"])

    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert exited.value.code == 2
    assert errors == [f"python -m stages.toy: error: argument --switches: expected one or more switch names, "
                      f"comma-separated, got {empty!r}; leave --switches out to turn on all of the tuned level's "
                      "switches"]
