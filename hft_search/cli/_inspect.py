"""The commands that only look: validate a spec, write a report, serve the live dashboard.

Together because none of them trains or changes a study; the reports never import the training stack.
"""

from __future__ import annotations

import argparse
import sys

import yaml


def cmd_validate(args: argparse.Namespace) -> int:
    """Print the resolved spec (and the model it names), or fail with every problem found."""
    from hft_search import validate

    spec = validate(args.spec, check_model=not args.no_model_check)
    if not args.no_model_check:
        from hft_search.models import model_info

        print(f"# model: {model_info(spec.model.name, spec.model.revision).describe()}")
    body = spec.model_dump(mode="json", by_alias=True, exclude_none=True)  # passwords masked by their type
    print(yaml.safe_dump(body, sort_keys=False, allow_unicode=True), end="")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the study's self-contained HTML report and print where."""
    from hft_search.reports import write_report
    from hft_search.storage import resolve_storage_url

    path = write_report(args.study, resolve_storage_url(args.storage, None), args.output)
    print(f"report written to {path}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the live dashboard until Ctrl-C, which ends it cleanly (exit 0)."""
    from hft_search.reports import make_server
    from hft_search.storage import resolve_storage_url

    server = make_server(resolve_storage_url(args.storage, None), host=args.host, port=args.port)
    try:
        print(f"dashboard on {server.url} (Ctrl-C to stop)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
