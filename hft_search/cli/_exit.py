"""Errors to exit codes: one ``error:`` line per failure raised on purpose, and what Ctrl-C leaves behind.

One place, so that every command reports failures the same way and scripts can rely on the status
(see the package docstring for the codes).
"""

from __future__ import annotations

import argparse
import sys

EXIT_FAILED = 1
"""The work ran and failed (see the package docstring); the same as ``ConsecutiveFailures.exit_code``."""
EXIT_USAGE = 2
"""Bad input or an unusable place (see the package docstring): one ``error:`` line, nothing written."""
EXIT_SHORT = 3
"""``run``/``worker`` ended with fewer than ``n_trials`` counted trials (not because of ``study.timeout``)."""

INTERRUPTED = {
    command: "finished trials are stored; run the same command again to continue"
    for command in ("run", "worker", "launch")
}
"""What Ctrl-C leaves behind, by command (others write their output atomically: nothing)."""


def run_handler(args: argparse.Namespace) -> int:
    """Run the parsed command and turn the failures users cause or meet into an exit status.

    ``--verbose`` re-raises instead, so that a bug report carries the traceback.
    """
    from optuna.exceptions import StorageInternalError

    from hft_search.exceptions import HFTSearchError
    from hft_search.storage import storage_failure

    try:
        return args.handler(args)
    except HFTSearchError as error:
        if args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", EXIT_USAGE)  # 1 for a run that failed (ConsecutiveFailures)
    except KeyboardInterrupt:
        print(f"interrupted: {INTERRUPTED.get(args.command, 'nothing was written')}", file=sys.stderr)
        return 130
    except StorageInternalError as error:  # a storage that failed after it opened (the opening checks it)
        if args.verbose:
            raise
        print(f"error: {storage_failure(error, getattr(args, 'storage', None))}", file=sys.stderr)
        return EXIT_USAGE
