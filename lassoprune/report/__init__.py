"""Reports of pruning runs: ``summary.json`` -> ``report.md``, ``report.json`` and PNG figures.

- :func:`load_summaries`: read ``RUN/summary.json`` files (run directories or the files).
- :func:`check_summary`: validate a summary against the schema (documented in
  :mod:`lassoprune.report.summary`); errors name the key and the file.
- :func:`render_report`: write the report of one or several runs, returns :class:`ReportFiles`.
- :func:`derived_numbers`: MACs / params ratios, accuracy drops and speed-up of a run.
- :func:`tree_linkage`: a class tree (sTLP-IB groups) as a scipy linkage for a dendrogram.
"""

from lassoprune.report.render import ReportFiles, render_report, report_dict
from lassoprune.report.structure import tree_linkage
from lassoprune.report.summary import SCHEMA_VERSION, SUMMARY_FILE, check_summary, derived_numbers, load_summaries

__all__ = [
    "ReportFiles",
    "SCHEMA_VERSION",
    "SUMMARY_FILE",
    "check_summary",
    "derived_numbers",
    "load_summaries",
    "render_report",
    "report_dict",
    "tree_linkage",
]
