"""One self-contained HTML page per run or window: `write_report(sources, out)`.

From datasets the engine wrote (``_SUCCESS``, ``_manifest.json``, the tables and ``_rejects``) and monitoring
outputs (``statistics.json``, ``constraints.json``, ``constraint_violations.json``, model-quality metrics):
capture volume, rejects, payload columns, labels, drift, model quality and provenance, as Vega-Lite charts
(drawn offline from the page itself) each with the table of its numbers. Needs the ``report`` extra.
"""

from engine.html.build import Report, ReportOptions, build_report, write_report

__all__ = ["Report", "ReportOptions", "build_report", "write_report"]
