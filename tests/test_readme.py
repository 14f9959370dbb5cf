"""The README's "Try it" snippet runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.numpy
def test_try_it_snippet_runs(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no python block"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["be"].name == "numpy"
    assert namespace["action"].shape == (4,)
    assert capsys.readouterr().out.strip()  # it printed the actions and TD errors
