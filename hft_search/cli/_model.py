"""The commands that leave the search: export a trial, train it for good, verify it, predict with it.

Together because they form one path from a stored trial to a deployed model; each imports its stack lazily.
"""

from __future__ import annotations

import argparse
import json
import sys


def cmd_export(args: argparse.Namespace) -> int:
    """Write a trial as a runnable spec and print its score, confirmation or lift, and warnings."""
    from hft_search import export_best
    from hft_search.baseline import Lift
    from hft_search.summary import value_with_std

    spec = export_best(args.study, args.storage, args.output, trial=args.trial, fmt=args.format, force=args.force)
    prov = spec.provenance
    print(f"wrote {args.output}: trial {prov['trial']} of study {prov['study']!r}, "
          f"{prov['metric']} {value_with_std(prov['value'], prov.get('std'))}")
    confirmed = prov.get("confirmation") or {}
    if confirmed.get("confirmed_value") is not None:
        print(f"confirmed on fresh folds: {prov['metric']} "
              f"{value_with_std(confirmed['confirmed_value'], confirmed['confirmed_std'])} (the search's CV "
              f"{prov['value']:.4f}: winner's curse {confirmed['winners_curse']:+.4f})")
    elif prov.get("lift"):
        print(f"lift over the tuned baseline (trial {prov['baseline']['trial']}) on the search's folds: "
              f"{Lift(**prov['lift']).text()}")
    if prov.get("lift_warning"):
        print(f"warning: {prov['lift_warning']}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Fit an exported spec on all training data and print what was saved and how it scored."""
    from hft_search import describe_trained, load_spec, train_final

    trained = train_final(load_spec(args.spec), args.output, quantize=args.quantize, int8_scheme=args.int8_scheme,
                          ensemble_folds=args.ensemble_folds, tune_threshold_for=args.tune_threshold,
                          force=args.force, storage=args.storage, spec_file=args.spec)
    print(describe_trained(trained))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-run the recorded folds; exit 1 when the scores disagree with the record."""
    from hft_search.export import load_exported, verify_spec

    verification = verify_spec(load_exported(args.spec), folds=args.folds)
    print(verification.table())
    return 0 if verification.agrees else 1


def cmd_predict(args: argparse.Namespace) -> int:
    """Write predictions to a file, or as JSON lines on stdout when no output is given."""
    from hft_search import predict_file

    rows = predict_file(args.model, args.input, args.output, int8=args.int8, batch_size=args.batch_size,
                        force=args.force)
    if args.output is None:
        sys.stdout.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        print(f"wrote {len(rows)} predictions to {args.output}", file=sys.stderr)
    return 0
