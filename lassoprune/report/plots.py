"""The report's figures, drawn with matplotlib's object API on the Agg canvas (never pyplot, never a display).

Each ``plot_*`` function takes checked summaries (:func:`lassoprune.report.check_summary`)
and returns a :class:`matplotlib.figure.Figure`; :func:`save_png` writes one atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from lassoprune.io import atomic_path
from lassoprune.report.structure import circle_positions, class_linkage, dendrogram_layout
from lassoprune.report.summary import macs_ratio, metric_stages, target_text

Summary = Mapping[str, Any]

DPI = 110
STAGE_COLOURS = {"baseline": "#7f7f7f", "unreconstructed": "#d62728", "pruned": "#ff7f0e", "final": "#1f77b4"}
KEPT, KEPT_ELTWISE, TOTAL = "#1f77b4", "#d62728", "#d9d9d9"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(min(width, 30.0), min(height, 40.0)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Write ``fig`` as a PNG atomically (temporary file in the same directory, then rename)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def _run_title(summary: Summary) -> str:
    return f"{summary['name']}: {summary['method']}, target {target_text(summary['target'])}"


def plot_channels(summaries: Sequence[Summary]) -> Figure:
    """Channels per group before (grey) and after pruning (blue; red for eltwise groups), one panel per run."""
    width = max(len(s["groups"]) for s in summaries) * 0.22 + 2.5
    return _stacked_panels(summaries, width, 3.2, _channel_panel)


def _stacked_panels(summaries: Sequence[Summary], width: float, panel_height: float,
                    draw: Callable[[Any, Summary], None]) -> Figure:
    """One figure, one panel per run stacked vertically, each drawn by ``draw(ax, summary)``."""
    fig = _figure(max(width, 7.0), panel_height * len(summaries) + 0.6)
    for ax, summary in zip(fig.subplots(len(summaries), 1, squeeze=False)[:, 0], summaries):
        draw(ax, summary)
    return fig


def _channel_panel(ax: Any, summary: Summary) -> None:
    groups = summary["groups"]
    x = np.arange(len(groups))
    total = [g["total"] for g in groups]
    kept = [g["kept"] for g in groups]
    eltwise = [g["eltwise"] for g in groups]
    ax.bar(x, total, width=0.8, color=TOTAL, edgecolor="#999999", linewidth=0.4)
    ax.bar(x, kept, width=0.55, color=[KEPT_ELTWISE if e else KEPT for e in eltwise])
    ax.set_xticks(x, [g["id"] for g in groups], rotation=90, fontsize=6)
    for label, is_eltwise in zip(ax.get_xticklabels(), eltwise):
        label.set_color(KEPT_ELTWISE if is_eltwise else "black")
    ax.set_xlim(-0.7, len(groups) - 0.3)
    ax.set_ylabel("channels")
    ax.set_title(f"{_run_title(summary)}: kept {sum(kept)} of {sum(total)} channels", fontsize=9)
    ax.legend(handles=[Patch(color=TOTAL, label="before"), Patch(color=KEPT, label="after"),
                       Patch(color=KEPT_ELTWISE, label="after, eltwise group (coupled by residual adds)")],
              fontsize=7, loc="upper left")


def plot_per_class(summaries: Sequence[Summary]) -> Figure:
    """Per-class accuracy at baseline, after pruning (when recorded) and after fine-tuning, one panel per run."""
    width = max(len(s["class_names"]) for s in summaries) * 0.55 + 2.5
    return _stacked_panels(summaries, width, 3.6, _per_class_panel)


def _per_class_panel(ax: Any, summary: Summary) -> None:
    stages = metric_stages(summary)
    names = summary["class_names"]
    x = np.arange(len(names))
    step = 0.8 / len(stages)
    for i, stage in enumerate(stages):
        metrics = summary["metrics"][stage]
        ax.bar(x + (i - (len(stages) - 1) / 2) * step, metrics["per_class"], width=step,
               color=STAGE_COLOURS[stage], label=f"{stage} (top-1 {metrics['top1']:.2%})")
    ax.set_xticks(x, names, rotation=45 if len(names) <= 20 else 90, ha="right", fontsize=7)
    ax.set_ylim(0, 1.22)  # room for the legend above the bars
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.set_ylabel("accuracy")
    ax.set_title(f"{_run_title(summary)}: per-class test accuracy", fontsize=9)
    ax.legend(fontsize=7, loc="upper right", ncols=len(stages))


def plot_class_structure(summaries: Sequence[Summary]) -> Figure | None:
    """Class tree dendrograms and class graphs of the runs that have one; ``None`` when no run does."""
    runs = [s for s in summaries if (s.get("class_structure") or {}).get("kind") in ("tree", "graph")]
    if not runs:
        return None
    fig = _figure(5.8 * len(runs), 5.4)
    for ax, summary in zip(fig.subplots(1, len(runs), squeeze=False)[0], runs):
        if summary["class_structure"]["kind"] == "tree":
            _dendrogram_panel(ax, summary)
        else:
            _graph_panel(fig, ax, summary)
    return fig


def _dendrogram_panel(ax: Any, summary: Summary) -> None:
    names = summary["class_names"]
    linkage, origin = class_linkage(summary)
    layout = dendrogram_layout(linkage, len(names))
    for xs, ys in zip(layout["icoord"], layout["dcoord"]):
        ax.plot(ys, xs, color="#1f77b4", linewidth=1.2)  # leaves on the left, root on the right
    leaves = layout["leaves"]
    ax.set_yticks(5 + 10 * np.arange(len(leaves)), [names[k] for k in leaves], fontsize=7)
    ax.set_ylim(0, 10 * len(leaves))
    ax.invert_yaxis()
    ax.set_xlabel("merge height" + (" (tree level)" if origin == "tree groups" else " (distance)"))
    ax.set_title(f"{summary['name']}: class tree ({summary['method']}, from {origin})", fontsize=9)


def _graph_panel(fig: Figure, ax: Any, summary: Summary) -> None:
    names = summary["class_names"]
    pos = circle_positions(len(names))
    edges = sorted(summary["class_structure"]["edges"], key=lambda e: abs(e[2]))  # strongest drawn last
    vmax = max((abs(e[2]) for e in edges), default=0.0) or 1.0
    norm, cmap = Normalize(-vmax, vmax), "coolwarm"
    mappable = ScalarMappable(norm=norm, cmap=cmap)
    for m, l, r in edges:
        ax.plot(pos[[m, l], 0], pos[[m, l], 1], color=mappable.to_rgba(r), linewidth=0.5 + 3.5 * abs(r) / vmax,
                solid_capstyle="round", zorder=1)
    ax.scatter(pos[:, 0], pos[:, 1], s=60, color="black", zorder=2)
    for k, (px, py) in enumerate(pos):
        align = "left" if px > 0.1 else "right" if px < -0.1 else "center"
        ax.text(1.14 * px, 1.14 * py, names[k], fontsize=7, ha=align, va="center")
    ax.set_xlim(-1.7, 1.7)
    ax.set_ylim(-1.35, 1.35)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.colorbar(mappable, ax=ax, shrink=0.7, label="edge weight $r_{ml}$")
    ax.set_title(f"{summary['name']}: class graph ({summary['method']}, {len(edges)} edges)", fontsize=9)


def plot_tradeoff(summaries: Sequence[Summary]) -> Figure:
    """Top-1 (circles) and worst-class accuracy (triangles) against the fraction of MACs kept.

    One colour per run, labelled by method; filled markers after fine-tuning,
    hollow ones right after pruning; black markers at 1.0 are the baselines,
    joined to each run's fine-tuned point by a thin line.
    """
    fig = _figure(7.0, 5.0)
    ax = fig.subplots()
    colours = [f"C{i % 10}" for i in range(len(summaries))]
    labels = _method_labels(summaries)
    for summary, colour, label in zip(summaries, colours, labels):
        _tradeoff_run(ax, summary, colour, label)
    xs = [macs_ratio(s) for s in summaries]
    ax.set_xlim(min(xs) - 0.08, 1.08)
    ax.set_xlabel("MACs kept (fraction of the unpruned model)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.set_title("accuracy vs MACs kept", fontsize=10)
    ax.legend(handles=_tradeoff_legend(summaries), fontsize=7, loc="lower right")
    return fig


def _tradeoff_run(ax: Any, summary: Summary, colour: str, label: str) -> None:
    x = macs_ratio(summary)
    metrics = summary["metrics"]
    for key, marker in (("top1", "o"), ("worst_class", "v")):
        base, final = metrics["baseline"][key], metrics["final"][key]
        ax.plot([1.0, x], [base, final], color=colour, linewidth=0.6, alpha=0.6, zorder=1)
        ax.scatter([1.0], [base], marker=marker, color="black", zorder=3)
        ax.scatter([x], [final], marker=marker, color=colour, s=50, zorder=3)
        if metrics.get("pruned") is not None:
            ax.scatter([x], [metrics["pruned"][key]], marker=marker, facecolors="none", edgecolors=colour, s=50,
                       zorder=3)
    ax.annotate(label, (x, metrics["final"]["top1"]), textcoords="offset points", xytext=(6, 4), fontsize=8,
                color=colour)


def _method_labels(summaries: Sequence[Summary]) -> list[str]:
    """The method of each run; the run name is added when two runs share a method."""
    methods = [s["method"] for s in summaries]
    return [m if methods.count(m) == 1 else f"{m} ({s['name']})" for m, s in zip(methods, summaries)]


def _tradeoff_legend(summaries: Sequence[Summary]) -> list[Line2D]:
    def marker(shape: str, label: str, face: str = "grey", edge: str = "grey") -> Line2D:
        return Line2D([], [], linestyle="none", marker=shape, markerfacecolor=face, markeredgecolor=edge, label=label)

    handles = [marker("o", "top-1"), marker("v", "worst class"), marker("o", "baseline (MACs 1.0)", "black", "black")]
    if any(s["metrics"].get("pruned") is not None for s in summaries):
        handles.append(marker("o", "pruned, before fine-tuning", "none"))
    return handles
