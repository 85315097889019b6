"""report.html: the report model and the run's per-question rows as one self-contained page.

`questions` builds the per-question view model from a run folder, `render` turns a Report and
those rows into the page (pure), `write` writes it next to report.md.
"""

from qatcmp.htmlview.write import REPORT_HTML, write_html_report

__all__ = ["REPORT_HTML", "write_html_report"]
