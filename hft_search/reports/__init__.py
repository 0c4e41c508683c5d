"""Plotly reports of a study: a self-contained HTML page (:func:`write_report`) and a live dashboard
(:func:`serve_dashboard`). Both read a study through Optuna's public API only; see ``docs/user_attrs.md``.
"""

from hft_search.reports.html import write_report
from hft_search.reports.server import make_server, serve_dashboard

__all__ = ["make_server", "serve_dashboard", "write_report"]
