"""Figures and the report page, on real Optuna studies stored in SQLite (see report_studies.py)."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import subprocess
import sys
from itertools import accumulate
from pathlib import Path

import optuna
import plotly.graph_objects as go
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState
from plotly.utils import PlotlyJSONEncoder
from report_studies import (
    add_trial,
    create_hybrid_study,
    final_model_attr,
    study_attrs,
)

from hft_search.exceptions import StorageError
from hft_search.reports import figures, write_report
from hft_search.reports.html import default_report_dir, plotly_js, script_json
from hft_search.spec import SWITCHABLE_GROUPS

EVIL_NAME = "<script>alert(1)</script>"
EVIL_REASON = '<img src=x onerror="alert(2)">out of memory'
EVIL_CHOICE = "<b>bold</b>"


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hft.db'}"


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The storage URL of the realistic study (with a final model), shared by the tests that only read it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('stored') / 'hft.db'}"
    create_hybrid_study(url, final_model=final_model_attr())
    return url


@pytest.fixture
def study(stored: str) -> optuna.Study:
    """The realistic study, loaded from its storage as a report reads it."""
    return optuna.load_study(study_name="hybrid", storage=stored)


def current_umask() -> int:
    """The process umask (read by setting it, then restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_message(figure: go.Figure) -> bool:
    return not figure.data and len(figure.layout.annotations) == 1


def message(figure: go.Figure) -> str:
    assert is_message(figure), figure.layout.title.text
    return figure.layout.annotations[0].text


def complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(states=(TrialState.COMPLETE,))


def trace(figure: go.Figure, name: str) -> go.BaseTraceType:
    return next(data for data in figure.data if data.name == name)


def table_columns(figure: go.Figure) -> list[list[str]]:
    return [list(column) for column in figure.data[0].cells.values]


# --------------------------------------------------------------------------------------------------------------
# Each figure on a realistic study.
# --------------------------------------------------------------------------------------------------------------


def test_every_figure_is_drawn_for_a_realistic_study(study: optuna.Study) -> None:
    drawn = figures.report_figures(study)
    assert list(drawn) == [*figures.FIGURES, *figures.FINAL_MODEL_FIGURES]
    assert [key for key, figure in drawn.items() if is_message(figure)] == []


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_history_draws_the_best_score_so_far(direction: str) -> None:
    study = create_hybrid_study(None, directions=(direction,))
    figure = figures.optimization_history(study)
    best = trace(figure, "best so far")
    scores = [trial.value for trial in complete(study)]
    assert list(best.x) == [trial.number for trial in complete(study)]
    assert list(best.y) == list(accumulate(scores, max if direction == "maximize" else min))


def test_importances_cover_the_knobs_of_every_trial_and_name_the_rest(study: optuna.Study) -> None:
    figure = figures.param_importances(study)
    plotted = set(figure.data[0].y)
    in_every_trial = set.intersection(*(set(trial.params) for trial in complete(study)))
    assert plotted and plotted <= in_every_trial
    assert "distill.alpha" in figure.layout.title.subtitle.text  # conditional: left out, and said so


def test_parallel_coordinates_draw_switched_off_knobs_at_off(study: optuna.Study) -> None:
    figure = figures.parallel_coordinates(study)
    dimensions = {dimension.label: dimension for dimension in figure.data[0].dimensions}
    assert "training.learning_rate" not in dimensions
    assert all(label.split(".")[0] in SWITCHABLE_GROUPS for label in list(dimensions)[:-1])
    assert list(dimensions)[-1] == "accuracy"
    alpha = dimensions["distill.alpha"]
    assert alpha.ticktext[0] == figures.OFF
    for trial, value in zip(complete(study), alpha.values, strict=True):
        if trial.params["distill.enabled"]:
            assert value == pytest.approx(trial.params["distill.alpha"])
        else:
            assert value == alpha.tickvals[0] == alpha.range[0]
    score_kind = dimensions["importance.score"]
    assert list(score_kind.ticktext) == ["grad_norm", "fisher", "grad_x_weight", figures.OFF]


def test_contours_of_the_hybrid_knob_pairs(study: optuna.Study) -> None:
    for function in (figures.importance_freeze_contour, figures.distillation_contour):
        assert any(isinstance(data, go.Contour) for data in function(study).data)


def test_contour_of_knobs_a_study_never_searched_says_so() -> None:
    study = optuna.create_study()
    for value in (1e-4, 3e-4):
        add_trial(study, {"training.learning_rate": value, "freeze.layers": 2}, [0.8, 0.82, 0.81])
    assert message(figures.distillation_contour(study)) == (
        "distill.alpha and distill.temperature were not searched in this study."
    )
    assert message(figures.importance_freeze_contour(study)) == "importance.threshold was not searched in this study."
    add_trial(study, {"importance.threshold": 0.5, "freeze.layers": 2, "training.learning_rate": 1e-4}, [0.8])
    assert "Needs two or more values of importance.threshold and freeze.layers" in message(
        figures.importance_freeze_contour(study)
    )


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_pareto_front_is_the_set_of_non_dominated_trials(direction: str) -> None:
    study = create_hybrid_study(None, n_complete=25, directions=(direction,))
    sign = 1 if direction == "maximize" else -1

    def dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
        fa, fb = a.user_attrs["trainable_fraction"], b.user_attrs["trainable_fraction"]
        sa, sb = sign * a.value, sign * b.value
        return sa >= sb and fa <= fb and (sa > sb or fa < fb)

    trials = complete(study)
    expected = {t.number for t in trials if not any(dominates(u, t) for u in trials)}
    figure = figures.pareto_front(study)
    front = trace(figure, "Pareto front")
    assert {int(text.split("#")[1].split("<")[0]) for text in front.text} == expected
    assert list(front.x) == sorted(front.x)
    assert len(trace(figure, "dominated").x) == len(trials) - len(expected)
    assert figure.layout.xaxis.type == "log"


def test_fold_spread_shows_the_fold_scores_of_the_best_trials_best_first(study: optuna.Study) -> None:
    figure = figures.fold_spread(study, top=5)
    ranked = sorted(complete(study), key=lambda trial: -trial.value)[:5]
    assert [box.name for box in figure.data] == [f"#{trial.number}" for trial in ranked]
    assert [list(box.y) for box in figure.data] == [trial.user_attrs["fold_scores"] for trial in ranked]


def test_best_configuration_card(study: optuna.Study) -> None:
    best = study.best_trial
    names, values = table_columns(figures.best_configuration(study))
    card = dict(zip(names, values, strict=True))
    assert card["trial"] == f"#{best.number}"
    assert card["accuracy"] == f"{best.value:.4f} ± {best.user_attrs['score_std']:.4f}"
    assert card["fold scores"] == ", ".join(f"{score:.4f}" for score in best.user_attrs["fold_scores"])
    assert card["trainable"].startswith(f"{100 * best.user_attrs['trainable_fraction']:.3g} %")
    assert set(best.params) <= set(names)
    assert card["spec hash"] == study.user_attrs["spec_hash"]
    assert "torch 2.13.0" in card["versions"]


def test_trials_figure_lists_every_trial_with_its_state_and_failure_reason(study: optuna.Study) -> None:
    columns = table_columns(figures.trials_figure(study))
    assert columns[0] == [str(trial.number) for trial in study.trials]
    assert set(columns[1]) == {"COMPLETE", "PRUNED", "FAIL", "RUNNING"}
    assert "out of memory in fold 1" in columns[-1]
    assert "pruned after fold 2 (Wilcoxon)" in columns[-1]


def test_final_model_figures(study: optuna.Study) -> None:
    final = final_model_attr()["metrics"]
    columns = table_columns(figures.classification_report(study))
    assert columns[0] == list(final["classification_report"])
    assert "models/hybrid" in figures.classification_report(study).layout.title.subtitle.text
    heatmap = figures.confusion_matrix(study).data[0]
    assert [list(row) for row in heatmap.z] == final["confusion_matrix"]
    assert list(heatmap.x) == final["labels"]


def test_the_final_model_figures_appear_only_with_a_final_model() -> None:
    study = create_hybrid_study(None, n_complete=3)
    assert not set(figures.FINAL_MODEL_FIGURES) & set(figures.report_figures(study))
    assert message(figures.confusion_matrix(study)) == "No final model yet: run `hft-search train`."


def test_multi_objective_study() -> None:
    study = create_hybrid_study(None, directions=("maximize", "minimize"))
    drawn = figures.report_figures(study)
    assert [key for key, figure in drawn.items() if is_message(figure)] == []
    best = max(complete(study), key=lambda trial: trial.values[0])
    assert table_columns(drawn["best"])[1][1] == f"#{best.number}"


# --------------------------------------------------------------------------------------------------------------
# Edge cases: a readable page, never a crash.
# --------------------------------------------------------------------------------------------------------------


def _no_trial(study: optuna.Study) -> None:
    return None


def _one_trial(study: optuna.Study) -> None:
    add_trial(study, {"training.learning_rate": 1e-4, "freeze.layers": 2}, [0.8, 0.82, 0.81])


def _failed_only(study: optuna.Study) -> None:
    add_trial(study, {"training.learning_rate": 1e-4}, [], TrialState.FAIL, fail_reason="out of memory in fold 1")
    add_trial(study, {"training.learning_rate": 1e-3}, [], TrialState.FAIL, fail_reason="loss became nan")


def _only_training_knobs(study: optuna.Study) -> None:
    for value, scores in ((1e-5, [0.7, 0.72]), (1e-4, [0.8, 0.81]), (1e-3, [0.75, 0.74])):
        add_trial(study, {"training.learning_rate": value}, scores)


EDGE_CASES = {
    "no trial": (_no_trial, {"trials": "This study has no trial yet."}),
    "one trial": (_one_trial, {"importances": "Needs at least 2 finished trials; this study has 1."}),
    "failed only": (
        _failed_only,
        {"best": "No finished trial yet: this figure appears when the first trial completes."},
    ),
    "knobs never used": (
        _only_training_knobs,
        {"contour-distill": "distill.alpha and distill.temperature were not searched in this study."},
    ),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_cases_give_a_readable_report(storage: str, tmp_path: Path, case: str) -> None:
    fill, expected_messages = EDGE_CASES[case]
    study = optuna.create_study(storage=storage, study_name=case)
    for key, value in study_attrs().items():
        study.set_user_attr(key, value)
    fill(study)
    drawn = figures.report_figures(study)
    assert list(drawn) == list(figures.FIGURES)
    for key, expected in expected_messages.items():
        assert message(drawn[key]) == expected
    page = write_report(case, storage, tmp_path / "report").read_text()
    payload = json.loads(re.search(r'id="payload">(.*?)</script>', page, re.S).group(1))
    assert [item["id"] for item in payload["figures"]] == list(figures.FIGURES)


def test_a_study_from_outside_hft_search_still_gets_a_report(storage: str, tmp_path: Path) -> None:
    """No user attributes at all (a plain Optuna study in the same storage): figures fall back, nothing breaks."""
    study = optuna.create_study(storage=storage, study_name="foreign")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1) ** 2, n_trials=4)
    drawn = figures.report_figures(study)
    assert not is_message(drawn["history"]) and not is_message(drawn["parallel"])
    assert message(drawn["pareto"]) == "No finished trial with a recorded trainable fraction yet."
    assert write_report("foreign", storage, tmp_path).exists()


# --------------------------------------------------------------------------------------------------------------
# The page.
# --------------------------------------------------------------------------------------------------------------


def _evil_study(storage: str) -> optuna.Study:
    study = create_hybrid_study(storage, name=EVIL_NAME, n_complete=3, note="<i>markup in a study attribute</i>")
    markup_choice = CategoricalDistribution((EVIL_CHOICE, "plain"))
    for choice, scores in ((EVIL_CHOICE, [0.8, 0.81]), ("plain", [0.7, 0.72])):
        study.add_trial(
            optuna.create_trial(
                value=sum(scores) / 2,
                params={"importance.granularity": choice, "distill.alpha": 0.5},
                distributions={"importance.granularity": markup_choice, "distill.alpha": FloatDistribution(0, 1)},
                user_attrs={"fold_scores": scores, "fail_reason": EVIL_REASON, "trainable_fraction": 0.5},
            )
        )
    return study


def test_user_strings_are_escaped_in_the_page_and_in_every_figure(storage: str, tmp_path: Path) -> None:
    study = _evil_study(storage)
    page = write_report(EVIL_NAME, storage, tmp_path).read_text()
    outside_library = page.replace(plotly_js(), "")
    assert EVIL_NAME not in outside_library and EVIL_CHOICE not in outside_library
    assert f"<title>{html.escape(EVIL_NAME)} · hft-search report</title>" in page
    assert f'<h1 id="title">{html.escape(EVIL_NAME)}</h1>' in page
    payload_text = re.search(r'id="payload">(.*?)</script>', page, re.S).group(1)
    assert "<" not in payload_text and ">" not in payload_text
    assert json.loads(payload_text)["study"] == EVIL_NAME

    drawn = figures.report_figures(study).values()
    everything = json.dumps([figure.to_plotly_json() for figure in drawn], cls=PlotlyJSONEncoder)
    for raw in (EVIL_NAME, EVIL_CHOICE, EVIL_REASON):
        assert raw not in everything
    assert html.escape(EVIL_REASON, quote=False) in table_columns(figures.trials_figure(study))[-1]
    dimensions = {dimension.label: dimension for dimension in figures.parallel_coordinates(study).data[0].dimensions}
    assert html.escape(EVIL_CHOICE, quote=False) in dimensions["importance.granularity"].ticktext


def test_script_json_cannot_end_its_script_element() -> None:
    text = script_json({"name": "</script><script>alert(1)</script>", "nan": float("nan"), "amp": "a&b"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script>", "nan": None, "amp": "a&b"}


def test_the_report_is_one_self_contained_file(stored: str, tmp_path: Path) -> None:
    index = write_report("hybrid", stored, tmp_path / "out")
    assert [path.name for path in index.parent.iterdir()] == ["index.html"]  # no temporary file left behind
    assert index.stat().st_mode & 0o044 == 0o044 & ~current_umask()  # readable as any new file of the user
    page = index.read_text()
    assert page.count(plotly_js()) == 1
    outside_library = page.replace(plotly_js(), "")
    assert "cdn.plot.ly" not in outside_library
    assert re.findall(r"<script[^>]*\ssrc=|<link[^>]*\shref=\"(?!data:)", outside_library) == []
    assert "http://" not in outside_library and "https://" not in outside_library
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page).group(1)
    assert html.unescape(policy).startswith("default-src 'none'; script-src 'sha256-")


def test_report_is_rewritten_in_place(storage: str, tmp_path: Path) -> None:
    study = create_hybrid_study(storage, n_complete=2)
    first = write_report("hybrid", storage, tmp_path).read_text()
    add_trial(study, {"training.learning_rate": 1e-4, "freeze.layers": 1}, [0.9, 0.91, 0.92])
    second = write_report("hybrid", storage, tmp_path).read_text()
    assert first != second and "Trials (6)" in second


def test_default_folder_is_named_after_the_study(storage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    create_hybrid_study(storage, name=EVIL_NAME, n_complete=2)
    monkeypatch.chdir(tmp_path)
    folder = Path(f"dashboards/script_alert_1_script-{hashlib.sha256(EVIL_NAME.encode()).hexdigest()[:8]}")
    assert default_report_dir(EVIL_NAME) == folder
    assert write_report(EVIL_NAME, storage) == tmp_path / folder / "index.html"
    assert (tmp_path / folder / "index.html").exists()
    assert default_report_dir("plain-name_1.0") == Path("dashboards/plain-name_1.0")


def test_names_that_sanitise_alike_get_different_folders() -> None:
    assert default_report_dir("evil") == Path("dashboards/evil")
    assert default_report_dir("../../evil") not in (Path("dashboards/evil"), default_report_dir("evil/"))
    assert default_report_dir("../../evil").parent == Path("dashboards")


def test_a_missing_study_is_an_error_that_lists_the_studies(stored: str) -> None:
    with pytest.raises(StorageError, match=r"no study 'nope' in sqlite:///.*studies there: 'hybrid'.*--study"):
        write_report("nope", stored)


def test_reports_never_import_the_training_code() -> None:
    """Design rule: a report is drawn where the database is, without the GPU stack."""
    heavy = [
        "torch",
        "transformers",
        "peft",
        "hft_search.training",
        "hft_search.strategies",
        "hft_search.objective",
        "hft_search.study",
        "hft_search.workers",
        "hft_search.export",
    ]
    code = (
        "import sys, hft_search.reports\n"
        f"print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in {heavy!r})))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
