"""What each command reads, by role: the paths that none of its outputs may be, hold, or lie inside.

Why a rule and not a list of special cases: ``export -o self.db --force`` once replaced the study database
it was exporting from with a YAML file, and ``train m/spec.yaml -o m --force`` deleted its own spec. Every
command that writes therefore names what it reads here, and :func:`hft_search.files.refuse_inputs` refuses
an output that would replace any of it, ``--force`` or not:

* ``export``: the study storage, then the data, model and teacher of the spec it writes;
* ``train``: the spec file, its data, model and teacher, the study storage it records the final metrics in;
* ``predict``: the input table and the model folder;
* ``report``: the study storage;
* ``run``, ``worker``, ``launch`` (whose output is the study storage): the spec file, its data, model and
  teacher.
"""

from __future__ import annotations

from pathlib import Path

from hft_search.exceptions import StorageError
from hft_search.files import Inputs, refuse_inputs
from hft_search.spec import StudySpec
from hft_search.storage import storage_files


def storage_inputs(url: str | None) -> Inputs:
    """The files of the study storage ``url`` (none for a database server, or a URL that names no storage:
    the command reports that itself when it opens it)."""
    try:
        return [("the study storage", path) for path in storage_files(url)] if url else []
    except StorageError:
        return []


def _local(value: object) -> Path | None:
    """``value`` as an existing local path, or None (a hub name, the packaged ``minilm``, nothing)."""
    if not isinstance(value, str) or not value:
        return None
    path = Path(value).expanduser()
    return path if path.exists() else None


def spec_inputs(spec: StudySpec, spec_file: str | Path | None = None) -> Inputs:
    """The spec file, and the local data files, model folder and teacher checkpoints the spec names."""
    teachers = [spec.fixed.get("distill.teacher")]
    if "distill.teacher" in spec.search_space:
        teachers = spec.search_space["distill.teacher"].endpoints()
    found: list[tuple[str, Path | None]] = [
        ("the spec", Path(spec_file) if spec_file is not None else None),
        ("the training data (data.train)", _local(spec.data.train)),
        ("the test data (data.test)", _local(spec.data.test)),
        ("the hub dataset folder (data.dataset)", _local(spec.data.dataset)),
        ("the model folder (model.name)", _local(spec.model.name)),
        *(("the teacher checkpoint (distill.teacher)", _local(teacher)) for teacher in teachers),
    ]
    return [(role, path) for role, path in found if path is not None]


def check_storage_target(url: str, spec: StudySpec, spec_file: str | Path | None = None) -> None:
    """Refuse a study storage (the output of ``run``, ``worker``, ``launch``) that would replace, or be written
    inside, one of the spec's inputs: ``--storage journal:train.csv`` would append to the training data."""
    inputs = list(spec_inputs(spec, spec_file))
    for path in storage_files(url):
        refuse_inputs(path, inputs)
