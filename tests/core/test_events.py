"""Every event the code logs is in the catalogue, and README's catalogue is the code's."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from django.conf import settings

from core.events import EVENT_CATALOGUE

SOURCE_DIRS = ("payments", "paymentsite", "health", "apikeys")
EVENT_NAME = re.compile(r"[a-z]+\.[a-z_]+")


def _logged_event_names(tree: ast.AST) -> set[str]:
    """`log_event(logger, "x.y", …)` literals, and the values of `…_EVENTS = {…}` tables."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "log_event"
            and len(node.args) > 1
        ):
            argument = node.args[1]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                names.add(argument.value)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(getattr(t, "id", "").endswith("_EVENTS") for t in targets) and isinstance(
                node.value, ast.Dict
            ):
                names.update(
                    value.value
                    for value in node.value.values
                    if isinstance(value, ast.Constant) and isinstance(value.value, str)
                )
    return names


def code_event_names() -> set[str]:
    root = Path(settings.BASE_DIR)
    return {
        name
        for directory in SOURCE_DIRS
        for path in (root / directory).rglob("*.py")
        for name in _logged_event_names(ast.parse(path.read_text(), filename=str(path)))
    }


def readme_event_names() -> list[str]:
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    section = readme.split("### Event catalogue", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"^\| `([a-z]+\.[a-z_]+)` \|", section, flags=re.MULTILINE)


def test_every_event_the_code_logs_is_catalogued() -> None:
    found = code_event_names()

    assert len(found) >= 15, found  # the scan works
    assert found <= EVENT_CATALOGUE.keys(), sorted(found - EVENT_CATALOGUE.keys())


def test_readme_catalogue_lists_exactly_the_catalogued_events() -> None:
    listed = readme_event_names()

    assert sorted(listed) == sorted(EVENT_CATALOGUE)
    assert len(listed) == len(set(listed)), "each event once"
    assert all(EVENT_NAME.fullmatch(name) for name in listed)
