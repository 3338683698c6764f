"""Every numeric option of every command has a range and refuses what lies outside it while the arguments are
parsed (issue: nothing lost): zero, negatives, huge numbers, NaN, infinities and text are one `lowloss: error:`
line naming the option, exit 2, before any data is loaded or any file is written. Options a method does not
read are refused too, never ignored."""

from __future__ import annotations

import argparse

import pytest

from lowloss.cli.main import build_parser
from lowloss.cli.options import MAX_SEED
from tests.conftest import assert_one_line_error, hashes, run_main

MODEL = ["--model", "tests.user_models:TinyCNN"]
REQUIRED = {
    "train": [],
    "import": ["a.pt", *MODEL],
    "fit-curve": ["a.safetensors", "b.safetensors"],
    "fit-connector": ["--method", "realnvp-flow", "--model-set", "V.json"],
    "match": ["a.safetensors", "b.safetensors"],
    "connect": ["a.safetensors", "b.safetensors", "--method", "linear"],
    "ensemble": ["a.safetensors", "b.safetensors", "--independent"],
    "info": MODEL,
}
"""What each command that takes numbers needs besides its numeric options (files that need not exist: a bad
number is refused before any file is looked at)."""
WRITES_NOTHING = {"info"}
"""Commands without an --out."""
BAD = ["-1", "-0.5", "1e9", "9" * 30, str(2**64), "1e400", "nan", "inf", "-inf", "text", "", "0x10", "1;5"]
"""Refused by every numeric option."""
ZERO_ALLOWED = {"--seed", "--weight-decay", "fit-curve --epochs", "--wm-sweeps"}
"""The options (or command and option) whose range starts at 0, where 0 leaves a curve's bends where they start
and weight matching at its aligned start; every other one refuses 0 as well."""
BAD_IN_A_LIST = {
    "--widths": ["64,0", "64,-1", "64,70000", "64,nan", "64,"],
    "--channels": ["8,0", "8,5000", "8,1e3"],
    "--input-size": ["3,32", "3,32,0", "3,32,-1", "3,32,5000", "2000,32,32", "3,32,1e3", "3,32,nan", "3,32,32,32"],
    "--normalize": [
        "0.5,0",
        "0.5,-0.2",
        "0.5,1.5",
        "-0.1,0.5",
        "1.5,0.5",
        "0.5,nan",
        "nan,0.5",
        "0.5,inf",
        "0.5,1e400",
    ],
}
"""Values of list options that are refused although their parts are numbers: one part out of range, or the
wrong number of parts."""
LIST_TYPES = ("list", "parse_input_size", "normalization")


def numeric_options() -> list[tuple[str, str]]:
    """(command, option) for every option of every command whose value is a number or a list of numbers."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    found = []
    for name, command in commands.items():
        for action in command._actions:
            if action.type in (int, float):
                raise AssertionError(f"{name} {action.option_strings}: a number without a range")
            if getattr(action.type, "__name__", "") in ("integer", "number", "seed", "wa_breakpoints", *LIST_TYPES):
                found.append((name, action.option_strings[0]))
    return found


OPTIONS = numeric_options()


def test_every_command_that_takes_numbers_is_covered():
    assert {command for command, _ in OPTIONS} == set(REQUIRED)
    assert len(OPTIONS) >= 40
    assert {"--input-size", "--normalize", "--bn-batches", "--repair-batches"} <= {option for _, option in OPTIONS}


@pytest.mark.parametrize("command,option", OPTIONS, ids=[f"{c} {o}" for c, o in OPTIONS])
def test_every_numeric_option_refuses_what_lies_outside_its_range(command, option, tmp_path, capsys, no_data):
    before = hashes(tmp_path)
    values = [*BAD, *([] if {option, f"{command} {option}"} & ZERO_ALLOWED else ["0"]), *BAD_IN_A_LIST.get(option, [])]
    out = [] if command in WRITES_NOTHING else ["--out", tmp_path / "x.safetensors"]
    for value in values:
        result = run_main(capsys, command, *REQUIRED[command], option, value, *out)
        assert_one_line_error(result, f"argument {option}: ")
    assert hashes(tmp_path) == before


@pytest.mark.parametrize("value", ["0", str(MAX_SEED)])
def test_the_ends_of_the_seed_range_are_seeds(value):
    args = build_parser().parse_args(["train", "--seed", value, "--out", "m.safetensors"])
    assert args.seed == int(value)


@pytest.mark.parametrize(
    "option,value,parsed",
    [
        ("--input-size", "1024,4096,4096", (1024, 4096, 4096)),
        ("--input-size", "1,1,1", (1, 1, 1)),
        ("--normalize", "0,1", ((0.0,), (1.0,))),
        ("--normalize", "1,0.5,0.5,0.25", ((1.0, 0.5), (0.5, 0.25))),
    ],
)
def test_the_ends_of_the_list_ranges_are_accepted(option, value, parsed):
    command = ["connect", "a.safetensors", "b.safetensors", "--method", "linear", "--out", "p.csv"]
    args = build_parser().parse_args([*command, option, value])
    assert getattr(args, option.removeprefix("--").replace("-", "_")) == parsed


def test_a_seed_beyond_the_range_says_the_range(capsys, no_data):
    result = run_main(capsys, "train", "--seed", "20000000000000", "--out", "m.safetensors")
    assert_one_line_error(result, f"argument --seed: must be at most {MAX_SEED}, got 20000000000000")


@pytest.mark.parametrize(
    "method,option,value,fragment",
    [
        ("linear", "--matching", "m.safetensors", "--matching applies to ot, weight-matching, ot+wa, ot+bfly"),
        ("ot", "--wa-breakpoints", "3", "--wa-breakpoints applies to linear+wa, arc+wa, ot+wa"),
        ("linear+bfly", "--wa-breakpoints", "all", "method 'linear+bfly' does not read it"),
        ("arc", "--wa-samples", "100", "--wa-samples applies to linear+wa, linear+bfly"),
        ("linear", "--connector", "c.safetensors", "--connector applies to realnvp-flow, iaf-flow, realnvp-bijection"),
        ("ot", "--curve", "c.safetensors", "--curve applies to garipov-polychain-3"),
        ("linear", "--allow-seen", None, "--allow-seen applies to realnvp-flow"),
        ("ot+wa", "--repair-batches", "4", "--repair-batches applies to *+repair methods"),
    ],
)
def test_an_option_the_method_does_not_read_is_refused(method, option, value, fragment, tmp_path, capsys, no_data):
    args = ["connect", "a.safetensors", "b.safetensors", "--method", method, option, *([value] if value else [])]
    assert_one_line_error(run_main(capsys, *args, "--out", tmp_path / "p.csv"), fragment)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["match", "a.safetensors", "b.safetensors", "--method", "linear"], "method 'linear' uses no matching"),
        (["match", "a.safetensors", "b.safetensors", "--wa-samples", "10"], "--wa-samples applies to the route"),
        (["ensemble", "a.safetensors", "b.safetensors", "--independent", "--wa-samples", "10"], "applies to WA(N)"),
        (["fit-connector", "--method", "realnvp-flow", "--model-set", "V.json", "--t-uniform"], "Bijection"),
    ],
)
def test_other_commands_refuse_options_their_choice_does_not_read(args, fragment, tmp_path, capsys, no_data):
    out = tmp_path / "x.safetensors"
    assert_one_line_error(run_main(capsys, *args, "--out", out), fragment)
    assert list(tmp_path.iterdir()) == []
