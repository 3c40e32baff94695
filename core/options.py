"""argparse types for the commands' numeric options: the range is checked while the command line is
parsed, before any work, and a value out of range is argparse's own usage error (the usage, then
one line naming the option, exit status 2).

Written here because argparse checks a range only through `choices`, which needs every value
listed (and prints them in the usage); Django adds nothing for it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _bounds(kind: str, minimum: float, maximum: float | None) -> str:
    return f"{kind} >= {minimum:g}" + (f" and <= {maximum:g}" if maximum is not None else "")


def integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """`type=integer(1)`: an integer >= minimum (and <= maximum)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(
                f"expected {_bounds('an integer', minimum, maximum)}, got {text!r}"
            )
        return value

    return parse


def number(minimum: float, maximum: float) -> Callable[[str], float]:
    """`type=number(0, 3600)`: a finite number in the range (never nan or inf)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and minimum <= value <= maximum):
            raise argparse.ArgumentTypeError(
                f"expected {_bounds('a number', minimum, maximum)}, got {text!r}"
            )
        return value

    return parse
