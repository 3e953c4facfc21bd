"""Chart files: a self-contained HTML page of one or more Vega-Lite charts (inline Vega, no
network), and the PNG / SVG renderings (vl-convert)."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import altair as alt
import vl_convert as vlc

from peftbench.core.io import atomic_path
from peftbench.report.html import page_html, script_json

# A remote <script src="http..."> would make the "offline" HTML need the network.
_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.IGNORECASE)


def save_chart(
    chart: alt.TopLevelMixin,
    html_path: Path | str,
    png_path: Path | str | None = None,
    svg_path: Path | str | None = None,
    *,
    caption_html: str = "",
) -> None:
    """Save ``chart`` as self-contained HTML (works offline), PNG and SVG, each atomically.

    The HTML inlines the Vega, Vega-Lite and vega-embed JavaScript (via vl-convert), so it
    opens without network access; RuntimeError is raised if it would still load a remote
    script. Text from the data (experiment names, errors) is escaped (see
    :func:`charts_page_html`). The PNG is rendered by vl-convert at twice the nominal size;
    ``caption_html`` (trusted HTML) is shown under the chart.
    """
    with atomic_path(html_path) as tmp:
        page = charts_page_html([("", caption_html, chart)], title=_chart_title(chart))
        if _REMOTE_SCRIPT.search(page):
            raise RuntimeError(f"{html_path}: chart HTML references a remote script")
        tmp.write_text(page, encoding="utf-8")
    if png_path is not None:
        with atomic_path(png_path) as tmp:
            chart.save(tmp, format="png", scale_factor=2)
    if svg_path is not None:
        with atomic_path(svg_path) as tmp:
            chart.save(tmp, format="svg")


def _chart_title(chart: alt.TopLevelMixin) -> str:
    """Plain-text title of a chart (for the HTML page title), or "Chart"."""
    title = chart.to_dict().get("title")
    if isinstance(title, dict):
        title = title.get("text")
    if isinstance(title, list):
        title = " ".join(map(str, title))
    return str(title) if title else "Chart"


@cache
def _vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one inline script (no network), built once."""
    bundle = vlc.javascript_bundle()
    # Inlined into a <script> element, the bundle must not contain its closing tag.
    if re.search(r"</script", bundle, re.IGNORECASE):
        raise RuntimeError("vl-convert JavaScript bundle contains '</script'")
    return bundle


#: actions menu without the links that need the network (Vega editor).
EMBED_OPTIONS: dict[str, Any] = {
    "renderer": "svg",
    "actions": {"export": True, "source": True, "compiled": False, "editor": False},
}


def charts_page_html(
    sections: Sequence[tuple[str, str, alt.TopLevelMixin | None]],
    title: str,
    *,
    intro_html: str = "",
    extra_html: str = "",
) -> str:
    """A self-contained HTML page with several charts sharing one inline copy of Vega.

    ``sections`` are ``(heading, caption_html, chart)``; the heading and ``title`` are plain
    text (escaped here), captions and ``intro_html`` / ``extra_html`` are trusted HTML built by
    the caller with escaped data. Chart specs are embedded with :func:`script_json`, so no
    data value can break out of its script element. A chart that fails to render shows an
    error message in the page (and sets ``data-error`` on its element).
    """
    blocks = []
    specs = []
    for number, (heading, caption, chart) in enumerate(sections):
        if heading:
            blocks.append(f"<h2>{html.escape(heading)}</h2>")
        if chart is not None:
            blocks.append(f'<div class="chart" id="chart{number}"></div>')
            specs.append((f"chart{number}", chart.to_dict()))
        if caption:
            blocks.append(f'<div class="caption">{caption}</div>')
    calls = "\n".join(
        f"vegaEmbed('#{element}', {script_json(spec)}, embedOptions)"
        f".then(function () {{ document.getElementById('{element}').dataset.rendered = '1'; }})"
        f".catch(function (e) {{ showError('{element}', e); }});"
        for element, spec in specs
    )
    body = f"""{intro_html}
{"".join(blocks)}
{extra_html}
<script>
var embedOptions = {script_json(EMBED_OPTIONS)};
function showError(element, error) {{
  var node = document.getElementById(element);
  node.dataset.error = String(error);
  node.className = "chart chart-error";
  node.textContent = "Chart failed to render: " + error;
}}
{calls}
</script>"""
    return page_html(title, body, head=f"<script>{_vega_bundle()}</script>")
