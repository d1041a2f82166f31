"""Accuracy benchmark report: summaries, tables, plots and targets.

Everything here reads the JSON store only (never trains), so the markdown
section can be regenerated with `python benchmarks/accuracy.py
--report-only`. One module a section: `main_tables` (the five main
settings), `search`, `sweep` (teacher scale), `cross_check` (the other
backends), `pipeline` (`--profile pipeline`) and `figures`; `summary` reads
the store; `document` assembles the markdown.
"""

from accuracy_report.document import write_report
from accuracy_report.main_tables import selection_quality
from accuracy_report.pipeline import pipeline_section
from accuracy_report.pipeline import pipeline_targets
from accuracy_report.search import search_quality
from accuracy_report.summary import run_parts
from accuracy_report.summary import summarize
from accuracy_report.sweep import sweep_section

__all__ = [
    "pipeline_section",
    "pipeline_targets",
    "run_parts",
    "search_quality",
    "selection_quality",
    "summarize",
    "sweep_section",
    "write_report",
]
