"""Reading a spec: bounded, safe YAML loading and validation into a :class:`~hft_search.spec.StudySpec`.

A spec is input from anyone who can write to the studies folder: it is safe-loaded, a key given twice is
refused, and its size is bounded before and after its aliases expand. Validation then collects every problem
(unknown knobs, values out of range, sections, cross-field rules) into one :class:`SpecError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hft_search.exceptions import SpecError, SpecIssue
from hft_search.spec._checks import cross_checks
from hft_search.spec._knobs import check_knobs, pydantic_issues
from hft_search.spec._study_spec import StudySpec

MAX_SPEC_BYTES = 1_000_000
"""Largest spec file read: a real spec is a few kilobytes; more is a mistake (a data file given as the spec)."""

MAX_SPEC_VALUES = 100_000
"""Most values a spec may expand to once YAML aliases are resolved. A few aliases nested ten deep (a
"billion laughs" document of a few hundred bytes) expand to billions of values and gigabytes of memory."""


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the spec's relative paths (data files, model, teacher, SQLite and journal storages) absolute,
    against ``base``, the spec's folder: a study must run the same from any working directory."""
    data = raw.get("data")
    if isinstance(data, dict):
        for key in ("train", "test", "unlabeled"):
            value = data.get(key)
            if isinstance(value, str) and not Path(value).expanduser().is_absolute():
                data[key] = str((base / value).resolve())
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str):
        name = model["name"]
        if name.startswith(("./", "../")):
            model["name"] = str((base / name).resolve())
    fixed = raw.get("fixed")
    teacher = fixed.get("distill.teacher") if isinstance(fixed, dict) else None
    if isinstance(teacher, str) and teacher.startswith(("./", "../")):
        fixed["distill.teacher"] = str((base / teacher).resolve())
    study = raw.get("study") if isinstance(raw.get("study"), dict) else {}
    warm = study.get("warm_start") if isinstance(study.get("warm_start"), dict) else {}
    for holder in (study, warm):
        storage = holder.get("storage")
        for prefix in ("sqlite:///", "journal:"):
            if isinstance(storage, str) and storage.startswith(prefix):
                relative = storage.removeprefix(prefix)
                if relative and relative != ":memory:" and not relative.startswith("/"):
                    holder["storage"] = prefix + str((base / relative).resolve())


def spec_from_dict(raw: Mapping[str, Any], base_dir: Path | str = ".", source: str | None = None) -> StudySpec:
    """Validate a spec given as a mapping; relative paths resolve against ``base_dir``.

    Raises :class:`SpecError` listing every problem at once.
    """
    if not isinstance(raw, Mapping):
        raise SpecError([SpecIssue("", "a spec must be a YAML mapping with `name`, `data`, ...")], source)
    raw = json.loads(json.dumps(dict(raw), default=str))  # deep copy; YAML dates become strings
    _resolve_paths(raw, Path(base_dir))
    raw_space = raw.pop("search_space", None) or {}
    raw_fixed = raw.pop("fixed", None) or {}
    issues: list[SpecIssue] = []
    for section, value in (("search_space", raw_space), ("fixed", raw_fixed)):
        if not isinstance(value, Mapping):
            issues.append(SpecIssue(section, "must be a mapping of dotted knob names"))
    if issues:
        raise SpecError(issues, source)
    space, issues = check_knobs(raw_space, raw_fixed)
    try:
        spec = StudySpec.model_validate({**raw, "search_space": space, "fixed": raw_fixed})
    except ValidationError as error:
        issues.extend(pydantic_issues(error))
        raise SpecError(issues, source) from None
    issues.extend(cross_checks(spec))
    if issues:
        raise SpecError(issues, source)
    return spec


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping: PyYAML keeps the last one silently,
    so a spec with two ``study:`` sections would run with half of what its author wrote."""


class _DuplicateKeyError(yaml.YAMLError):
    pass


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: keys written here override merged ones
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            first = seen.setdefault(key, line)
        except TypeError:  # an unhashable key: the constructor below refuses it with its own message
            continue
        if first != line:
            raise _DuplicateKeyError(f"key {key!r} appears twice in one mapping (lines {first} and {line}); "
                                     "keep one")
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_spec_document(path: str | Path) -> Any:
    """The YAML (or JSON) document of a spec file, before validation.

    YAML is safe-loaded (no Python objects) and a key repeated in one mapping is refused, the file is at most
    :data:`MAX_SPEC_BYTES` and the document at most :data:`MAX_SPEC_VALUES` values once its aliases are
    expanded: a spec is input from anyone who can write to the studies folder, and must not be able to
    exhaust the memory of every worker that loads it.
    """
    path = Path(path)

    def problem(message: str) -> SpecError:
        return SpecError([SpecIssue("", message)], str(path))

    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise problem(f"spec file {path} {what}; check the path")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise problem(f"is {path.stat().st_size} bytes, more than a spec's limit of {MAX_SPEC_BYTES}; "
                      "is it the right file?")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise problem(f"is not UTF-8 text (byte {error.start}); re-save it as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKeyError as error:
        raise problem(str(error)) from None
    except yaml.YAMLError as error:
        raise problem(f"not valid YAML: {' '.join(str(error).split())}") from None
    if _expanded_size(raw, MAX_SPEC_VALUES) > MAX_SPEC_VALUES:
        raise problem(f"expands to more than {MAX_SPEC_VALUES} values (YAML aliases nested in aliases?); "
                      "write the spec out without them")
    return raw


def load_spec(path: str | Path) -> StudySpec:
    """Read (:func:`read_spec_document`) and validate a YAML (or JSON) spec file; its relative paths resolve
    against the file's folder."""
    path = Path(path)
    return spec_from_dict(read_spec_document(path), base_dir=path.resolve().parent, source=str(path))


def _expanded_size(document: Any, limit: int) -> int:
    """How many values ``document`` holds with every alias expanded, counting no further than ``limit + 1``.

    ``yaml.safe_load`` shares aliased objects, so loading is cheap; walking (or copying, as validation does)
    visits each alias in full. The walk stops as soon as it passes ``limit``, so it is cheap too.
    """
    count, stack = 0, [document]
    while stack and count <= limit:
        value = stack.pop()
        count += 1
        if isinstance(value, Mapping):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return count
