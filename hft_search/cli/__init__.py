"""``hft-search``: the command line. It parses arguments and calls the public API, nothing more.

Every error raised on purpose (:class:`~hft_search.exceptions.HFTSearchError`) is printed as one clear
message, with no traceback; ``--verbose`` shows the traceback for bug reports.

Exit status (also in ``hft-search --help``):

* 0: done;
* 1 (:data:`EXIT_FAILED`): the work ran and failed: a worker stopped after ``study.max_consecutive_failures``
  failing trials in a row, a study ended with no completed trial because its trials failed, ``verify``'s
  re-run disagrees with the record, ``launch`` ended short of ``n_trials``;
* 2 (:data:`EXIT_USAGE`): bad input or a place that cannot be used (a spec, data, a path, a storage, a full
  or read-only disk), one ``error:`` line; nothing was created, lost or half-written;
* 3 (:data:`EXIT_SHORT`): ``run``/``worker`` ended with fewer than ``n_trials`` counted trials;
* 130: interrupted (Ctrl-C).

The package keeps one concern per private module: :mod:`._parser` (the arguments), :mod:`._types` (argument
types), :mod:`._study` (run, worker, launch, status, best, confirm, requeue), :mod:`._model` (export, train,
verify, predict), :mod:`._inspect` (validate, report, dashboard), :mod:`._exit` (errors to exit codes) and
:mod:`._main` (logging and dispatch). Importing it stays cheap: the commands import the heavy stack when run.
"""

from hft_search.cli._exit import EXIT_FAILED, EXIT_SHORT, EXIT_USAGE
from hft_search.cli._main import main
from hft_search.cli._parser import Handler, build_parser

__all__ = ["EXIT_FAILED", "EXIT_SHORT", "EXIT_USAGE", "Handler", "build_parser", "main"]
