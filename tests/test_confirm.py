"""The confirmation round on the tiny model, with the study defaults a user gets (baseline sweep, successive
halving, 2 epochs, confirmation): fresh folds and seeds, the stored record, the winner that ``best``, ``status``,
the report and ``export`` show, the CLI's exit codes; and the verdict's statistics by hand."""

from __future__ import annotations

import contextlib
import io
import logging
import sqlite3
from pathlib import Path

import optuna
import pytest
import yaml

from hft_search import spec_from_dict
from hft_search.baseline import BASELINE_ATTR, reference_baseline
from hft_search.cli import main
from hft_search.comparison import corrected_ttest
from hft_search.confirm import Candidate, is_stale, judge, stored_confirmation
from hft_search.export import export_spec
from hft_search.resampling import Resampling
from hft_search.spec import CVSpec
from hft_search.study import open_study
from hft_search.summary import best_summary, describe_best
from hft_search.workers import counted_trials
from tests.conftest import tiny_spec, with_study_defaults


@pytest.fixture(scope="module")
def confirmed(tiny_model_dir: Path, tiny_csv: Path, tiny_test_csv: Path,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, str, str]:
    """A study run by ``hft-search run`` with the defaults and 3 searched trials, and its printed summary.
    Tests that change the study work on a copy (:func:`copy_of`)."""
    root = tmp_path_factory.mktemp("confirmed")
    raw = with_study_defaults(tiny_spec(tiny_model_dir, tiny_csv, tiny_test_csv, root))
    raw["study"]["n_trials"] = 3
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["run", str(path), "--no-progress"]) == 0
    storage = raw["study"]["storage"]
    return optuna.load_study(study_name="tiny", storage=storage), storage, out.getvalue()


def copy_of(storage: str, folder: Path) -> str:
    """A copy of a SQLite study file (through SQLite's backup: a plain copy may miss the write-ahead log), for a
    test that changes the study."""
    copy = folder / "copy.db"
    with sqlite3.connect(storage.removeprefix("sqlite:///")) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    return f"sqlite:///{copy}"


def test_run_ends_with_a_confirmation_on_fresh_folds(confirmed: tuple[optuna.Study, str, str]) -> None:
    study, _, out = confirmed
    trials = study.get_trials()
    assert [t.number for t in trials if t.user_attrs.get(BASELINE_ATTR)] == [0, 1, 2] and counted_trials(study) == 3
    confirmation = stored_confirmation(study)
    reference = reference_baseline(study)
    assert confirmation.baseline == reference.number and confirmation.candidates[0].trial == reference.number
    searched = [c for c in confirmation.candidates if not c.baseline]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and not t.user_attrs.get("baseline")]
    assert 1 <= len(searched) <= 3 and {c.trial for c in searched} <= {t.number for t in complete}
    search_seeds = {seed for t in trials for seed in t.user_attrs.get("seeds", [])}
    assert search_seeds == {0, 1} and confirmation.resampling["fold_seeds"] == [2, 3]
    assert confirmation.resampling["split_seeds"] == [1]
    for candidate in confirmation.candidates:
        assert len(candidate.fold_scores) == 2 and candidate.fold_sizes == [[48, 48], [48, 48]]
        trial = study.trials[candidate.trial]
        assert candidate.search_value == trial.value
        assert candidate.winners_curse == pytest.approx(trial.value - candidate.mean)
    best = max(confirmation.candidates, key=lambda c: c.mean)
    assert confirmation.winner == best.trial
    assert confirmation.verdict in ("better", "worse", "not separated")
    assert "+ 3 baseline trial(s) outside n_trials" in out
    assert "confirmation on fresh folds (2×1 folds, split seed(s) 1, training seeds 2-3" in out
    assert f"winner: trial {best.trial}" in out and "corrected resampled t-test over 2×1 folds" in out


def test_readers_show_the_search_score_next_to_the_confirmed_one(confirmed: tuple[optuna.Study, str, str],
                                                                 tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    study, storage, _ = confirmed
    confirmation = stored_confirmation(study)
    winner = confirmation.winner_candidate
    assert main(["status", "--study", "tiny", "--storage", storage]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[5] == "confirmed" and f"{winner.mean:.4f} (winner)" in table[winner.trial + 1]
    summary = best_summary(study)
    assert summary["trial"] == winner.trial and summary["search_value"] == winner.search_value
    assert summary["confirmation"]["confirmed_value"] == pytest.approx(winner.mean)
    assert summary["confirmation"]["winners_curse"] == pytest.approx(winner.winners_curse)

    from hft_search.reports import figures

    card = figures.best_configuration(study).data[0].cells.values
    rows = dict(zip(card[0], card[1], strict=True))
    assert rows["confirmed CV (fresh folds)"].startswith(f"{winner.mean:.4f} ± ")
    assert rows["winner's curse (search − confirmed)"] == f"{winner.winners_curse:+.4f}"
    assert "corrected resampled t-test" in rows["confirmation"]

    # export takes the confirmed winner and records the round; an explicit --trial still wins
    spec = export_spec(study)
    prov = spec.provenance
    assert prov["trial"] == winner.trial and prov["confirmation"]["fold_scores"] == winner.fold_scores
    assert prov["confirmation"]["verdict"] == confirmation.verdict
    assert prov["confirmation"]["resampling"]["fold_seeds"] == [2, 3]
    if confirmation.lift is not None:
        assert prov["confirmation"]["lift"]["p_value"] == confirmation.lift.p_value
    other = next(t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
                 and t.number != winner.trial)
    assert export_spec(study, other).provenance["trial"] == other
    assert main(["export", "--study", "tiny", "--storage", storage, "-o", str(tmp_path / "best.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"trial {winner.trial} of study 'tiny'" in out and "confirmed on fresh folds" in out


def test_confirm_command_reuses_scores_and_adds_repeats(confirmed: tuple[optuna.Study, str, str], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    study, storage, _ = confirmed
    storage = copy_of(storage, tmp_path)
    before = stored_confirmation(study)
    caplog.set_level(logging.INFO, logger="hft_search.confirm._round")
    assert main(["confirm", "--study", "tiny", "--storage", storage]) == 0
    assert "fold 1 of" not in caplog.text  # the same fresh folds: nothing fitted again
    again = stored_confirmation(optuna.load_study(study_name="tiny", storage=storage))
    assert [c.fold_scores for c in again.candidates] == [c.fold_scores for c in before.candidates]
    capsys.readouterr()
    assert main(["confirm", "--study", "tiny", "--storage", storage, "--top", "1", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    wider = stored_confirmation(optuna.load_study(study_name="tiny", storage=storage))
    assert len(wider.candidates) == 2 and all(len(c.fold_scores) == 4 for c in wider.candidates)
    assert wider.resampling["split_seeds"] == [1, 2] and "2×2 folds" in out
    first = before.candidate(wider.candidates[0].trial)
    assert wider.candidates[0].fold_scores[:2] == first.fold_scores  # repeat 1 is the earlier round's folds


def test_a_round_overtaken_by_a_better_trial_says_so(confirmed: tuple[optuna.Study, str, str],
                                                    tmp_path: Path) -> None:
    study, storage, _ = confirmed
    copy = optuna.load_study(study_name="tiny", storage=copy_of(storage, tmp_path))
    confirmation = stored_confirmation(copy)
    assert not is_stale(confirmation, copy)
    best = copy.best_trial
    config = {**best.user_attrs["config"], "training.epochs": 3}  # another configuration, scoring higher
    copy.add_trial(optuna.trial.create_trial(value=1.0, params=best.params, distributions=best.distributions,
                                             user_attrs={"config": config}))
    assert is_stale(confirmation, copy)
    assert "note: the study's top configurations changed since this round" in describe_best(copy)


def test_confirm_exit_codes(tiny_spec_dict: dict, capsys: pytest.CaptureFixture) -> None:
    storage = tiny_spec_dict["study"]["storage"]
    open_study(spec_from_dict(tiny_spec_dict))  # no trial yet
    assert main(["confirm", "--study", "tiny", "--storage", storage]) == 2
    assert "has no completed searched trial to confirm" in capsys.readouterr().err
    assert main(["confirm", "--study", "nope", "--storage", storage]) == 2
    assert "no study 'nope'" in capsys.readouterr().err
    pareto = {**tiny_spec_dict, "name": "pareto",
              "study": {**tiny_spec_dict["study"], "objectives": "score+trainable_fraction"}}
    open_study(spec_from_dict(pareto))
    assert main(["confirm", "--study", "pareto", "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert "is multi-objective: a Pareto front has no single winner" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as usage:
        main(["confirm", "--study", "tiny", "--storage", storage, "--top", "0"])
    assert usage.value.code == 2 and "--top: 0 must be 1 or more" in capsys.readouterr().err


def candidate(trial: int, scores: list[float], *, baseline: bool = False, search: float = 0.9) -> Candidate:
    return Candidate(trial, baseline, search, 0.01, scores, [[80, 20]] * len(scores))


def test_the_verdict_by_hand() -> None:
    """5 folds (n_test / n_train = 1/4); the winner's lift tested with the corrected test, p × candidates."""
    resampling = Resampling.confirmation(CVSpec(folds=5), repeats=1)
    base = candidate(0, [0.80, 0.81, 0.80, 0.79, 0.80], baseline=True)
    strong = candidate(5, [0.90, 0.91, 0.92, 0.90, 0.91])
    weak = candidate(7, [0.81, 0.80, 0.79, 0.82, 0.80])
    result = judge([base, weak, strong], resampling, 0, metric="accuracy", searched_trials=9)
    diffs = [a - b for a, b in zip(strong.fold_scores, base.fold_scores, strict=True)]
    p = corrected_ttest(diffs, 20 / 80)[1]
    assert (result.winner, result.compared) == (5, 5) and result.lift.p_value == pytest.approx(p)
    assert result.p_adjusted == pytest.approx(2 * p) and result.verdict == "better"
    assert strong.winners_curse == pytest.approx(0.9 - 0.908)

    noisy = candidate(5, [0.86, 0.78, 0.84, 0.77, 0.83])
    result = judge([base, noisy], resampling, 0, metric="accuracy", searched_trials=9)
    assert result.verdict == "not separated" and result.p_adjusted == result.lift.p_value
    winner_is_baseline = judge([base, weak.__class__(7, False, 0.9, 0.0, [0.70] * 4 + [0.71], [[80, 20]] * 5)],
                               resampling, 0, metric="accuracy", searched_trials=9)
    assert winner_is_baseline.winner == 0 and winner_is_baseline.verdict == "worse"
    failed = Candidate(7, False, 0.9, 0.0, [], [], failure="OutOfMemoryError in fold 0")
    assert judge([base, failed], resampling, 0, metric="accuracy",
                 searched_trials=9).verdict == "not compared"
    assert judge([strong], resampling, None, metric="accuracy",
                 searched_trials=9).verdict == "no baseline"
