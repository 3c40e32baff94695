"""The failpoints the code hits are the ones a test can arm, and each one is hit somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from payments import failpoints

PAYMENTS = Path(failpoints.__file__).parent
HIT = re.compile(r"""failpoints\.hit\(\s*["']([^"']+)["']\s*\)""")


def _points_hit() -> set[str]:
    return {name for path in PAYMENTS.rglob("*.py") for name in HIT.findall(path.read_text())}


def test_every_point_the_code_hits_can_be_armed_and_every_point_is_hit() -> None:
    hit = _points_hit()
    assert "refund.settle" in hit, "the scan finds the refund path's points"
    assert hit == failpoints.POINTS


def test_an_unknown_point_cannot_be_armed() -> None:
    with pytest.raises(ValueError, match="No failpoint"), failpoints.armed("refund.nowhere", lambda: None):
        pass
