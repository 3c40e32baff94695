"""The commands' numeric option types: a value out of range is argparse's usage error, before any work."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from django.core.management import load_command_class

from core import options


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "x", "", "101"])
def test_integer_refuses_what_is_not_an_integer_in_range(text: str) -> None:
    with pytest.raises(
        argparse.ArgumentTypeError, match=rf"expected an integer >= 1 and <= 100, got '{text}'"
    ):
        options.integer(1, 100)(text)


@pytest.mark.parametrize(("text", "value"), [("1", 1), ("100", 100), (" 7 ", 7)])
def test_integer_takes_an_integer_in_range(text: str, value: int) -> None:
    assert options.integer(1, 100)(text) == value


@pytest.mark.parametrize("text", ["-0.5", "3600.1", "nan", "inf", "-inf", "soon"])
def test_number_refuses_what_is_not_a_finite_number_in_range(text: str) -> None:
    with pytest.raises(
        argparse.ArgumentTypeError, match=rf"expected a number >= 0 and <= 3600, got '{text}'"
    ):
        options.number(0, 3600)(text)


@pytest.mark.parametrize(("text", "value"), [("0", 0.0), ("2.5", 2.5), ("3600", 3600.0)])
def test_number_takes_a_number_in_range(text: str, value: float) -> None:
    assert options.number(0, 3600)(text) == value


@pytest.mark.parametrize("wait", ["-1", "nan", "inf", "1e9"])
def test_check_logging_refuses_a_wait_out_of_range_before_emitting_anything(
    capsys: pytest.CaptureFixture[str], settings: Any, wait: str
) -> None:
    """`--wait nan` or `inf` polled CloudWatch for ever; a negative wait was taken as 0."""
    settings.CLOUDWATCH_LOG_GROUP = "/paymentsite/tests"  # configured: only the option can stop it
    with pytest.raises(SystemExit) as exited:
        load_command_class("core", "check_logging").run_from_argv(
            ["manage.py", "check_logging", "--wait", wait]
        )

    assert exited.value.code == 2
    captured = capsys.readouterr()
    *usage, line = captured.err.strip().splitlines()
    assert usage[0].startswith("usage: manage.py check_logging")
    expected = f"argument --wait: expected a number >= 0 and <= 3600, got '{wait}'"
    assert line == f"manage.py check_logging: error: {expected}"
    assert captured.out == "", "nothing was emitted or printed"
