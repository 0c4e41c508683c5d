"""Every escape of user-supplied text in reports and the dashboard, in one place.

Study names, parameter values and user attributes are user-controlled, and they reach three different
readers, each with its own markup: Plotly (which reads ``<b>``, ``<br>``, ``<a href>`` in any string it draws),
the HTML of the report page and the dashboard shell, and the JSON embedded in a ``<script>`` element or served
by the dashboard. One function per reader, so a reviewer checks escaping here and only here, and every other
module of :mod:`hft_search.reports` calls these instead of :mod:`html` or string replacements of its own.
"""

from __future__ import annotations

import html
import json
from typing import Any

from plotly.utils import PlotlyJSONEncoder


def plotly_text(value: object) -> str:
    """``value`` as a string Plotly draws literally: ``&``, ``<`` and ``>`` escaped.

    Plotly decodes ``&amp;``, ``&lt;`` and ``&gt;`` but not ``&quot;``, so quotes are left as they are (escaped,
    a quote would show as ``&quot;``).
    """
    return html.escape(str(value), quote=False)


def html_text(value: str) -> str:
    """``value`` safe as the text of an HTML element or a double-quoted attribute: ``&<>"'`` escaped.

    Quotes are escaped too, because the same helper writes attribute values (the page's Content-Security-Policy).
    """
    return html.escape(value)


def script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: ``<``, ``>`` and ``&`` written as ``\\u`` escapes.

    So no string in it can close the element (``</script>``) or open a comment, whichever page embeds it; the
    dashboard serves the same bytes as ``application/json``. NaN and infinity become ``null`` (Plotly's
    encoder), since ``JSON.parse`` rejects them.
    """
    body = json.dumps(value, cls=PlotlyJSONEncoder, separators=(",", ":"))
    return body.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
