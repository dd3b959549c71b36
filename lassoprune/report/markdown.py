"""The ``report.md`` text of one or several checked run summaries.

Accuracies are written as percentages with two decimals (``91.23%``), drops
(baseline minus later, > 0 is a loss) in percentage points (``1.20 pp``),
ratios with four decimals, counts with thousands separators.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lassoprune.report.summary import derived_numbers, metric_stages, sort_by_macs, target_text

Summary = Mapping[str, Any]

FIGURE_NOTES = {
    "channels_per_layer": "Channels per group before (grey) and after pruning (blue; red: eltwise groups, "
                          "whose channels are tied by residual additions), one panel per run.",
    "per_class_accuracy": "Per-class test accuracy at baseline, right after pruning (when recorded) and after "
                          "fine-tuning, one panel per run.",
    "class_structure": "Class structure used by the method: tree runs as a dendrogram, graph runs as the class "
                       "graph on a circle (edge colour and width: the weight r_ml), one panel per run.",
    "tradeoff": "Top-1 (circles) and worst-class accuracy (triangles) against the MACs kept; baselines at 1.0, "
                "hollow markers before fine-tuning.",
}


def pct(value: float | None) -> str:
    """An accuracy in [0, 1] as ``'91.23%'`` (``'–'`` for ``None``)."""
    return "–" if value is None else f"{100 * value:.2f}%"


def points(value: float | None) -> str:
    """An accuracy difference as percentage points, ``'1.20 pp'``."""
    return "–" if value is None else f"{100 * value:.2f} pp"


def ratio(value: float) -> str:
    return f"{value:.4f}"


def speedup(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> list[str]:
    """Markdown table lines; ``align`` gives one letter per column, ``l`` or ``r`` (default: left, then right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def render_markdown(summaries: Sequence[Summary], images: Mapping[str, str]) -> str:
    """The whole report: a comparison table (several runs), the figures, then one section per run.

    Args:
        summaries: checked summaries.
        images: figure key (``'tradeoff'``, ...) -> path relative to the report.
    """
    title = summaries[0]["name"] if len(summaries) == 1 else f"{len(summaries)} runs"
    lines = [f"# Pruning report: {title}", ""]
    if len(summaries) > 1:
        lines += comparison_section(summaries)
    lines += figures_section(images)
    for summary in summaries:
        lines += run_section(summary, level=2)
    return "\n".join(lines).rstrip() + "\n"


def comparison_section(summaries: Sequence[Summary]) -> list[str]:
    """One row per run, sorted by MACs ratio (fraction of the MACs kept)."""
    rows = []
    for i in sort_by_macs(summaries):
        s, d = summaries[i], derived_numbers(summaries[i])
        final = s["metrics"]["final"]
        rows.append([s["name"], s["method"], target_text(s["target"]), ratio(d["macs_ratio"]),
                     ratio(d["params_ratio"]), pct(final["top1"]), pct(final["worst_class"]), speedup(d["speedup"])])
    header = ["run", "method", "target", "MACs ratio", "params ratio", "top-1", "worst-class", "speed-up"]
    return ["## Comparison", "", "Sorted by MACs ratio (MACs after / before); accuracies after fine-tuning.", "",
            *table(header, rows, align="lllrrrrr"), ""]


def figures_section(images: Mapping[str, str]) -> list[str]:
    lines = ["## Figures", ""]
    for key, path in images.items():
        lines += [f"![{key.replace('_', ' ')}]({path})", "", FIGURE_NOTES.get(key, ""), ""]
    return lines


def run_section(summary: Summary, level: int = 2) -> list[str]:
    """Header, size, accuracy, latency, stage times and per-group widths of one run."""
    head, sub = "#" * level, "#" * (level + 1)
    lines = [f"{head} Run {summary['name']}", "", *_facts(summary), ""]
    lines += [f"{sub} Size", "", *size_table(summary), ""]
    lines += [f"{sub} Accuracy", "", *metrics_table(summary), ""]
    if summary.get("latency"):
        lines += [latency_line(summary["latency"]), ""]
    if summary.get("reconstruction"):
        lines += [f"{sub} Reconstruction", "", *reconstruction_table(summary["reconstruction"]), ""]
    if summary.get("prune_steps"):
        lines += [f"{sub} Pruning steps", "", *steps_table(summary["prune_steps"]), ""]
    if summary["stages"]:
        lines += [f"{sub} Stage times", "", *stages_table(summary["stages"]), ""]
    lines += [f"{sub} Channels per group", "", *groups_table(summary["groups"]), ""]
    return lines


def _facts(summary: Summary) -> list[str]:
    facts = [
        f"- model: {summary['model']}, dataset: {summary['dataset']} ({len(summary['class_names'])} classes)",
        f"- method: {summary['method']}, target: {target_text(summary['target'])}",
    ]
    sparse = summary.get("sparse")
    if sparse:
        facts.append(f"- sparse training: {sparse['regularizer']}, lambda {sparse['lam']:g}, {sparse['epochs']} epochs")
    structure = summary.get("class_structure")
    if structure:
        facts.append(f"- class structure: {_structure_text(structure)}")
    return facts


def _structure_text(structure: Mapping[str, Any]) -> str:
    if structure["kind"] == "graph":
        return f"graph ({len(structure['edges'])} edges)"
    if structure["kind"] == "tree":
        return f"tree ({len(structure['groups'])} nodes)"
    return "none"


def size_table(summary: Summary) -> list[str]:
    d = derived_numbers(summary)
    rows = [["MACs", f"{summary['macs_before']:,d}", f"{summary['macs_after']:,d}", ratio(d["macs_ratio"])],
            ["params", f"{summary['params_before']:,d}", f"{summary['params_after']:,d}", ratio(d["params_ratio"])]]
    return table(["", "before", "after", "ratio (after / before)"], rows)


def metrics_table(summary: Summary) -> list[str]:
    """baseline / pruned / final rows of top-1, top-5, worst class and the drops from baseline."""
    metrics = summary["metrics"]
    base = metrics["baseline"]
    rows = []
    for stage in metric_stages(summary):
        m = metrics[stage]
        drops = ["", ""] if stage == "baseline" else [points(base["top1"] - m["top1"]),
                                                      points(base["worst_class"] - m["worst_class"])]
        rows.append([stage, pct(m["top1"]), pct(m.get("top5")), pct(m["worst_class"]), *drops])
    return table(["stage", "top-1", "top-5", "worst-class", "top-1 drop", "worst-class drop"], rows)


def latency_line(latency: Mapping[str, Any]) -> str:
    threads = latency["threads"]
    return (f"Latency (batch {latency['batch_size']}, {threads} thread{'s' if threads != 1 else ''}): "
            f"{latency['before_ms']:.2f} ms -> {latency['after_ms']:.2f} ms, speed-up {speedup(latency['speedup'])}")


def stages_table(stages: Mapping[str, Mapping[str, float]]) -> list[str]:
    rows = [[name, f"{stage['seconds']:.1f}"] for name, stage in stages.items()]
    rows.append(["total", f"{sum(stage['seconds'] for stage in stages.values()):.1f}"])
    return table(["stage", "seconds"], rows)


def reconstruction_table(layers: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per refitted layer: kept inputs and the relative output error before / after the refit."""
    rows = [[layer["name"], f"{layer['inputs_kept']} / {layer['inputs_before']}", f"{layer['rows']:,d}",
             f"{layer['error_before']:.3f}", f"{layer['error_after']:.3f}"] for layer in layers]
    return ["Each layer that lost input channels was refitted by least squares to reproduce the unpruned "
            "layer's output on the calibration images (relative output error, before its BatchNorm).", "",
            *table(["layer", "inputs kept", "rows", "error before", "error after"], rows)]


def steps_table(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per cut of a prune in steps: target and ratios reached, top-1 after the cut and after fine-tuning."""
    rows = [[step["step"], ratio(step["target"]), ratio(step["macs_ratio"]), ratio(step["params_ratio"]),
             pct((step["one_shot"] or {}).get("top1")), pct((step["finetuned"] or {}).get("top1")),
             f"{step['seconds']:.1f}"] for step in steps]
    return ["The model was cut in steps on a geometric schedule (targets: fractions of the original), fine-tuned "
            "between cuts; the last cut is fine-tuned by the finetune stage. Reconstruction and the per-layer "
            "errors above are those of the last cut (against the model before it).", "",
            *table(["step", "target", "MACs ratio", "params ratio", "top-1 after cut", "top-1 fine-tuned",
                    "seconds"], rows)]


def groups_table(groups: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per channel group, in network order: ``| id | kept / total | kept % | eltwise |``."""
    rows = [[g["id"], f"{g['kept']} / {g['total']}", f"{100 * g['kept'] / g['total']:.1f}%",
             "yes" if g["eltwise"] else ""] for g in groups]
    return table(["group", "kept / total", "kept", "eltwise"], rows)
