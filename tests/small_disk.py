"""Run ``hft-search`` commands with their output folder on a real read-only or full file system.

Why a separate process: mounting needs a private mount namespace. ``unshare --map-root-user --mount`` gives
one to an unprivileged user (and to root, whom file permissions would not stop: a read-only *mount* does).
Each case mounts a small ``tmpfs`` at its folder (read-only, or filled until the device reports ENOSPC),
runs the command in this process through :func:`hft_search.cli.main`, and reports the exit status, the
``error:`` lines and what the folder holds afterwards, as one JSON line per case. The mounts vanish with the
namespace.

Usage: ``unshare -rm python tests/small_disk.py CASES.json`` where each case is
``{"folder": PATH, "mode": "read_only" | "full", "size": "64k", "args": [...]}``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path


def _mount(folder: Path, mode: str, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    if mode == "read_only":
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        return
    with contextlib.suppress(OSError), (folder / "filler").open("wb") as filler:  # until ENOSPC
        while True:
            filler.write(b"\0" * 4096)
            filler.flush()


def run_case(case: dict) -> dict:
    from hft_search.cli import main

    folder = Path(case["folder"])
    _mount(folder, case["mode"], case.get("size", "64k"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(case["args"])
    listing = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != "filler")
    subprocess.run(["umount", str(folder)], check=True)
    return {"code": code, "errors": [line for line in err.getvalue().splitlines() if line.startswith("error:")],
            "traceback": "Traceback" in err.getvalue(), "listing": listing}


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for case in json.loads(Path(sys.argv[1]).read_text()):
        print(json.dumps(run_case(case)), flush=True)
