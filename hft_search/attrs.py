"""The names of the user attributes hft_search stores on a study and on its trials, in one place.

They are the contract between the writers (study creation, the objective, the worker loop, seeding, the
confirmation round, ``train``) and the readers (``status``, reports, ``export``, ``verify``) of a study, which may
run different releases of this package. ``docs/user_attrs.md`` says what each holds;
``tests/test_attrs.py`` checks that it documents exactly the names listed here, and that every key the package
reads or writes by name is one of them. Nothing here imports the rest of the package.
"""

from __future__ import annotations

# -- marks: how a trial came about or ended ------------------------------------------------------------------

BASELINE_ATTR = "baseline"
"""Trial user attribute (``True``) of every trial of the baseline sweep."""

ENQUEUED_ATTR = "enqueued"
"""Trial user attribute saying where an enqueued trial came from (``user``, ``warm_start:STUDY#N``)."""

SURPLUS_ATTR = "surplus"
"""Trial user attribute (``True``) of a trial that started after ``n_trials`` places were taken."""

FAILURE_KIND_ATTR = "failure_kind"
"""Trial user attribute of a FAIL trial with a verdict: ``"exception"`` (counts towards fail-fast) or ``"oom"``."""

FAIL_REASON_ATTR = "fail_reason"
"""Trial user attribute: why a FAIL or PRUNED trial stopped, one message."""

REPEAT_OF_ATTR = "repeat_of"
"""Trial user attribute: the number of the COMPLETE trial whose configuration (and verdict) this trial repeats."""

LIFT_ATTR = "lift"
"""Trial user attribute where hft-search before the tuned baseline stored a lift at trial end; no longer
read (a lift is computed on read), and left alone in old studies."""

# -- what a trial scored, and how ---------------------------------------------------------------------------

TORCH_THREADS_ATTR = "torch_threads"
"""Trial user attribute: torch's intra-op thread count in the process that scored the trial. On the CPU the
order of a matmul's sums follows it, so ``hft-search verify`` sets it before it re-runs the folds."""

FOLD_EPOCHS_ATTR = "fold_epochs"
"""Trial user attribute: epochs trained summed over the folds, pruned folds included (the trial's cost)."""

TRIAL_SCORE_ATTRS = frozenset({
    "metric", "fold_scores", "fold_best_epochs", "fold_epochs_run", "fold_times_s", "seeds", "config",
    "score_mean", "score_std", "trainable_params", "total_params", "trainable_fraction", "student_params",
    "importance_cut", "peak_memory_mb", "learning_rate_effective", "teacher", "teacher_scores", "device",
    "versions", "data_fingerprint", "pooling", TORCH_THREADS_ATTR, "fold_sizes", "cv_repeats",
})
"""The attributes of a COMPLETE trial that say what its configuration scored and how: everything ``status``,
reports, ``export`` and ``verify`` read from a complete trial, and what a repeat of it copies."""

TRIAL_ATTRS = TRIAL_SCORE_ATTRS | {
    BASELINE_ATTR, ENQUEUED_ATTR, SURPLUS_ATTR, FAILURE_KIND_ATTR, FAIL_REASON_ATTR, REPEAT_OF_ATTR, LIFT_ATTR,
    FOLD_EPOCHS_ATTR,
}
"""Every trial user attribute hft_search writes (or, for :data:`LIFT_ATTR`, once wrote)."""

# -- the study ----------------------------------------------------------------------------------------------

SPEC_ATTR = "spec"
"""Study user attribute: the validated spec as a JSON dict (passwords masked)."""

SPEC_HASH_ATTR = "spec_hash"
"""Study user attribute: the hash of what decides a trial's score (``StudySpec.search_hash``); a resumed study
whose spec hashes otherwise is refused."""

SEEDED_ATTR = "seeded"
"""Study user attribute set once the creator has enqueued every seed trial."""

CONFIRMATION_ATTR = "confirmation"
"""Study user attribute: ``Confirmation.to_attr`` of the latest confirmation round."""

FINAL_MODEL_ATTR = "final_model"
"""Study user attribute written by ``hft-search train``: where the final model is, and its test metrics."""

STUDY_ATTRS = frozenset({
    SPEC_ATTR, SPEC_HASH_ATTR, "metric", "objectives", "data_fingerprint", SEEDED_ATTR, CONFIRMATION_ATTR,
    FINAL_MODEL_ATTR,
})
"""Every study user attribute hft_search writes."""
