"""The ``summary.json`` of a pruning run: its schema, a validator, loading, derived numbers.

A run (pretrain -> optional sparse training -> prune -> fine-tune -> evaluate)
writes ``RUN/summary.json``, a plain dict (schema version 1)::

    schema: 1
    name, model, dataset, method: str
    class_names: [K str]
    sparse: null | {"regularizer": str, "lam": float, "epochs": int}
    target: {"kind": "macs" | "params", "ratio": float in (0, 1]}
          | {"kind": "threshold", "ratio": null | float}      # runs pruned by a threshold, not to a size
    macs_before, macs_after, params_before, params_after: int > 0
    groups: [{"id": str, "kept": int, "total": int, "eltwise": bool}, ...]   # network order
    metrics: {"baseline": M, "unreconstructed": M (optional), "pruned": M (optional), "final": M}
        # unreconstructed: one-shot accuracy before the least-squares refit, when the run reconstructed
        M = {"top1": f, "top5": f | null, "worst_class": f, "per_class": [K f]}   # accuracies in [0, 1]
    class_structure: null | {"kind": "graph", "edges": [[m, l, r_ml], ...]}
                          | {"kind": "tree", "groups": [[[class indices], w_v], ...]}
                          | {"kind": "graph" | "tree", "from": "layer"}   # one structure per group
                          | {"kind": "none"}
    latency: null | {"batch_size": int, "threads": int, "before_ms": f, "after_ms": f, "speedup": f}
    stages: {stage name: {"seconds": f}, ...}
    reconstruction: null | [{"name": str, "inputs_kept": int, "inputs_before": int, "rows": int,
                             "error_before": f, "error_after": f}, ...]   # network order
    prune_steps (optional; only runs pruned in steps, ``prune.steps`` > 1):
        [{"step": int >= 1, "target": f, "macs_ratio": f, "params_ratio": f,     # fractions of the original
          "one_shot": H | null, "finetuned": H | null, "seconds": f, ...}, ...]   # in step order
        H = {"top1": f, "top5": f | null, "worst_class": f}   # after the cut / after the step's fine-tuning

The nullable keys (``sparse``, ``class_structure``, ``latency``, ``reconstruction``) may also be
absent; :func:`check_summary` fills them with ``None``. Schema 2 dropped ``class_means_linkage``
(always null); summaries of schema 1 are still read (the key is ignored).
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lassoprune.errors import LassopruneError

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # schema 1 had an always-null ``class_means_linkage``
SUMMARY_FILE = "summary.json"
THRESHOLD = "threshold"  # no size target: channels below a norm threshold were removed (dwgl-vote)
TARGET_KINDS = ("macs", "params", THRESHOLD)
STRUCTURE_KINDS = ("graph", "tree", "none")
METRIC_STAGES = ("baseline", "unreconstructed", "pruned", "final")  # the middle two are optional
OPTIONAL_METRIC_STAGES = ("unreconstructed", "pruned")
NULLABLE_KEYS = ("sparse", "class_structure", "latency", "reconstruction")
LATENCY_KEYS = ("batch_size", "threads", "before_ms", "after_ms", "speedup")


class _Checker:
    """Small typed accessors that raise :class:`LassopruneError` naming the key and the file."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> LassopruneError:
        return LassopruneError(f"{self.source}: summary key {where!r} {problem} (summary schema {SCHEMA_VERSION})")

    def key(self, obj: Any, key: str, where: str) -> Any:
        """``obj[key]``; ``where`` is the dotted name of ``obj`` ('' for the top level)."""
        name = f"{where}.{key}" if where else key
        if not isinstance(obj, Mapping):
            raise self.fail(where, f"must be an object, got {type(obj).__name__}")
        if key not in obj:
            raise self.fail(name, "is missing")
        return obj[key]

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"must be a non-empty string, got {value!r}")
        return value

    def integer(self, value: Any, where: str, low: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(where, f"must be an integer >= {low}, got {value!r}")
        return value

    def number(self, value: Any, where: str, low: float = -math.inf, high: float = math.inf) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise self.fail(where, f"must be a number in [{low}, {high}], got {value!r}")
        return float(value)

    def array(self, value: Any, where: str, length: int | None = None) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"must be a list, got {type(value).__name__}")
        if length is not None and len(value) != length:
            raise self.fail(where, f"must have {length} entries, got {len(value)}")
        return value


def check_summary(summary: Mapping[str, Any], source: str = "summary") -> dict[str, Any]:
    """Validate a run summary against schema 1; return a copy with absent nullable keys set to ``None``.

    Args:
        summary: the parsed ``summary.json``.
        source: what to name in errors (usually the file path).

    Raises:
        LassopruneError: naming the first missing or malformed key and ``source``.
    """
    c = _Checker(source)
    if not isinstance(summary, Mapping):
        raise LassopruneError(f"{source}: a run summary must be a JSON object, got {type(summary).__name__}")
    out = copy.deepcopy(dict(summary))
    for key in NULLABLE_KEYS:
        out.setdefault(key, None)
    if c.key(out, "schema", "") not in READABLE_VERSIONS:
        raise c.fail("schema", f"must be one of {READABLE_VERSIONS}, got {out['schema']!r}")
    out.pop("class_means_linkage", None)
    for key in ("name", "model", "dataset", "method"):
        c.text(c.key(out, key, ""), key)
    num_classes = _check_class_names(c, out)
    _check_sparse(c, out["sparse"])
    _check_target(c, c.key(out, "target", ""))
    for key in ("macs_before", "macs_after", "params_before", "params_after"):
        c.integer(c.key(out, key, ""), key, low=1)
    _check_groups(c, c.key(out, "groups", ""))
    _check_metrics(c, c.key(out, "metrics", ""), num_classes)
    _check_class_structure(c, out["class_structure"], num_classes)
    _check_latency(c, out["latency"])
    _check_reconstruction(c, out["reconstruction"])
    _check_stages(c, c.key(out, "stages", ""))
    if "prune_steps" in out:
        _check_prune_steps(c, out["prune_steps"])
    return out


def _check_class_names(c: _Checker, summary: Mapping[str, Any]) -> int:
    names = c.array(c.key(summary, "class_names", ""), "class_names")
    if not names:
        raise c.fail("class_names", "must name at least one class")
    for k, name in enumerate(names):
        c.text(name, f"class_names[{k}]")
    return len(names)


def _check_sparse(c: _Checker, sparse: Any) -> None:
    if sparse is None:
        return
    c.text(c.key(sparse, "regularizer", "sparse"), "sparse.regularizer")
    c.number(c.key(sparse, "lam", "sparse"), "sparse.lam", low=0.0)
    c.integer(c.key(sparse, "epochs", "sparse"), "sparse.epochs")


def _check_target(c: _Checker, target: Any) -> None:
    kind = c.key(target, "kind", "target")
    if kind not in TARGET_KINDS:
        raise c.fail("target.kind", f"must be one of {', '.join(TARGET_KINDS)}, got {kind!r}")
    ratio = c.key(target, "ratio", "target")
    if kind == THRESHOLD:
        if ratio is not None:
            c.number(ratio, "target.ratio", low=0.0)
    elif c.number(ratio, "target.ratio", low=0.0, high=1.0) == 0.0:
        raise c.fail("target.ratio", "must be > 0")


def _check_groups(c: _Checker, groups: Any) -> None:
    for i, group in enumerate(c.array(groups, "groups")):
        where = f"groups[{i}]"
        c.text(c.key(group, "id", where), f"{where}.id")
        total = c.integer(c.key(group, "total", where), f"{where}.total", low=1)
        kept = c.integer(c.key(group, "kept", where), f"{where}.kept")
        if kept > total:
            raise c.fail(f"{where}.kept", f"must be <= total ({total}), got {kept}")
        if not isinstance(c.key(group, "eltwise", where), bool):
            raise c.fail(f"{where}.eltwise", f"must be true or false, got {group['eltwise']!r}")


def _check_metrics(c: _Checker, metrics: Any, num_classes: int) -> None:
    c.key(metrics, "baseline", "metrics")
    c.key(metrics, "final", "metrics")
    for stage in METRIC_STAGES:
        if stage not in metrics or (stage in OPTIONAL_METRIC_STAGES and metrics[stage] is None):
            continue
        where = f"metrics.{stage}"
        entry = metrics[stage]
        for key in ("top1", "worst_class"):
            c.number(c.key(entry, key, where), f"{where}.{key}", 0.0, 1.0)
        if c.key(entry, "top5", where) is not None:
            c.number(entry["top5"], f"{where}.top5", 0.0, 1.0)
        per_class = c.array(c.key(entry, "per_class", where), f"{where}.per_class", length=num_classes)
        for k, value in enumerate(per_class):
            c.number(value, f"{where}.per_class[{k}]", 0.0, 1.0)


def _check_reconstruction(c: _Checker, layers: Any) -> None:
    if layers is None:
        return
    for i, layer in enumerate(c.array(layers, "reconstruction")):
        where = f"reconstruction[{i}]"
        c.text(c.key(layer, "name", where), f"{where}.name")
        for key in ("inputs_kept", "inputs_before", "rows"):
            c.integer(c.key(layer, key, where), f"{where}.{key}", low=1)
        for key in ("error_before", "error_after"):
            c.number(c.key(layer, key, where), f"{where}.{key}", 0.0)


def _check_class_structure(c: _Checker, structure: Any, num_classes: int) -> None:
    if structure is None:
        return
    kind = c.key(structure, "kind", "class_structure")
    if kind not in STRUCTURE_KINDS:
        raise c.fail("class_structure.kind", f"must be one of {', '.join(STRUCTURE_KINDS)}, got {kind!r}")
    if kind == "graph":
        for i, edge in enumerate(c.array(c.key(structure, "edges", "class_structure"), "class_structure.edges")):
            where = f"class_structure.edges[{i}]"
            m, l, r = c.array(edge, where, length=3)
            _check_class_index(c, m, f"{where}[0]", num_classes)
            _check_class_index(c, l, f"{where}[1]", num_classes)
            c.number(r, f"{where}[2]")
    elif kind == "tree":
        for i, node in enumerate(c.array(c.key(structure, "groups", "class_structure"), "class_structure.groups")):
            where = f"class_structure.groups[{i}]"
            members, weight = c.array(node, where, length=2)
            if not c.array(members, f"{where}[0]"):
                raise c.fail(f"{where}[0]", "must list at least one class")
            for j, k in enumerate(members):
                _check_class_index(c, k, f"{where}[0][{j}]", num_classes)
            c.number(weight, f"{where}[1]", low=0.0)


def _check_class_index(c: _Checker, value: Any, where: str, num_classes: int) -> None:
    if c.integer(value, where) >= num_classes:
        raise c.fail(where, f"must be a class index below {num_classes}, got {value}")


def _check_latency(c: _Checker, latency: Any) -> None:
    if latency is None:
        return
    for key in ("batch_size", "threads"):
        c.integer(c.key(latency, key, "latency"), f"latency.{key}", low=1)
    for key in ("before_ms", "after_ms", "speedup"):
        c.number(c.key(latency, key, "latency"), f"latency.{key}", low=0.0)


def _check_stages(c: _Checker, stages: Any) -> None:
    if not isinstance(stages, Mapping):
        raise c.fail("stages", f"must be an object, got {type(stages).__name__}")
    for name, stage in stages.items():
        c.number(c.key(stage, "seconds", f"stages.{name}"), f"stages.{name}.seconds", low=0.0)


def _check_prune_steps(c: _Checker, steps: Any) -> None:
    for i, step in enumerate(c.array(steps, "prune_steps")):
        where = f"prune_steps[{i}]"
        c.integer(c.key(step, "step", where), f"{where}.step", low=1)
        c.number(c.key(step, "seconds", where), f"{where}.seconds", low=0.0)
        for key in ("target", "macs_ratio", "params_ratio"):
            c.number(c.key(step, key, where), f"{where}.{key}", 0.0, 1.0)
        for key in ("one_shot", "finetuned"):
            metrics = c.key(step, key, where)
            if metrics is not None:
                c.number(c.key(metrics, "top1", f"{where}.{key}"), f"{where}.{key}.top1", 0.0, 1.0)


def load_summaries(paths: Iterable[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Read and validate the summaries of run directories (``RUN/summary.json``) or summary files.

    A summary without ``name`` is named after its run directory.

    Raises:
        LassopruneError: a path is missing, has no ``summary.json``, or holds an invalid summary.
    """
    summaries = [_load_one(Path(path)) for path in paths]
    if not summaries:
        raise LassopruneError("no run given: name at least one run directory or summary.json")
    return summaries


def _load_one(path: Path) -> dict[str, Any]:
    file = path / SUMMARY_FILE if path.is_dir() else path
    if not file.is_file():
        if path.is_dir() or path.suffix != ".json":
            raise LassopruneError(f"{path} has no {SUMMARY_FILE}: is it a finished `lassoprune run` directory?")
        raise LassopruneError(f"{path}: no such file")
    try:
        summary = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LassopruneError(f"{file}: cannot read the run summary: {exc}") from exc
    if isinstance(summary, dict):
        summary.setdefault("name", file.resolve().parent.name)
    return check_summary(summary, source=str(file))


def macs_ratio(summary: Mapping[str, Any]) -> float:
    """Fraction of the MACs kept: ``macs_after / macs_before``."""
    return summary["macs_after"] / summary["macs_before"]


def derived_numbers(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """Numbers computed from a checked summary (drops are baseline minus later, so > 0 is a loss).

    Returns:
        ``macs_ratio``, ``params_ratio`` (after / before), ``top1_drop``,
        ``worst_class_drop`` (baseline - final), ``pruned_top1_drop``,
        ``pruned_worst_class_drop`` (baseline - pruned, ``None`` without
        ``metrics.pruned``) and ``speedup`` (``latency.speedup``, ``None``
        without latency).
    """
    metrics = summary["metrics"]
    baseline, final, pruned = metrics["baseline"], metrics["final"], metrics.get("pruned")
    latency = summary.get("latency")
    return {
        "macs_ratio": macs_ratio(summary),
        "params_ratio": summary["params_after"] / summary["params_before"],
        "top1_drop": baseline["top1"] - final["top1"],
        "worst_class_drop": baseline["worst_class"] - final["worst_class"],
        "pruned_top1_drop": None if pruned is None else baseline["top1"] - pruned["top1"],
        "pruned_worst_class_drop": None if pruned is None else baseline["worst_class"] - pruned["worst_class"],
        "speedup": None if latency is None else latency["speedup"],
    }


def target_text(target: Mapping[str, Any]) -> str:
    """``{"kind": "macs", "ratio": 0.5}`` -> ``'MACs 0.5'``; a threshold run -> ``'threshold'``."""
    name = {"macs": "MACs"}.get(target["kind"], target["kind"])
    return name if target["ratio"] is None else f"{name} {target['ratio']:g}"


def metric_stages(summary: Mapping[str, Any]) -> list[str]:
    """The metric stages present in a checked summary, in pipeline order."""
    metrics = summary["metrics"]
    return [stage for stage in METRIC_STAGES if metrics.get(stage) is not None]


def sort_by_macs(summaries: Sequence[Mapping[str, Any]]) -> list[int]:
    """Indices of ``summaries`` by increasing MACs ratio (stable for ties)."""
    return sorted(range(len(summaries)), key=lambda i: macs_ratio(summaries[i]))
