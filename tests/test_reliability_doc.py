"""docs/reliability.md names a test for every bad input and fault; each must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELL = re.compile(r"`(?P<path>[\w/]+\.py)?::(?P<name>\w+)`|`(?P<file>[\w/]+\.py)`")


def referenced_tests(text: str) -> list[tuple[str, str]]:
    """``(file under tests/, test name)`` for every ``path::name`` (or ``::name`` after a
    path) the page cites."""
    found, last = [], None
    for m in CELL.finditer(text):
        if m["file"]:
            last = m["file"]
            continue
        last = m["path"] or last
        assert last is not None, f"::{m['name']} cites no file"
        found.append((last, m["name"]))
    return found


def test_every_test_the_reliability_page_cites_exists() -> None:
    cited = referenced_tests((ROOT / "docs" / "reliability.md").read_text())
    assert len(cited) >= 40
    missing = [
        f"{path}::{name}"
        for path, name in cited
        if not (ROOT / "tests" / path).exists()
        or not re.search(rf"^def {name}\(", (ROOT / "tests" / path).read_text(), re.M)
    ]
    assert not missing, f"docs/reliability.md cites tests that do not exist: {missing}"
