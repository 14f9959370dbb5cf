"""How benchmark scripts record (``machine.publish``, ``machine.append_section``) and how
``authors_code`` reads logs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # the scripts import their siblings by name
    spec = importlib.util.spec_from_file_location(f"rtrrl_bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as an import would: a dataclass in the script looks its
    # module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def machine() -> ModuleType:
    return _load("machine")


@pytest.fixture(scope="module")
def authors_code() -> ModuleType:
    return _load("authors_code")


def test_append_section_starts_a_file_with_its_title(machine, tmp_path):
    results = tmp_path / "results" / "new.md"
    machine.append_section(results, "## run 1\n\n| a |\n", "# Title")
    assert results.read_text() == "# Title\n\n## run 1\n\n| a |\n"


def test_publish_writes_only_when_asked_to_record(machine, tmp_path, capsys):
    results = tmp_path / "results.md"
    machine.publish("## run 1\n", results, "# Title", record=False)
    assert not results.exists() and "## run 1" in capsys.readouterr().out
    machine.publish("## run 2\n", results, "# Title", record=True)
    assert results.read_text() == "# Title\n\n## run 2\n"
    assert f"appended to {results}" in capsys.readouterr().out


def test_append_section_keeps_every_earlier_section(machine, tmp_path):
    results = tmp_path / "old.md"
    results.write_text("# Kept title\n\n## run 1\n\nfigures\n\n\n")
    machine.append_section(results, "## run 2\n", "# Unused title")
    machine.append_section(results, "## run 3", "# Unused title")
    assert results.read_text() == "# Kept title\n\n## run 1\n\nfigures\n\n## run 2\n\n## run 3\n"


LOG = (
    "0, Steps: 1.00E+03, R: 20.83\rEval reward: 20.50\n"
    "100, Steps: 1.01E+05, R: 100.00\rEval reward: 133.50\n"
    "200, Steps: 2.01E+05, R: 16.13\rEval reward: 16.00\n"
)


def test_parse_log_reads_the_best_evaluation_and_the_last_step_count(authors_code):
    row = authors_code.parse_log(LOG + "Early stopping patience 20\n")
    assert row["best"] == 133.5
    assert row["evaluations"] == 3
    assert row["steps"] == 201_000
    assert row["stopped"] == "patience"
    assert authors_code.parse_log(LOG)["stopped"] == "budget"


def test_parse_log_of_a_run_without_evaluations_says_what_it_printed(authors_code):
    with pytest.raises(RuntimeError, match="ModuleNotFoundError"):
        authors_code.parse_log("Traceback ...\nModuleNotFoundError: No module named 'flax'\n")


def test_locked_versions_reads_poetry_pins_and_names_a_missing_one(authors_code, tmp_path):
    entries = [
        f'[[package]]\nname = "{n}"\nversion = "1.{i}"\n' for i, n in enumerate(authors_code.LOCKED)
    ]
    lock = tmp_path / "poetry.lock"
    lock.write_text("\n".join(entries))
    pins = authors_code.locked_versions(lock)
    assert pins["jax"] == f"1.{authors_code.LOCKED.index('jax')}"
    assert len(pins) == len(authors_code.LOCKED)
    lock.write_text("\n".join(e for e in entries if '"flax"' not in e))
    with pytest.raises(SystemExit, match="does not pin flax"):
        authors_code.locked_versions(lock)


def test_population_profile_names_what_each_operator_computes():
    profile = _load("population_profile")
    hlo = """
%fused_computation.7 (param_0: f32[4,3], param_1: f32[4,3]) -> f32[4,3] {
  %param_0 = f32[4,3]{1,0} parameter(0)
  %param_1 = f32[4,3]{1,0} parameter(1)
  %sqrt.1 = f32[4,3]{1,0} sqrt(%param_1)
  %divide.2 = f32[4,3]{1,0} divide(%param_0, %sqrt.1)
  ROOT %divide.3 = f32[4,3]{1,0} divide(%divide.2, %param_1)
}

ENTRY %main (p: f32[4,3]) -> f32[4,3] {
  %p = f32[4,3]{1,0} parameter(0)
  %add_divide_fusion.1 = f32[4,3]{1,0} fusion(%p, %p), kind=kLoop, calls=%fused_computation.7
  %while.9 = (s32[], u32[4,1]{1,0}, /*index=2*/u32[4]{0}) while(%t), condition=%c, body=%b
  ROOT %dot.4 = f32[4,3]{1,0} dot(%add_divide_fusion.1, %p), lhs_contracting_dims={1}
}
"""
    described = profile.instructions(hlo)
    assert described["add_divide_fusion.1"] == ("f32[4,3]", "fusion: divide×2, sqrt")
    assert described["dot.4"] == ("f32[4,3]", "dot")
    assert described["while.9"][1] == "while"
    assert described["while.9"][0].startswith("(s32[], u32[4,1]")


def test_two_rows_pairs_the_rounds_of_each_row(machine):
    """The ratio is taken round by round (load that drifts cancels), not of the medians."""
    lines = machine.two_rows(("one process", [2.0, 9.0, 4.0]), ("two", [1.0, 3.0, 4.0]), "time")
    assert lines[2] == "| one process | 4.0 | 2.0, 9.0, 4.0 |"
    assert lines[3] == "| two | 3.0 | 1.0, 3.0, 4.0 |"
    # Same-round ratios 2, 3, 1: median 2.00 (the medians' ratio would be 1.33).
    assert lines[-1] == "One process ÷ two, same round: median 2.00 (range 1.00–3.00)."
