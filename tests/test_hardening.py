"""Issue 15's reproductions, one test (or one parametrised test) per numbered item, with the right outcome now;
and issue 12.7's contradictory specs.

Each bad input must end as one ``error:`` line on stderr with exit status 2 (3 for a run short of ``n_trials``),
no traceback, and nothing created or half-written.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hft_search import load_spec, run_study, spec_from_dict
from hft_search.cli import main
from hft_search.data import load_data
from hft_search.exceptions import DataError, StorageError
from hft_search.files import atomic_folder
from hft_search.objective import REASON_CHARS, error_text, repeat_verdict, repeated_trial, suggest_config
from hft_search.reports.server import make_server
from hft_search.spec import DataSpec
from hft_search.study import open_study, resumed_seed
from hft_search.workers import optimize, shortfall

PASSWORD = "TopSecretPW42"


def write_spec(folder: Path, raw: dict, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(raw))
    return path


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    """The one error the CLI printed: a single ``error:`` line (a spec error lists its problems below it), and
    no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return err[err.index("error:"):]


def cheap_objective(spec: object) -> object:
    """Samples the spec's space like the CV objective, scores without training (study mechanics only)."""

    def objective(trial: optuna.Trial) -> float:
        config = suggest_config(trial, spec)
        trial.set_user_attr("config", config.flat())
        return config.training.learning_rate

    return objective


# -- 1. no password of the spec's storage in any output ---------------------------------------------------


def test_1_a_password_in_the_spec_storage_reaches_no_file_and_no_output(
        tiny_spec_dict: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    work = tmp_path / "work"
    work.mkdir()
    sqlite = tiny_spec_dict["study"]["storage"]
    raw = {**tiny_spec_dict, "study": {**tiny_spec_dict["study"], "n_trials": 1,
                                       "storage": f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/db"}}
    spec = write_spec(work, raw)
    assert main(["validate", str(spec)]) == 0
    assert main(["run", str(spec), "--storage", sqlite, "--no-progress"]) == 0
    best = work / "best.yaml"
    assert main(["export", "--study", "tiny", "--storage", sqlite, "-o", str(best)]) == 0
    assert main(["train", str(best), "-o", str(work / "model"), "--storage", sqlite]) == 0
    assert main(["report", "--study", "tiny", "--storage", sqlite, "-o", str(work / "report")]) == 0
    assert main(["best", "--study", "tiny", "--storage", sqlite]) == 0
    captured = capsys.readouterr()
    assert PASSWORD not in captured.out + captured.err
    assert "u:***@127.0.0.1" in best.read_text()
    stored = optuna.load_study(study_name="tiny", storage=sqlite).user_attrs["spec"]
    assert PASSWORD not in str(stored)
    written = [p for p in [*work.rglob("*"), *tmp_path.glob("hft.db*")] if p.is_file() and p != spec]
    assert any(p.name == "hft_search.json" for p in written) and any(p.name == "index.html" for p in written)
    assert [p for p in written if PASSWORD.encode() in p.read_bytes()] == []


# -- 2. a resumed study that the spec contradicts is refused ------------------------------------------------


def test_2_resume_with_other_objectives_is_refused_naming_them(tiny_spec_dict: dict) -> None:
    open_study(spec_from_dict(tiny_spec_dict))
    changed = {**tiny_spec_dict, "study": {**tiny_spec_dict["study"], "objectives": "score+trainable_fraction"}}
    with pytest.raises(StorageError, match=r"objectives 'score' \(spec: 'score\+trainable_fraction'\).*--study-name"):
        open_study(spec_from_dict(changed))


def test_2_resume_of_a_study_with_another_direction_is_refused(tiny_spec_dict: dict) -> None:
    optuna.create_study(study_name="tiny", storage=tiny_spec_dict["study"]["storage"], direction="minimize")
    with pytest.raises(StorageError, match=r"directions \['minimize'\] \(spec: \['maximize'\]\)"):
        open_study(spec_from_dict(tiny_spec_dict))


# -- 3. masking passwords with raw "/", "@", ":" ... -------------------------------------------------------


@pytest.mark.parametrize("password", ["pa/ss3cr3t", "p@ss3cr3t", "pa:ss/3c@r3t", "x?y#3cr3t", "'q\"3cr3t"])
def test_3_hostile_passwords_are_masked_in_errors(password: str, capsys: pytest.CaptureFixture) -> None:
    url = f"postgresql+psycopg://postgres:{password}@127.0.0.1:1/x"
    assert main(["status", "--study", "x", "--storage", url]) == 2
    line = one_error_line(capsys)
    assert "3cr3t" not in line and "postgres:***@" in line


# -- 4. new configurations on every resume, none fine-tuned twice ------------------------------------------


def test_4_a_resume_draws_new_configurations_and_a_new_study_stays_reproducible(tiny_spec_dict: dict,
                                                                                tmp_path: Path) -> None:
    raw = {**tiny_spec_dict, "study": {**tiny_spec_dict["study"], "sampler": "random"}}
    spec = spec_from_dict(raw)
    first = run_study(spec, n_trials=3, objective=cheap_objective(spec))
    resumed = run_study(spec, n_trials=6, objective=cheap_objective(spec))
    params = [t.params for t in resumed.trials]
    assert all(p not in params[:3] for p in params[3:])
    again = run_study(spec, n_trials=3, storage=f"sqlite:///{tmp_path / 'again.db'}", objective=cheap_objective(spec))
    assert [t.params for t in again.trials] == [t.params for t in first.trials][:3]


def test_4_a_process_that_joins_a_running_study_draws_its_own_sequence(tiny_spec_dict: dict,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_from_dict(tiny_spec_dict)
    study = open_study(spec)
    quiet = resumed_seed(spec, study)
    study.ask()  # another process's trial, RUNNING
    seeds = set()
    for pid in (101, 102):
        monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)
        seeds.add(resumed_seed(spec, study))
    assert len(seeds) == 2 and quiet not in seeds


def test_4_a_configuration_already_scored_is_not_fine_tuned_again(tiny_spec_dict: dict) -> None:
    raw = {**tiny_spec_dict, "search_space": {"freeze.layers": {"int": [0, 1]}},
           "study": {**tiny_spec_dict["study"], "sampler": "random", "n_trials": 5}}
    study = run_study(spec_from_dict(raw))
    firsts = {}
    for trial in study.trials:
        key = trial.params["freeze.layers"]
        if key in firsts:
            assert trial.user_attrs["repeat_of"] == firsts[key].number and trial.values == firsts[key].values
        else:
            firsts[key] = trial
            assert "repeat_of" not in trial.user_attrs
    assert len(firsts) == 2 and len(study.trials) == 5


@pytest.mark.parametrize(("state", "pooling"), [(TrialState.FAIL, "mean"), (TrialState.PRUNED, "mean"),
                                               (TrialState.COMPLETE, "mean"), (TrialState.COMPLETE, "cls"),
                                               (TrialState.COMPLETE, None)])
def test_4_only_a_completed_configuration_with_the_same_pooling_is_reused(state: TrialState,
                                                                          pooling: str | None) -> None:
    # A PRUNED verdict depended on the competitors of its moment, a FAIL on the machine: both are fitted again;
    # so is a verdict of a head that read another pooling (or of a trial from before pooling was recorded).
    study = optuna.create_study()
    earlier = study.ask({"x": optuna.distributions.IntDistribution(0, 3)})
    earlier.set_user_attr("fail_reason", "out of memory in fold 0")
    if pooling is not None:
        earlier.set_user_attr("pooling", pooling)
    study.tell(earlier, 0.5 if state == TrialState.COMPLETE else None, state=state)
    study.enqueue_trial(earlier.params)

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_int("x", 0, 3)
        found = repeated_trial(trial, "mean")
        return 0.7 if found is None else repeat_verdict(trial, found)

    study.optimize(objective, n_trials=1)
    repeat = study.trials[-1]
    assert repeat.state == TrialState.COMPLETE
    if state == TrialState.COMPLETE and pooling == "mean":
        assert repeat.value == 0.5 and repeat.user_attrs == {"repeat_of": 0, "fold_epochs": 0, "pooling": "mean"}
    else:
        assert repeat.value == 0.7 and repeat.user_attrs == {}


# -- 5. outputs replace only regular files, never a link, a device, the input or the current folder --------


@pytest.fixture
def fixed_spec(tiny_spec_dict: dict, tmp_path: Path) -> Path:
    return write_spec(tmp_path, {**tiny_spec_dict, "search_space": {}, "fixed": {"training.epochs": 1}},
                      "fixed.yaml")


def test_5_export_force_refuses_a_symlink_and_a_device(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "real.yaml"
    target.write_text("keep")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    for output, what in ((link, "symbolic link"), (Path(os.devnull), "device")):
        assert main(["export", "--study", "x", "--storage", f"sqlite:///{tmp_path / 'none.db'}",
                     "-o", str(output), "--force"]) == 2
        assert what in one_error_line(capsys)
    assert link.is_symlink() and target.read_text() == "keep"


def test_5_train_refuses_its_spec_the_current_folder_and_a_link(fixed_spec: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    before = fixed_spec.read_text()
    assert main(["train", str(fixed_spec), "-o", str(fixed_spec), "--force"]) == 2
    assert "is a file" in one_error_line(capsys) and fixed_spec.read_text() == before
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(fixed_spec), "-o", ".", "--force"]) == 2
    assert "current folder" in one_error_line(capsys)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "models").symlink_to(tmp_path / "elsewhere")
    assert main(["train", str(fixed_spec), "-o", "models", "--force"]) == 2
    assert "symbolic link" in one_error_line(capsys)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_5_a_killed_trains_staging_folder_is_cleaned_by_the_next_train(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = tmp_path / f".model.{int(dead.stdout)}.abcd1234.tmp"
    abandoned.mkdir()
    alive = tmp_path / f".model.{os.getpid()}.efgh5678.tmp"
    alive.mkdir()
    with atomic_folder(tmp_path / "model") as staging:
        (staging / "weights").write_text("w")
    assert not abandoned.exists() and alive.exists() and (tmp_path / "model" / "weights").is_file()


# -- 6. read-only commands create nothing -------------------------------------------------------------------


@pytest.mark.parametrize("command", [["status"], ["best"], ["report"], ["export", "-o", "out.yaml"]])
def test_6_read_only_commands_create_no_storage(command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty.db"
    empty.touch()
    empty_log = tmp_path / "empty.log"
    empty_log.touch()
    urls = [f"sqlite:///{tmp_path}/no/dir/x.db", f"journal:{tmp_path}/nodir/a.log", f"sqlite:///{empty}",
            f"journal:{empty_log}"]
    for url in urls:
        assert main([command[0], "--study", "x", "--storage", url, *command[1:]]) == 2
        assert "no study storage at" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "empty.log"]
    assert empty.stat().st_size == 0 and empty_log.stat().st_size == 0


def test_6_a_failed_run_leaves_no_database(tiny_spec_dict: dict, tmp_path: Path) -> None:
    raw = {**tiny_spec_dict, "data": {"train": str(tmp_path / "missing.csv")},
           "study": {**tiny_spec_dict["study"], "storage": f"sqlite:///{tmp_path}/sub/hft.db"}}
    assert main(["run", str(write_spec(tmp_path, raw)), "--no-progress"]) == 2
    assert not (tmp_path / "sub").exists()


# -- 7. bounded YAML ----------------------------------------------------------------------------------------


def test_7_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nname: *a8\n")
    assert main(["validate", str(bomb), "--no-model-check"]) == 2
    assert "expands to more than" in one_error_line(capsys)
    big = tmp_path / "big.yaml"
    big.write_text("name: x\n" + "#" * 2_000_000)
    assert main(["validate", str(big), "--no-model-check"]) == 2
    assert "limit" in one_error_line(capsys)


# -- 8. validate catches what every trial would fail on ----------------------------------------------------


@pytest.mark.parametrize(("change", "field"), [
    ({"model": {"max_length": 128}}, "model.max_length: 128 exceeds the 64 positions"),
    ({"fixed": {"lora.targets": ["query", "nonexistent"]}}, "fixed.lora.targets: 'nonexistent' matches no module"),
    ({"fixed": {"distill.teacher": "./no-such-teacher"}}, "fixed.distill.teacher: teacher checkpoint folder"),
    ({"search_space": {"training.learning_rate": {"float": [1e-5, ".inf"]}}}, "search_space.training.learning_rate"),
    ({"search_space": {"lora.r": {"int": [1, 64]}}}, "search_space.lora.r: 64 exceeds the model's 32 hidden size"),
    ({"search_space": {"lora.r": {"int": [1, 1_000_000]}}}, "search_space.lora.r: value 1000000 is out of range"),
])
def test_8_validate_catches_what_every_trial_would_fail_on(tiny_spec_dict: dict, tmp_path: Path, change: dict,
                                                           field: str, capsys: pytest.CaptureFixture) -> None:
    raw = dict(tiny_spec_dict)
    for section, value in change.items():
        raw[section] = {**raw.get(section, {}), **value}
    text = yaml.safe_dump(raw).replace("'.inf'", ".inf")
    (tmp_path / "spec.yaml").write_text(text)
    assert main(["validate", str(tmp_path / "spec.yaml")]) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err


def test_8_fail_reason_keeps_the_cause_at_the_end_of_a_long_message() -> None:
    try:
        try:
            raise RuntimeError("first line\n" + "detail " * 1000 + "the actual cause")
        except RuntimeError as inner:
            raise ValueError("wrapper") from inner
    except ValueError as error:
        text = error_text(error)
    assert "wrapper" in text and text.endswith("the actual cause") and len(text) <= REASON_CHARS + 5
    assert "\n" not in text


# -- 9. one line and exit 2 instead of tracebacks -----------------------------------------------------------


def test_9_user_mistakes_are_one_line_with_exit_2(tiny_spec_dict: dict, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert main(["validate", str(latin)]) == 2
    assert "not UTF-8" in one_error_line(capsys)
    sqlite = tiny_spec_dict["study"]["storage"]
    spec = spec_from_dict(tiny_spec_dict)
    run_study(spec, n_trials=1, objective=cheap_objective(spec))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for args, expected in ((["report", "-o", str(a_file)], "not a folder"),
                           (["export", "-o", str(tmp_path), "--force"], "is a folder"),
                           (["export", "-o", str(a_file / "x.yaml")], "not a folder")):
        assert main([args[0], "--study", "tiny", "--storage", sqlite, *args[1:]]) == 2
        assert expected in one_error_line(capsys)
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("args", [["run", "spec.yaml", "--n-trials", "0"], ["run", "spec.yaml", "--n-trials", "-5"],
                                  ["predict", "m", "--input", "i.csv", "--batch-size", "0"]])
def test_9_counts_below_one_are_usage_errors(args: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2 and "must be 1 or more" in capsys.readouterr().err


def test_9_an_interrupted_trial_logs_one_line_without_a_traceback(tiny_spec_dict: dict,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    study = open_study(spec_from_dict(tiny_spec_dict))

    def interrupted(trial: optuna.Trial) -> float:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optimize(study, interrupted, 1)
    records = [r for r in caplog.records if r.getMessage().startswith("Trial 0 failed with parameters")]
    assert len(records) == 1 and records[0].exc_info is None and not records[0].exc_text


# -- 10. a dead worker's RUNNING trial in a journal ---------------------------------------------------------


def test_10_journal_run_short_of_n_trials_exits_3_and_requeue_frees_the_place(
        tiny_spec_dict: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    journal = f"journal:{tmp_path / 'j.log'}"
    raw = {**tiny_spec_dict, "study": {**tiny_spec_dict["study"], "storage": journal, "n_trials": 1}}
    spec_path = write_spec(tmp_path, raw)
    study = open_study(spec_from_dict(raw))
    study.ask()  # the trial of a worker killed with SIGKILL: RUNNING for ever
    assert main(["run", str(spec_path), "--no-progress"]) == 3
    line = one_error_line(capsys)
    assert "0 of 1" in line and "hft-search requeue --study tiny" in line
    assert main(["requeue", "--study", "tiny", "--storage", journal]) == 0
    assert "re-queued 1 trial(s): 0" in capsys.readouterr().out
    states = [t.state for t in optuna.load_study(study_name="tiny", storage=open_study(spec_from_dict(raw))._storage)
              .trials]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    assert shortfall(study, 1) is not None


# -- 11. smaller ones -----------------------------------------------------------------------------------------


def test_11_text_none_and_na_are_texts(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("text,label\nNone,a\nNA,b\nnull,a\n007,b\n")
    data = load_data(DataSpec(train=str(train)))
    assert data.train.texts == ["None", "NA", "null", "007"]


def test_11_a_folder_and_a_non_utf8_file_are_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a folder, not a file"):
        load_data(DataSpec(train=str(tmp_path)))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"is not UTF-8 text \(byte 14\)"):
        load_data(DataSpec(train=str(latin)))


def test_11_the_dashboard_answers_only_its_own_host_names(tiny_spec_dict: dict) -> None:
    storage = tiny_spec_dict["study"]["storage"]
    open_study(spec_from_dict(tiny_spec_dict))
    server = make_server(storage, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        statuses = {}
        for host in ("evil.example", f"localhost:{port}", f"127.0.0.1:{port}", "attacker.test:80"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/api/studies", headers={"Host": host})
            statuses[host] = connection.getresponse().status
            connection.close()
    finally:
        server.shutdown()
        server.server_close()
    assert statuses == {"evil.example": 421, f"localhost:{port}": 200, f"127.0.0.1:{port}": 200,
                        "attacker.test:80": 421}


# -- 12. no quantization imports at start-up ----------------------------------------------------------------


def test_12_training_imports_no_quantization_and_validate_prints_no_noise(tiny_spec_dict: dict,
                                                                           tmp_path: Path) -> None:
    spec = write_spec(tmp_path, tiny_spec_dict)
    code = ("import sys, hft_search.cli, hft_search.objective, hft_search.export; "
            "print(sorted(m for m in ('peft', 'torchao', 'transformers.trainer_utils') if m in sys.modules)); "
            f"sys.exit(hft_search.cli.main(['validate', {str(spec)!r}]))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stdout.startswith("[]\n"), result.stderr[-2000:]
    assert result.stderr == ""


# -- 12.7 contradictory specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "expected"), [
    ({"fixed": {"lora.r": 4, "freeze.enabled": False, "importance.threshold": 0.5}}, "importance.enabled: LoRA"),
    ({"fixed": {"lora.r": 4, "freeze.enabled": True}}, "freeze.layers: is 0 in every trial"),
    ({"study": {"pruner": "wilcoxon"}}, "study.pruner: wilcoxon with cv.folds=2 can never prune"),
    ({"study": {"direction": "minimize"}}, "study.direction: 'minimize' is not supported: every cv.metric is better"),
    ({"fixed": {"distill.alpha": 0.0, "distill.beta": 0.0}}, "distill.alpha: distill.alpha and distill.beta"),
    ({"fixed": {"distill.enabled": False, "distill.alpha": 0.3}}, "fixed.distill.enabled: is false, so distill.alpha"),
    ({"study": {"objectives": "score+student_params"}}, "study.objectives: score+student_params needs distillation"),
    ({"fixed": {"distill.teacher": "/", "distill.teacher_epochs": 2}},
     "fixed.distill.teacher_epochs: distill.teacher_epochs only apply"),
    ({"fixed": {"distill.student_layers": 9}}, "fixed.distill.student_layers: 9 exceeds the model's 4"),
])
def test_12_7_contradictory_specs_are_one_line_each(tiny_spec_dict: dict, tmp_path: Path, change: dict,
                                                    expected: str, capsys: pytest.CaptureFixture) -> None:
    raw = {**tiny_spec_dict, "search_space": {"training.learning_rate": {"float": [1e-4, 1e-2], "log": True}}}
    for section, value in change.items():
        raw[section] = {**raw.get(section, {}), **value}
    assert main(["validate", str(write_spec(tmp_path, raw))]) == 2
    err = capsys.readouterr().err
    problems = [line for line in err.splitlines() if line.startswith("  ")]
    assert "Traceback" not in err and len(problems) == 1 and problems[0].startswith(f"  {expected}"), err


def test_12_7_a_consistent_hybrid_spec_still_validates(tiny_spec_dict: dict, tmp_path: Path) -> None:
    raw = {**tiny_spec_dict, "fixed": {**tiny_spec_dict["fixed"], "lora.r": 4, "importance.threshold": 0.5},
           "cv": {"folds": 5}, "study": {**tiny_spec_dict["study"], "pruner": "wilcoxon"}}
    spec = load_spec(write_spec(tmp_path, raw))
    assert spec.enabled_groups() == {"freeze": True, "importance": True, "distill": False, "lora": True}
