"""The entry point: parse, set up logging, run the command (``hft_search.cli:main`` in pyproject.toml)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from hft_search.cli._exit import run_handler
from hft_search.cli._parser import build_parser


def configure_logging(verbose: bool) -> None:
    """INFO (DEBUG with ``-v``) for our messages; the chatter of libraries that says nothing about the run
    is quietened, and storage passwords are masked in every record."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("urllib3", "filelock", "datasets", "fsspec", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        # transformers imports torchao (when installed) as soon as a model is built, quantizing or not; its
        # warnings about kernels this machine cannot load, and torch's about the enums it registers, say
        # nothing about the user's run. ``--quantize`` imports it again on purpose; -v shows them.
        for noisy in ("torchao", "torch.utils._pytree"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    from hft_search.storage import install_log_masking

    install_log_masking()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hft-search`` with ``argv`` (default: the process's arguments); returns the exit status."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    return run_handler(args)
