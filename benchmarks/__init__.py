"""The benchmark suite of hft_search: every figure next to its baseline, measured in the same run.

Run it with ``python -m benchmarks [NAMES...] [--quick]`` (see :mod:`benchmarks.__main__`). Each benchmark
writes ``benchmarks/results/<name>.json`` (machine facts, sizes, ``targets``), and the runner turns the
targets into the performance table of the README.

The benchmarks run offline: Hugging Face's hub is switched off before anything imports ``transformers``.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
