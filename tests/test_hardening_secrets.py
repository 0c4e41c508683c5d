"""Issue 23, item 2: a password in *any* URL-valued field of a spec is masked wherever the spec is dumped.

Masking follows the field's type (:data:`hft_search.spec.SecretUrl`), not a list of fields: the first test
finds every field that holds a URL and fails when one is declared as a plain ``str``, so the next URL field
cannot leak; the others plant a password in each such field and look for it in every dump and output.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, get_args

import optuna
import pytest
import sqlalchemy
import yaml
from pydantic import BaseModel
from test_hardening import cheap_objective, write_spec

from hft_search import run_study, spec_from_dict
from hft_search.cli import main
from hft_search.spec import MASKED, StudySpec
from hft_search.storage import delete_study_if_exists

PASSWORD = "Pl4ntedS3cret"


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models(arg)]


def _masked(annotation: Any, metadata: list[Any]) -> bool:
    return any(m is MASKED for m in metadata) or any(a is MASKED or _masked(a, []) for a in get_args(annotation))


def _holds_text(annotation: Any) -> bool:
    return annotation in (str, Any) or getattr(annotation, "__origin__", None) is dict \
        or any(_holds_text(arg) for arg in get_args(annotation))


def secret_fields(model: type[BaseModel] = StudySpec, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], bool]:
    """Every text field of the spec that may hold a URL (its name says url or storage, or its description
    says URL), and whether its type is secret-bearing; nested sections are walked."""
    found = {}
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        says_url = "url" in name or "storage" in name or "URL" in (field.description or "")
        if says_url and _holds_text(field.annotation) and not _models(field.annotation):
            found[path] = _masked(field.annotation, field.metadata)
        for inner in _models(field.annotation):
            found.update(secret_fields(inner, path))
    return found


def test_2_every_url_field_of_the_spec_has_the_secret_type() -> None:
    fields = secret_fields()
    assert {("study", "storage"), ("study", "warm_start", "storage"), ("provenance",)} <= set(fields)
    assert [".".join(path) for path, masked in fields.items() if not masked] == []


def _plant(raw: dict, path: tuple[str, ...], url: str) -> dict:
    """``raw`` with ``url`` at ``path`` (a provenance gets a ``storage`` entry)."""
    raw = yaml.safe_load(yaml.safe_dump(raw))
    holder = raw
    for part in path[:-1]:
        holder = holder.setdefault(part, {"study": "earlier"} if part == "warm_start" else {})
    holder[path[-1]] = {"storage": url} if path == ("provenance",) else url
    return raw


@pytest.mark.parametrize("path", sorted(secret_fields()), ids=".".join)
def test_2_a_password_in_any_url_field_is_masked_in_every_dump(path: tuple[str, ...], tiny_spec_dict: dict) -> None:
    url = f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/db"
    spec = spec_from_dict(_plant(tiny_spec_dict, path, url))
    dumps = [spec.model_dump(), spec.model_dump(mode="json"), spec.model_dump(mode="json", by_alias=True,
                                                                              exclude_none=True)]
    assert all(PASSWORD not in str(dump) and "u:***@127.0.0.1" in str(dump) for dump in dumps)
    assert PASSWORD in spec.to_yaml()  # the one dump that must run: a spec file written for the user


def test_2_a_warm_start_password_reaches_no_output(tiny_spec_dict: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The reproduction of the issue on the real PostgreSQL (trust authentication ignores the password)."""
    base = os.environ.get("HFT_TEST_POSTGRES_URL")
    assert base, "HFT_TEST_POSTGRES_URL must name the test PostgreSQL"
    url = sqlalchemy.engine.make_url(base).set(password=PASSWORD).render_as_string(hide_password=False)
    earlier = f"earlier-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=earlier, storage=url, direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={"freeze.layers": 1}, value=0.5, distributions={
        "freeze.layers": optuna.distributions.IntDistribution(0, 2)}))
    try:
        raw = {**tiny_spec_dict, "study": {**tiny_spec_dict["study"], "warm_start": {"study": earlier,
                                                                                     "storage": url}}}
        spec_file = write_spec(tmp_path, raw)
        assert main(["validate", str(spec_file), "--no-model-check"]) == 0
        spec = spec_from_dict(raw)
        run_study(spec, n_trials=1, objective=cheap_objective(spec))
        best = tmp_path / "best.yaml"
        assert main(["export", "--study", "tiny", "--storage", raw["study"]["storage"], "-o", str(best)]) == 0
    finally:
        delete_study_if_exists(earlier, url)
    captured = capsys.readouterr()
    assert PASSWORD not in captured.out + captured.err + caplog.text
    stored = optuna.load_study(study_name="tiny", storage=raw["study"]["storage"]).user_attrs["spec"]
    assert stored["study"]["warm_start"]["storage"].startswith("postgresql+psycopg://postgres:***@")
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != spec_file]
    assert best in written and [p for p in written if PASSWORD.encode() in p.read_bytes()] == []
