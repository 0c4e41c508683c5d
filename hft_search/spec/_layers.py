"""Checks of a spec against the model it fine-tunes: knob values the model cannot honour.

Why apart from the other checks: they need the model's shape (blocks, positions, width, module names), which
only loading the model tells, so ``validate`` and every worker run them once the model is known.
"""

from __future__ import annotations

from collections.abc import Sequence

from hft_search.exceptions import SpecError, SpecIssue
from hft_search.spec._checks import knob_range, knob_section
from hft_search.spec._study_spec import StudySpec


def check_against_layers(spec: StudySpec, num_layers: int, *, max_positions: int | None = None,
                         hidden_size: int | None = None, block_modules: Sequence[str] | None = None,
                         source: str | None = None) -> None:
    """Reject knob values the model cannot honour, so that ``validate`` catches what every trial would fail on.

    Args:
        num_layers: the model's blocks (``freeze.layers``, ``distill.student_layers`` may not exceed it).
        max_positions: longest input the position embeddings allow (``model.max_length``); None: unlimited.
        hidden_size: the model's width (``lora.r`` above it adapts nothing more and costs more than full
            fine-tuning).
        block_modules: names of the modules inside one block; ``lora.targets`` must match one each.
        source: the spec file, named in the error.
    """
    issues = []
    limits = {"freeze.layers": (num_layers, "blocks"), "distill.student_layers": (num_layers, "blocks"),
              "training.reinit_layers": (num_layers, "blocks")}
    if hidden_size is not None:
        limits["lora.r"] = (hidden_size, "hidden size (a wider adapter is no low-rank update)")
    for name, (limit, what) in limits.items():
        bounds = knob_range(spec, name)
        if bounds is not None and bounds[1] > limit:
            issues.append(SpecIssue(f"{knob_section(spec, name)}.{name}",
                                    f"{bounds[1]} exceeds the model's {limit} {what}"))
    frozen, reinit = knob_range(spec, "freeze.layers"), knob_range(spec, "training.reinit_layers")
    # An exported spec pins what a trial ran: a sampled pair that overlapped re-initialised only the blocks above
    # the frozen ones (``training.loop.reinit_count``), and its final fit must do the same, not be refused.
    exported = spec.provenance is not None
    if (spec.enabled_groups()["freeze"] is True and frozen and reinit and frozen[0] + reinit[0] > num_layers
            and not exported):
        issues.append(SpecIssue(f"{knob_section(spec, 'training.reinit_layers')}.training.reinit_layers",
                                f"{reinit[0]} re-initialised + {frozen[0]} frozen blocks exceed the model's "
                                f"{num_layers} (frozen blocks are never re-initialised, so fewer would be); lower one "
                                "of them"))
    if max_positions is not None and spec.model.max_length > max_positions:
        issues.append(SpecIssue("model.max_length", f"{spec.model.max_length} exceeds the {max_positions} "
                                f"positions of model {spec.model.name!r}; use at most {max_positions}"))
    targets = spec.fixed.get("lora.targets")
    if block_modules is not None and isinstance(targets, list):
        for target in targets:
            if not any(name == target or name.endswith("." + target) for name in block_modules):
                leaves = sorted({name.rsplit(".", 1)[-1] for name in block_modules})
                issues.append(SpecIssue("fixed.lora.targets", f"{target!r} matches no module of a block; "
                                        f"modules there are: {', '.join(leaves)}"))
    if issues:
        raise SpecError(issues, source)
