"""The report's reference page: every metric and its unit, how the noise-aware frontier is
computed, the method families, from ``rules/captions/reference.rst``.

That text used to be the report's workflow description, but Snakemake's report centres its
start page vertically, so a description taller than the window loses its top (the links to the
decision pages) out of reach. It is reStructuredText, rendered with docutils (which Snakemake
itself renders captions with), so it reads the same as the captions.
"""

from __future__ import annotations

from docutils.core import publish_parts

from peftbench.report.html import page_html

#: No file inclusion and no raw HTML: the page is built from the text alone.
_SETTINGS = {
    "file_insertion_enabled": False,
    "raw_enabled": False,
    "report_level": 3,  # warnings and errors go to the job's log, not into the page
    "halt_level": 3,  # a syntax error fails the job instead of printing a broken page
}


def reference_page(rst: str) -> str:
    """The reference page (a complete HTML document) of the reStructuredText ``rst``, titled
    by its document title."""
    parts = publish_parts(rst, writer_name="html5", settings_overrides=_SETTINGS)
    return page_html(parts["title"] or "Reference", parts["body"])
