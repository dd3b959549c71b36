"""The benchmark protocol's report (``benchmarks/compare.py``): markdown tables and trade-off plots of the
finished rows, mean ± SE over seeds (:mod:`bench.stats`), written to ``RUNS/table.md``, ``RUNS/results.json``
(``{phase: [row result, ...]}``) and ``RUNS/tradeoff-<model>.png``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stats import Estimate, differs, sampling_se
from bench.tables import markdown_table
from compare_profiles import METHODS, PHASES, Profile
from compare_rows import finished

from lassoprune.io import atomic_write_json, atomic_write_text

Result = dict[str, Any]

MODEL_COLUMNS = ("target", "method", "n", "lr", "MACs kept", "params kept", "pruned top-1", "pruned worst",
                 "final top-1", "final worst", "residual removed", "vs best")


def _label(row: Result) -> str:
    """The row's target: ``0.39`` (MACs kept), ``p 0.25`` (params kept), ``0.39 / p 0.15`` (both limits)."""
    macs, params = row["target"], row.get("target_params")
    return " / ".join(([f"{macs:g}"] if macs is not None else []) + ([f"p {params:g}"] if params is not None else []))


def _order(label: str) -> tuple[int, list[float]]:
    """Sort key of a :func:`_label`: MACs targets, then pairs, then params targets, each in decreasing order."""
    kind = 0 if "p" not in label else 1 if "/" in label else 2
    return kind, [-float(x) for x in label.replace("p ", "").split(" / ")]


def _by_method(rows: Sequence[Result], target: str) -> dict[str, list[Result]]:
    """The rows at ``target`` (a :func:`_label`), grouped by method (in the rows' order)."""
    groups: dict[str, list[Result]] = {}
    for r in rows:
        if _label(r) == target:
            groups.setdefault(r["method"], []).append(r)
    return groups


def _mark(method: str, best: str, finals: dict[str, Estimate], floor: float) -> str:
    """``best``, ``<`` (lower by more than two SEs), ``≈`` (within two SEs) or empty (no SE); ``¹`` when a side
    has one seed."""
    if method == best:
        return "best"
    mark = {True: "<", False: "≈", None: ""}[differs(finals[method], finals[best], floor)]
    if mark in ("<", "≈") and min(finals[method].n, finals[best].n) == 1:
        mark += "¹"
    return mark


def _model_row(target: str, name: str, group: Sequence[Result], final: Estimate, mark: str) -> list[str]:
    """The cells of one (target, method) line of :func:`model_table`."""
    def estimate(key: str) -> Estimate:
        return Estimate.of([r[key] for r in group])

    return [target, name, str(len(group)), f"{group[0]['lr']:g}", f"{estimate('macs_ratio').mean:.3f}",
            f"{estimate('params_ratio').mean:.3f}", estimate("pruned_top1").text(), estimate("pruned_worst").text(3),
            final.text(), estimate("final_worst").text(3), _residual(group), mark]


def _residual(group: Sequence[Result]) -> str:
    """Mean residual (eltwise) channels removed over the seeds, ``-`` where the rows did not record it."""
    counts = [r.get("residual_removed") for r in group]
    return "-" if None in counts else f"{sum(counts) / len(counts):g}"


def model_table(rows: Sequence[Result], model: str, profile: Profile) -> str:
    """Markdown table of one model: per (target, method) the mean ± SE over seeds."""
    mine = [r for r in rows if r["model"] == model]
    if not mine:
        return ""
    dense = Estimate.of([r["dense_top1"] for r in mine])
    floor = sampling_se(dense.mean, profile.test_images)
    floor_text = f"{floor:.4f} at the dense accuracy" if floor else "unknown test size: no floor"
    intro = [f"#### {model} (`--{profile.name}` profile)", "",
             f"dense top-1 on the whole test split: {dense.mean:.4f}; top-1 / worst class, mean ± SE over seeds "
             "(n = seeds); **bold**: best mean final top-1 at the target; ≈: within two standard errors of it; "
             "<: lower by more than two standard errors; every SE in the comparison is at least the test split's "
             "sampling error of one accuracy at the best method's top-1 "
             f"({floor_text}); ¹: one seed on a side, compared by that sampling error alone (seed-to-seed "
             "variation unknown)", ""]
    lines = []
    for target in sorted({_label(r) for r in mine}, key=_order):
        groups = _by_method(mine, target)
        finals = {m: Estimate.of([r["final_top1"] for r in g]) for m, g in groups.items()}
        best = max(finals, key=lambda m: finals[m].mean)
        floor = sampling_se(finals[best].mean, profile.test_images)
        for m in sorted(groups, key=lambda m: -finals[m].mean):
            name = f"**{m}**" if m == best else m
            lines.append(_model_row(target, name, groups[m], finals[m], _mark(m, best, finals, floor)))
    return "\n".join([*intro, markdown_table(MODEL_COLUMNS, lines)])


def select_table(rows: Sequence[Result]) -> str:
    """Validation top-1 of every (method, learning rate) of ``select``; the chosen rate in bold."""
    by_method: dict[str, dict[float, float]] = {}
    for r in rows:
        by_method.setdefault(r["method"], {})[r["lr"]] = r["final_top1"]
    rates = sorted({r["lr"] for r in rows}, reverse=True)
    lines = []
    for m, scores in by_method.items():
        best = max(sorted(scores, reverse=True), key=lambda lr: scores[lr])
        cells = [("**%.4f**" if lr == best else "%.4f") % scores[lr] if lr in scores else "" for lr in rates]
        lines.append([m, *cells])
    return markdown_table(["method", *(f"lr {lr:g}" for lr in rates)], lines)


def pilot_table(rows: Sequence[Result]) -> str:
    """Validation top-1 after every fine-tuning epoch and the methods' rank order at each epoch."""
    epochs = max((len(r["epoch_top1"]) for r in rows), default=0)
    table = markdown_table(["method", *(f"epoch {e + 1}" for e in range(epochs))],
                           [[r["method"], *(f"{a:.4f}" for a in r["epoch_top1"])] for r in rows])
    ranks = []
    for e in range(epochs):
        order = sorted((r for r in rows if len(r["epoch_top1"]) > e), key=lambda r: -r["epoch_top1"][e])
        ranks.append(f"\nrank after epoch {e + 1}: " + " > ".join(r["method"] for r in order))
    return "\n".join([table, *ranks])


def plot_tradeoff(rows: Sequence[Result], model: str, when: str = "after fine-tuning") -> Any:
    """Final top-1 and worst-class accuracy against MACs kept, one colour per method, error bars = 1 SE."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    mine = [r for r in rows if r["model"] == model]
    methods = [m for m in METHODS if any(r["method"] == m for r in mine)]
    for i, m in enumerate(methods):
        for ax, key in zip(axes, ("final_top1", "final_worst")):
            points = []
            for target in sorted({_label(r) for r in mine if r["method"] == m}):
                g = [r for r in mine if r["method"] == m and _label(r) == target]
                est = Estimate.of([r[key] for r in g])
                points.append((Estimate.of([r["macs_ratio"] for r in g]).mean, est.mean, est.se or 0.0))
            xs, ys, es = zip(*sorted(points))
            ax.errorbar(xs, ys, yerr=es, marker="o", markersize=4, capsize=3, linewidth=1, color=f"C{i % 10}",
                        label=m, linestyle="-" if i < 10 else "--")
    for ax, title, key in zip(axes, ("top-1", "worst-class accuracy"), ("dense_top1", "dense_worst")):
        ax.axhline(mine[0][key], color="black", linestyle=":", linewidth=1, label="dense")
        ax.set_xlabel("MACs kept (fraction of the dense model)")
        ax.set_ylabel(f"{title}, mean ± SE over seeds")
        ax.set_title(f"{model}: {title} {when}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right", ncols=2)
    return fig


def write_report(profile: Profile, runs: Path) -> str:
    """``RUNS/table.md``, ``RUNS/results.json`` and one ``RUNS/tradeoff-<model>.png`` per model."""
    from lassoprune.report.plots import save_png

    results = {phase: list(finished(runs, phase)) for phase in PHASES}
    parts = [f"settings: {json.dumps(dataclasses.asdict(profile))}"]
    parts += [f"- {note}" for note in profile.notes]
    if results["select"]:
        parts += ["#### select: validation top-1 per fine-tuning learning rate", select_table(results["select"])]
    if results["pilot"]:
        parts += ["#### pilot: validation top-1 per fine-tuning epoch", pilot_table(results["pilot"])]
    for model in profile.models:
        table = model_table(results["table"], model, profile)
        if table:
            parts.append(table)
            when = "after fine-tuning" if profile.finetune_epochs else "post-training (no fine-tuning)"
            save_png(plot_tradeoff(results["table"], model, when), runs / f"tradeoff-{model}.png")
    text = "\n\n".join(parts) + "\n"
    atomic_write_text(runs / "table.md", text)
    atomic_write_json(runs / "results.json", results)
    return text
