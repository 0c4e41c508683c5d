"""``docs/user_attrs.md`` documents exactly the attribute names of ``hft_search.attrs``, and the package reads and
writes no attribute by a name that module does not list."""

from __future__ import annotations

import re
from pathlib import Path

import hft_search
from hft_search import attrs

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "user_attrs.md").read_text(encoding="utf-8")


def _documented(section: str) -> set[str]:
    """Names the page documents: the head of a bullet (- `name` ...), and `name`: after a ; or , inside one."""
    return set(re.findall(r"^- `(\w+)`", section, re.M)) | set(re.findall(r"[;,] `(\w+)`:", section))


def _section(start: str, end: str) -> str:
    return DOC.split(start, 1)[1].split(end, 1)[0]


def test_the_study_attributes_documented_are_the_modules() -> None:
    assert _documented(_section("Study user attributes", "Trial user attributes")) == attrs.STUDY_ATTRS


def test_the_trial_attributes_documented_are_the_modules() -> None:
    assert _documented(_section("Trial user attributes", "\nValues:")) == attrs.TRIAL_ATTRS


def test_every_attribute_the_package_names_is_in_the_module() -> None:
    named = re.compile(r"""(?:set_user_attr\(|user_attrs\.get\(|user_attrs\[)\s*["'](\w+)["']""")
    used = {name for path in Path(hft_search.__file__).parent.rglob("*.py")
            for name in named.findall(path.read_text(encoding="utf-8"))}
    assert used and used <= attrs.STUDY_ATTRS | attrs.TRIAL_ATTRS, used - attrs.STUDY_ATTRS - attrs.TRIAL_ATTRS


def test_the_score_attributes_are_trial_attributes() -> None:
    assert attrs.TRIAL_SCORE_ATTRS < attrs.TRIAL_ATTRS
    assert attrs.FAILURE_KIND_ATTR in attrs.TRIAL_ATTRS - attrs.TRIAL_SCORE_ATTRS
