"""Sound statistics: the corrected resampled t-test against a hand computation, repeated k-fold with fresh split
seeds per repeat, and the grouped splitter (rows of one group never straddle folds)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from hft_search import spec_from_dict
from hft_search.cli import main
from hft_search.comparison import compute_lift, corrected_ttest, folds_text
from hft_search.cv import CrossValidator
from hft_search.data import load_data
from hft_search.exceptions import DataError, SpecError
from hft_search.resampling import Resampling, check_splitter, make_folds
from hft_search.spec import CVSpec
from hft_search.study import run_study
from tests.conftest import make_sentences

# -- the corrected resampled t-test ---------------------------------------------------------------------------


def test_corrected_t_test_matches_a_hand_computation() -> None:
    """3 folds × 2 repeats, n_test / n_train = 1/2 (a 3-fold). By hand: mean 0.14 / 6 = 0.023333; sample variance
    0.0023333 / 5 = 0.00046667; corrected variance of the mean (1/6 + 1/2) · 0.00046667 = 0.00031111;
    t = 0.023333 / sqrt(0.00031111) = sqrt(7) / 2 = 1.3229 with 5 degrees of freedom."""
    diffs = [0.02, 0.05, -0.01, 0.04, 0.03, 0.01]
    t, p = corrected_ttest(diffs, test_train_ratio=0.5)
    assert t == pytest.approx(math.sqrt(7) / 2)
    assert p == pytest.approx(2 * stats.t.sf(math.sqrt(7) / 2, df=5)) and p == pytest.approx(0.2431, abs=1e-4)
    # the plain paired t-test ignores the overlap of the training sets: half the standard error, p < 0.05
    plain = stats.ttest_1samp(diffs, 0.0)
    assert plain.statistic == pytest.approx(2 * t) and plain.pvalue < 0.05 < p


def test_lift_uses_the_corrected_test_over_common_folds() -> None:
    trial, base = [0.82, 0.85, 0.80, 0.84, 0.83, 0.81], [0.80, 0.80, 0.81, 0.80, 0.80, 0.80]
    lift = compute_lift(trial, base, baseline_trial=4, repeats=2, test_train_ratio=0.5)
    assert lift.p_value == pytest.approx(corrected_ttest(np.subtract(trial, base), 0.5)[1])
    assert lift.mean == pytest.approx(np.mean(np.subtract(trial, base)))
    assert lift.std == pytest.approx(np.std(np.subtract(trial, base), ddof=1))
    assert (lift.folds, lift.repeats, lift.baseline_trial) == (6, 2, 4)
    assert "corrected resampled t-test over 3×2 folds" in lift.text()
    default = compute_lift(trial, base, baseline_trial=4, repeats=2)  # a plain 3-fold: 1 / (3 − 1)
    assert default.test_train_ratio == pytest.approx(0.5) and default.p_value == pytest.approx(lift.p_value)
    pruned = compute_lift([0.5, 0.6], [0.7, 0.9, 0.8], baseline_trial=3)  # a pruned trial: its two folds
    assert pruned.folds == 2 and pruned.mean == pytest.approx(-0.25) and folds_text(2, 1) == "2×1 folds"


def test_lift_without_a_test_says_so() -> None:
    one = compute_lift([0.9], [0.8], baseline_trial=0)
    assert one.p_value is None and one.std == 0 and not one.significant and one.verdict == "not separated"
    flat = compute_lift([0.6, 0.6, 0.6], [0.6, 0.6, 0.6], baseline_trial=0)
    assert flat.p_value is None and flat.mean == 0 and not flat.significant
    assert compute_lift([math.nan], [0.5], baseline_trial=0) is None
    assert "p undefined" in one.text()


def test_verdicts_need_p_below_005_in_their_direction() -> None:
    better = compute_lift([0.9, 0.91, 0.92, 0.9, 0.91], [0.8, 0.8, 0.81, 0.8, 0.8], baseline_trial=0)
    worse = compute_lift([0.8, 0.8, 0.81, 0.8, 0.8], [0.9, 0.91, 0.92, 0.9, 0.91], baseline_trial=0)
    assert (better.verdict, worse.verdict) == ("better", "worse") and better.significant and not worse.significant


# -- repeated k-fold ------------------------------------------------------------------------------------------


def test_repeats_use_a_new_split_seed_each_and_repeat_zero_is_the_plain_k_fold() -> None:
    labels = np.array([0, 1] * 30)
    plain = make_folds(labels, None, Resampling.search(CVSpec(folds=3)))
    repeated = Resampling.search(CVSpec(folds=3, repeats=2))
    folds = make_folds(labels, None, repeated)
    assert len(folds) == 6 and repeated.size == 6
    for (a_train, a_valid), (b_train, b_valid) in zip(plain, folds[:3], strict=True):
        assert np.array_equal(a_train, b_train) and np.array_equal(a_valid, b_valid)  # old studies' folds
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds[:3], folds[3:], strict=True))
    for repeat in (folds[:3], folds[3:]):  # each repeat is a partition of the rows
        assert sorted(np.concatenate([valid for _, valid in repeat]).tolist()) == list(range(60))
    assert make_folds(labels, None, repeated)[4][1].tolist() == folds[4][1].tolist()  # the same in every trial
    assert [repeated.fold_seed(f) for f in range(6)] == [0, 1, 2, 3, 4, 5]
    assert [repeated.split_seed(j) for j in range(2)] == [0, 1]
    keys = [repeated.fold_key(f) for f in range(6)]
    assert len({str(k) for k in keys}) == 6 and keys[0] == {"fold": 0, "folds": 3, "cv_seed": 0, "shuffle": True}


def test_the_confirmation_continues_the_sequence_with_fresh_splits_and_seeds() -> None:
    cv = CVSpec(folds=3, seed=7, repeats=2)
    search, fresh = Resampling.search(cv), Resampling.confirmation(cv, repeats=2)
    assert {search.fold_seed(f) for f in range(6)}.isdisjoint(fresh.fold_seed(f) for f in range(6))
    assert {search.split_seed(j) for j in range(2)}.isdisjoint(fresh.split_seed(j) for j in range(2))
    assert fresh.describe()["split_seeds"] == [9, 10] and fresh.describe()["fold_seeds"] == list(range(7006, 7012))
    unshuffled = Resampling.confirmation(CVSpec(folds=3, shuffle=False), repeats=1)
    assert unshuffled.shuffle  # fresh splits need a shuffle


def test_repeats_without_shuffle_are_refused(tiny_spec_dict: dict) -> None:
    with pytest.raises(SpecError, match="cv: cv.repeats > 1 needs cv.shuffle: true"):
        spec_from_dict({**tiny_spec_dict, "cv": {"folds": 2, "repeats": 2, "shuffle": False}})


def test_a_study_with_repeats_records_k_times_r_folds_and_their_sizes(tiny_spec_dict: dict) -> None:
    spec = spec_from_dict({**tiny_spec_dict, "cv": {"folds": 2, "repeats": 2}, "study": {
        **tiny_spec_dict["study"], "n_trials": 1}})
    trial = run_study(spec).trials[0]
    attrs = trial.user_attrs
    assert len(attrs["fold_scores"]) == 4 and attrs["seeds"] == [0, 1, 2, 3] and attrs["cv_repeats"] == 2
    assert attrs["fold_sizes"] == [[48, 48]] * 4


# -- the grouped splitter -------------------------------------------------------------------------------------


def grouped_csv(path: Path, groups: int, rows: int = 96) -> Path:
    """The test sentences with a ``source`` column: ``groups`` sources, each with rows of both labels."""
    lines = ["text,label,source"] + [f"{text},{label},s{i % groups}"
                                     for i, (text, label) in enumerate(make_sentences(rows))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rows_of_one_group_never_straddle_folds(tiny_spec_dict: dict, tmp_path: Path) -> None:
    raw = {**tiny_spec_dict, "data": {"train": str(grouped_csv(tmp_path / "g.csv", 8))},
           "cv": {"folds": 2, "repeats": 2, "group_column": "source"}}
    spec = spec_from_dict(raw)
    data = load_data(spec.data, "source")
    cv = CrossValidator(spec, data=data)
    assert len(cv.folds) == 4
    for train, valid in cv.folds:
        assert set(data.train.groups[train]).isdisjoint(data.train.groups[valid])
    assert "groups" in cv._fold_key(0)  # the grouping is part of every fold's cache key
    splitter = check_splitter(data.train.labels, data.train.groups, 2, shuffle=True, seed=0)
    assert type(splitter).__name__ == "StratifiedGroupKFold"
    one_class_per_group = np.array([f"g{label}{i % 2}" for i, label in enumerate(data.train.labels)])
    splitter = check_splitter(data.train.labels, one_class_per_group, 3, shuffle=True, seed=0)
    assert type(splitter).__name__ == "GroupKFold"  # a class in 2 groups cannot be stratified over 3 folds


def test_group_column_errors_name_the_field(tiny_spec_dict: dict, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    few = grouped_csv(tmp_path / "few.csv", 1)
    with pytest.raises(DataError, match="cv.group_column: column 'source' has 1 group"):
        CrossValidator(spec_from_dict({**tiny_spec_dict, "data": {"train": str(few)},
                                       "cv": {"folds": 2, "group_column": "source"}}))
    spec = spec_from_dict({**tiny_spec_dict, "cv": {"folds": 2, "group_column": "speaker"}})
    with pytest.raises(DataError, match="cv.group_column: column 'speaker' is not in the training data"):
        CrossValidator(spec)
    with pytest.raises(DataError, match="cv.group_column: the data passed in carries no groups"):
        CrossValidator(spec, data=load_data(spec.data))
    path = tmp_path / "spec.yaml"
    path.write_text(spec.to_yaml())
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cv.group_column: column 'speaker'" in err and "Traceback" not in err
