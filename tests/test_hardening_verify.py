"""Issue 23, items 3 and 11 (verify): ``verify`` checks the record it is given before it trusts it.

An exported spec's provenance is what ``verify`` compares a re-run with, so a record that contradicts itself
(``value`` that is not the mean of ``fold_scores``), or that cannot pin the data (no fingerprint, or one that
YAML read as a number) is refused with one line before anything is fitted; a spec that was never exported is
named as such, not judged knob by knob.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from test_hardening import one_error_line, write_spec

from hft_search import export_best, run_study, spec_from_dict
from hft_search.cli import main


@pytest.fixture(scope="module")
def exported(tiny_model_dir: Path, tiny_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real one-trial study of the tiny model (two folds of one epoch), exported once for the module."""
    folder = tmp_path_factory.mktemp("exported")
    raw = {"name": "tiny", "data": {"train": str(tiny_csv)}, "model": {"name": str(tiny_model_dir), "max_length": 16},
           "cv": {"folds": 2}, "search_space": {"freeze.layers": {"int": [0, 2]}},
           "fixed": {"training.epochs": 1, "training.batch_size": 16}, "device": "cpu",
           "study": {"n_trials": 1, "storage": f"sqlite:///{folder / 'hft.db'}", "pruner": "none", "baseline": False},
           "cache_dir": str(folder / "cache")}
    run_study(spec_from_dict(raw))
    best = folder / "best.yaml"
    export_best("tiny", raw["study"]["storage"], best)
    return best


def edited(best: Path, pattern: str, replacement: str) -> Path:
    """``best`` with one line of its provenance rewritten as a user would, in a text editor."""
    text, count = re.subn(pattern, replacement, best.read_text(), count=1, flags=re.MULTILINE)
    assert count == 1, pattern
    path = best.with_name(f"edited-{abs(hash(pattern + replacement))}.yaml")
    path.write_text(text)
    return path


def test_3_the_untouched_export_verifies(exported: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", str(exported), "--folds", "0"]) == 0
    assert "agree" in capsys.readouterr().out


@pytest.mark.parametrize(("pattern", "replacement", "says"), [
    (r"^  value: .*$", "  value: 0.99", "provenance.value 0.99 is not the mean"),
    (r"^  std: .*$", "  std: 0.0001", "provenance.std 0.0001 is not the std"),
    (r"^  data_fingerprint: .*$", "  data_fingerprint: null", "provenance.data_fingerprint is missing"),
    (r"^  data_fingerprint: .*$", "  data_fingerprint: 0000000000000000",
     "provenance.data_fingerprint is 0, not a string of 16 hexadecimal digits"),
])
def test_3_a_record_that_contradicts_itself_or_pins_no_data_is_refused(exported: Path, pattern: str,
                                                                        replacement: str, says: str,
                                                                        capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", str(edited(exported, pattern, replacement))]) == 2
    line = one_error_line(capsys)
    assert says in line and "export the trial again" in line


def test_11_verify_names_a_spec_that_was_never_exported(exported: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    raw = yaml.safe_load(exported.read_text())
    raw.pop("provenance")  # every knob pinned, groups off: as a hand-written spec it has four contradictions
    assert main(["verify", str(write_spec(tmp_path, raw, "plain.yaml"))]) == 2
    line = one_error_line(capsys)
    assert "is not an exported spec" in line and "hft-search export" in line and "never act" not in line
