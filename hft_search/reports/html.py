"""The report page: one self-contained HTML file that draws a study's figures offline.

The page embeds plotly.js once and the figures as one JSON document, and draws them with a few lines of
JavaScript (:data:`RENDER_JS`) that the live dashboard shares, so the report and the dashboard show the same
thing. Nothing is loaded from the network.

User-supplied strings (the study name, parameter values, user attributes) never become markup here: the page's
own text is escaped with :func:`~hft_search.reports._escape.html_text`, the JSON is escaped so that no
``</script>`` can end its element (:func:`~hft_search.reports._escape.script_json`; both in the one module where
reports escape), the scripts set text with ``textContent`` only, and a Content-Security-Policy allows no
script element but the page's own two (by hash), so even a mistake elsewhere could not run an injected one.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import optuna
import plotly.offline

from hft_search.files import check_output, check_output_folder, write_text_atomic
from hft_search.inputs import storage_inputs
from hft_search.reports._escape import html_text, script_json
from hft_search.reports.figures import Figure, report_figures
from hft_search.reports.studies import revision
from hft_search.storage import load_named_study, make_storage, mask_url

REPORTS_DIR = Path("dashboards")
"""Where reports are written when no folder is given: ``dashboards/<study>/index.html``."""

REPORT_FILE = "index.html"

RENDER_JS = """\
"use strict";
const PLOTLY_CONFIG = {displaylogo: false, responsive: true};
function renderFigures(payload, main) {
  const keep = new Set();
  for (const item of payload.figures) {
    const id = "fig-" + item.id;
    keep.add(id);
    let div = document.getElementById(id);
    if (div === null) {
      div = document.createElement("div");
      div.id = id;
      div.className = "figure " + (item.wide ? "wide" : "");
      main.appendChild(div);
    }
    // Responsive Plotly fills its container: the container must have the figure's height.
    div.style.height = item.figure.layout.height + "px";
    Plotly.react(div, item.figure.data || [], item.figure.layout, PLOTLY_CONFIG);
  }
  for (const div of Array.from(main.children)) {
    if (!keep.has(div.id)) { Plotly.purge(div); div.remove(); }
  }
}
"""
"""Draws (or redraws in place) a :func:`study_payload` into an element; shared with the dashboard."""

REPORT_JS = """\
const payload = JSON.parse(document.getElementById("payload").textContent);
renderFigures(payload, document.getElementById("figures"));
"""

FIGURE_HEIGHT_PX = 460

EVAL_FOR_WEBGL = "'unsafe-eval'"
"""CSP source both pages need: plotly.js draws parallel coordinates with regl, which compiles its WebGL calls
with ``Function``; without it the figure shows "WebGL is not supported". Inline scripts stay forbidden."""

WIDE_FIGURES = frozenset({"trials", "parallel", "best"})
"""Figures drawn across the whole page width instead of in the two-column grid."""

STYLE = """\
body { font-family: system-ui, sans-serif; margin: 0; color: #1f2430; background: #f6f7fb; }
header { padding: 16px 24px; background: #1f2a44; color: #fff; }
header h1 { margin: 0 0 4px 0; font-size: 1.4em; overflow-wrap: anywhere; }
header p { margin: 0; opacity: 0.85; overflow-wrap: anywhere; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 16px; padding: 16px; }
.figure { background: #fff; border-radius: 6px; box-shadow: 0 1px 3px rgba(0,0,0,.12); overflow: hidden; }
.figure.wide { grid-column: 1 / -1; }
nav ul { list-style: none; margin: 0; padding: 8px 24px; display: flex; flex-wrap: wrap; gap: 8px 24px; }
nav a[aria-current] { font-weight: bold; }
#status { padding: 0 24px; color: #555; }
"""


def study_payload(study: optuna.Study) -> dict[str, Any]:
    """What a page draws for one study: its name, trial count, revision and every figure as Plotly JSON."""
    trials = study.get_trials(deepcopy=False)
    figures = report_figures(study)
    return {
        "study": study.study_name,
        "trials": len(trials),
        "revision": revision(trials, study.user_attrs),
        "figures": [
            {"id": key, "wide": key in WIDE_FIGURES, "figure": _with_height(figure).to_plotly_json()}
            for key, figure in figures.items()
        ],
    }


def _with_height(figure: Figure) -> Figure:
    """``figure`` with :data:`FIGURE_HEIGHT_PX` where it sets no height.

    Every figure has a height, because the page gives each container its figure's height: Plotly's responsive
    mode sizes a figure to its container, and a container sized by its content would have none.
    """
    if figure.layout.height is None:
        figure.update_layout(height=FIGURE_HEIGHT_PX)
    return figure


@functools.cache
def plotly_js() -> str:
    """The plotly.js bundle shipped with the ``plotly`` package (read once per process)."""
    return plotly.offline.get_plotlyjs()


def csp_hash(script: str) -> str:
    """The Content-Security-Policy source that allows exactly this inline script."""
    digest = hashlib.sha256(script.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def render_report(study: optuna.Study, storage_label: str) -> str:
    """The report page of ``study`` as one HTML string; ``storage_label`` is the masked storage URL."""
    library, code = plotly_js(), RENDER_JS + REPORT_JS
    policy = (
        f"default-src 'none'; script-src {csp_hash(library)} {csp_hash(code)} {EVAL_FOR_WEBGL}; "
        "style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:"
    )
    name = html_text(study.study_name)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{html_text(policy)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{name} · hft-search report</title>
<style>{STYLE}</style>
<script>{library}</script>
</head>
<body>
<header><h1 id="title">{name}</h1><p id="summary">{html_text(_summary(study, storage_label))}</p></header>
<main id="figures"></main>
<script type="application/json" id="payload">{script_json(study_payload(study))}</script>
<script>{code}</script>
</body>
</html>
"""


def _summary(study: optuna.Study, storage_label: str) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(trial.state == state for trial in trials) for state in optuna.trial.TrialState}
    states = ", ".join(f"{count} {state.name.lower()}" for state, count in counts.items() if count)
    return f"{len(trials)} trials ({states or 'none yet'}) · storage {storage_label}"


def default_report_dir(study_name: str) -> Path:
    """``dashboards/<study name made safe as a folder name>``.

    A name that had to be changed (``../../evil``, ``a/b``) gets a short hash of the original appended, so two
    different studies never share a folder (``evil`` and ``../../evil`` would otherwise both be ``evil``).
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study_name).strip("._") or "study"
    if safe != study_name:
        safe += "-" + hashlib.sha256(study_name.encode()).hexdigest()[:8]
    return REPORTS_DIR / safe


def write_report(study_name: str, storage: str, out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write the self-contained report of study ``study_name`` and return the path of its ``index.html``.

    Args:
        study_name: the study to report on.
        storage: its storage URL (``sqlite:///...``, ``postgresql+psycopg://...``, ``journal:PATH``).
        out_dir: the folder to write ``index.html`` into; ``dashboards/<study_name>`` when None.

    Raises:
        StorageError: the storage cannot be opened or holds no such study (the message lists those it holds).
        OutputError: the folder is a link, the page would replace the storage, or it cannot be written.
    """
    folder = check_output_folder(out_dir if out_dir is not None else default_report_dir(study_name))
    # a page is regenerated, but only as a regular file, and never over the storage it shows
    path = check_output(folder / REPORT_FILE, force=True, inputs=storage_inputs(storage))
    label = mask_url(storage)
    study = load_named_study(study_name, make_storage(storage, must_exist=True), label)
    write_text_atomic(path, render_report(study, label))
    return path
