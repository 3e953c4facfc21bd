"""Chart files: a self-contained HTML page of one or more Vega-Lite charts (inline Vega, no
network), and the PNG / SVG renderings (vl-convert).

A page carries one copy of the Vega scripts, however many charts it holds, gzip-compressed
(0.3 MB instead of 0.9 MB) and unpacked by the browser (``DecompressionStream``: Chrome and
Edge 80+, Firefox 113+, Safari 16.4+). The Snakemake report embeds every page base64-encoded
in its own HTML file, so what a page weighs counts a third more there.
"""

from __future__ import annotations

import base64
import gzip
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
    html_path: Path | str | None,
    png_path: Path | str | None = None,
    svg_path: Path | str | None = None,
    *,
    caption_html: str = "",
) -> None:
    """Save ``chart`` as self-contained HTML (works offline), PNG and SVG, each atomically
    (each only where its path is given).

    The HTML carries the Vega, Vega-Lite and vega-embed JavaScript (via vl-convert, packed),
    so it opens without network access; RuntimeError is raised if it would still load a remote
    script. Text from the data (experiment names, errors) is escaped (see
    :func:`charts_page_html`). The PNG is rendered by vl-convert at twice the nominal size;
    ``caption_html`` (trusted HTML) is shown under the chart.
    """
    if html_path is not None:
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
    """Vega, Vega-Lite and vega-embed as one script (no network), built once."""
    return vlc.javascript_bundle()


@cache
def vega_bundle_gzip_base64() -> str:
    """:func:`_vega_bundle`, gzip-compressed and base64-encoded: the text a page carries.

    ``mtime=0`` keeps the bytes the same from build to build, so an unchanged page is
    byte-identical (and base64 has no character that could end a script element)."""
    bundle = _vega_bundle()
    # The page is checked for remote scripts (save_chart); the packed bundle cannot be.
    if _REMOTE_SCRIPT.search(bundle):
        raise RuntimeError("vl-convert JavaScript bundle loads a remote script")
    packed = gzip.compress(bundle.encode("utf-8"), compresslevel=9, mtime=0)
    return base64.b64encode(packed).decode("ascii")


#: Unpacks the bundle and runs it (it defines vegaEmbed, vegaLite and vega globally); the
#: promise it returns settles when the charts can be drawn.
_LOADER = """function loadVega() {
  if (typeof DecompressionStream === "undefined") {
    return Promise.reject(new Error("this browser cannot unpack the chart scripts " +
      "(no DecompressionStream: needs Chrome or Edge 80+, Firefox 113+, Safari 16.4+)"));
  }
  var bytes = Uint8Array.from(atob(VEGA_BUNDLE_GZIP), function (c) { return c.charCodeAt(0); });
  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Response(stream).text().then(function (code) {
    var script = document.createElement("script");
    script.textContent = code;
    document.head.appendChild(script);
  });
}"""


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
    head: str = "",
) -> str:
    """A self-contained HTML page with several charts sharing one inline copy of Vega.

    ``sections`` are ``(heading, caption_html, chart)``; the heading and ``title`` are plain
    text (escaped here), captions, ``intro_html``, ``extra_html`` and ``head`` are trusted
    HTML built by the caller with escaped data. Chart specs are embedded with
    :func:`script_json`, so no data value can break out of its script element. A chart that
    fails to render shows an error message in the page (and sets ``data-error`` on its
    element).

    The ``n``-th chart is drawn into ``<div id="chart<n>">`` (``n`` counts sections, those
    without a chart too); once drawn, its element gets ``data-rendered="1"``, its Vega view
    is ``chartViews["chart<n>"]``, and a ``chart-rendered`` event (``detail``: the element
    id) is dispatched on ``document``, so a script in ``extra_html`` can follow the chart's
    parameters (``view.addSignalListener``).
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
        f"  vegaEmbed('#{element}', {script_json(spec)}, embedOptions)"
        f".then(function (result) {{ rendered('{element}', result.view); }})"
        f".catch(function (e) {{ showError('{element}', e); }});"
        for element, spec in specs
    )
    elements = script_json([element for element, _ in specs])
    body = f"""{intro_html}
{"".join(blocks)}
{extra_html}
<script>
var VEGA_BUNDLE_GZIP = "{vega_bundle_gzip_base64()}";
{_LOADER}
var embedOptions = {script_json(EMBED_OPTIONS)};
var chartViews = {{}};
function rendered(element, view) {{
  chartViews[element] = view;
  document.getElementById(element).dataset.rendered = "1";
  document.dispatchEvent(new CustomEvent("chart-rendered", {{detail: element}}));
}}
function showError(element, error) {{
  var node = document.getElementById(element);
  node.dataset.error = String(error);
  node.className = "chart chart-error";
  node.textContent = "Chart failed to render: " + error;
}}
loadVega().then(function () {{
{calls}
}}).catch(function (e) {{
  {elements}.forEach(function (element) {{ showError(element, e); }});
}});
</script>"""
    return page_html(title, body, head=head)
