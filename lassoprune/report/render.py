"""Turn run summaries into a report directory: ``report.md``, ``report.json`` and PNG figures."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lassoprune.errors import LassopruneError
from lassoprune.io import atomic_write_json, atomic_write_text
from lassoprune.report.markdown import render_markdown
from lassoprune.report.plots import plot_channels, plot_class_structure, plot_per_class, plot_tradeoff, save_png
from lassoprune.report.summary import check_summary, derived_numbers, sort_by_macs

REPORT_SCHEMA = 1
MARKDOWN_FILE = "report.md"
JSON_FILE = "report.json"
FIGURES: dict[str, Callable[[Sequence[Mapping[str, Any]]], Figure | None]] = {
    "channels_per_layer": plot_channels,
    "per_class_accuracy": plot_per_class,
    "class_structure": plot_class_structure,  # None when no run has a tree or a graph
    "tradeoff": plot_tradeoff,
}


@dataclass(frozen=True)
class ReportFiles:
    """The files :func:`render_report` wrote.

    Attributes:
        markdown: ``report.md``.
        json: ``report.json``.
        images: figure key (``channels_per_layer``, ``per_class_accuracy``,
            ``class_structure``, ``tradeoff``) -> PNG path; ``class_structure``
            is absent when no run has a class tree or graph.
    """

    markdown: Path
    json: Path
    images: dict[str, Path] = field(default_factory=dict)

    def paths(self) -> list[Path]:
        """Every written file, the markdown first."""
        return [self.markdown, self.json, *self.images.values()]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``{"markdown": str, "json": str, "images": {key: str}}``."""
        return {"markdown": str(self.markdown), "json": str(self.json),
                "images": {key: str(path) for key, path in self.images.items()}}


def render_report(summaries: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str]) -> ReportFiles:
    """Write the report of one or several run summaries into ``out_dir`` (created if needed).

    Every file is written atomically. With several runs, each figure has one
    panel per run (the trade-off plot one point per run) and the markdown
    starts with a comparison table sorted by MACs ratio.

    Raises:
        LassopruneError: no summary, or a summary that breaks the schema
            (see :func:`lassoprune.report.check_summary`).
    """
    if not summaries:
        raise LassopruneError("no run summary to report on")
    checked = [check_summary(s, source=f"summary {i + 1} of {len(summaries)}") for i, s in enumerate(summaries)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = _write_figures(checked, out)
    relative = {key: path.name for key, path in images.items()}
    markdown, json_file = out / MARKDOWN_FILE, out / JSON_FILE
    atomic_write_json(json_file, report_dict(checked, relative))
    atomic_write_text(markdown, render_markdown(checked, relative))
    return ReportFiles(markdown=markdown, json=json_file, images=images)


def _write_figures(summaries: Sequence[Mapping[str, Any]], out: Path) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for key, plot in FIGURES.items():
        fig = plot(summaries)
        if fig is not None:
            images[key] = out / f"{key}.png"
            save_png(fig, images[key])
    return images


def report_dict(summaries: Sequence[Mapping[str, Any]], images: Mapping[str, str]) -> dict[str, Any]:
    """The content of ``report.json``.

    ``{"report_schema": 1, "runs": [{"name", "derived", "summary"}, ...],
    "by_macs_ratio": [run names, fewest MACs kept first], "images": {key: relative path}}``;
    ``derived`` is :func:`lassoprune.report.derived_numbers` of the run.
    """
    return {
        "report_schema": REPORT_SCHEMA,
        "runs": [{"name": s["name"], "derived": derived_numbers(s), "summary": dict(s)} for s in summaries],
        "by_macs_ratio": [summaries[i]["name"] for i in sort_by_macs(summaries)],
        "images": dict(images),
    }
