"""Iterative pruning: several cuts on a geometric schedule, each of the already pruned model.

``steps = k`` cuts a network to the intermediate targets ``T ** (i / k)`` of the original cost
(:func:`geometric_schedule`; ``i = 1 .. k``, so the last is the requested target ``T``), for a MACs or a
parameter target alike (with both, two limits: each on its own schedule, a limit already met dropped
for that step). Each step hands :func:`~lassoprune.pruning.api.prune_with` the *current* model
and the next target expressed relative to that model's cost (``target_i / current_ratio``), so every
cut is the ordinary one (scoring on the calibration batches, reconstruction, BatchNorm re-estimation);
a fine-tuning callback runs after every cut but the last (whose fine-tuning is the caller's, e.g. the
pipeline's ``finetune`` stage).

Each finished step is a :class:`StepRecord`: the ratios reached, the keep sets composed back to the
channel numbers of the original groups, the one-shot metrics after the cut and the metrics after the
step's fine-tuning. Records are JSON-safe and self-sufficient, so a caller can persist them
(``on_step``) and resume a killed run from the last finished step (``done``).

Example::

    from lassoprune.pruning import PruneSettings
    from lassoprune.pruning.iterative import prune_iteratively

    settings = PruneSettings("l1", target_macs=0.3, steps=3)
    result = prune_iteratively(model, torch.randn(1, 3, 32, 32), settings, data=calib,
                               finetune=lambda m, step: train_a_little(m))
    print([round(s.macs_ratio, 3) for s in result.steps])   # ~ [0.669, 0.448, 0.300]
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lassoprune.errors import LassopruneError
from lassoprune.pruning.api import PruneResult, prune_with
from lassoprune.pruning.criteria import criterion_spec, resolve_criterion
from lassoprune.pruning.method import get_method
from lassoprune.pruning.post_cut import Evaluate
from lassoprune.pruning.settings import PruneSettings
from lassoprune.utils.runtime import get_logger

__all__ = ["IterativeResult", "StepFinetune", "StepRecord", "check_steps", "geometric_schedule",
           "prune_iteratively"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
StepFinetune = Callable[[nn.Module, int], dict[str, Any] | None]
"""``finetune(model, step) -> metrics or None``: trains ``model`` in place after the cut of ``step`` (1-based)."""

#: Headline metric names a step summary keeps of a metrics record.
HEADLINE = ("top1", "top5", "worst_class")


def geometric_schedule(ratio: float, steps: int) -> tuple[float, ...]:
    """The fractions of the original cost to keep after each step: ``ratio ** (i / steps)``, ``i = 1 .. steps``.

    The last entry is ``ratio`` itself; every step keeps the same fraction ``ratio ** (1 / steps)`` of the
    cost left by the step before.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise LassopruneError(f"steps must be an integer >= 1 (1: one cut), got {steps!r}")
    if not 0 < ratio < 1:
        raise LassopruneError(f"the target must be a fraction of the original to keep, in (0, 1); got {ratio}")
    return tuple(ratio ** (i / steps) for i in range(1, steps)) + (ratio,)


def check_steps(settings: PruneSettings, steps: int | None = None, prefix: str = "") -> int:
    """The number of steps (``steps`` or ``settings.steps``), after checking it suits ``settings``.

    ``prefix`` is put before the option names in errors (``"prune."`` for a run config).

    Raises:
        LassopruneError: fewer than one step, a negative ``step_epochs``, or several steps without a size
            target, e.g. with a method told to prune by a threshold (a threshold has no intermediate values).
    """
    k = settings.steps if steps is None else steps
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise LassopruneError(f"{prefix}steps must be an integer >= 1 (1: one cut), got {k!r}")
    if settings.step_epochs < 0:
        raise LassopruneError(f"{prefix}step_epochs must be >= 0 (0: no fine-tuning between cuts), "
                              f"got {settings.step_epochs}")
    if k == 1:
        return k
    if isinstance(settings.method, str):
        spec = get_method(settings.method)
    else:
        spec = criterion_spec(resolve_criterion(settings.method))
    if spec.uses_threshold(spec.parse_options(settings.options)):
        raise LassopruneError(f"{prefix}steps: {k} cuts need a size target to split into steps, but {spec.name} "
                              f"is told to prune by a threshold ({prefix}options.threshold); give {prefix}target_macs "
                              f"or {prefix}target_params instead, or use one step")
    if settings.target_macs is None and settings.target_params is None:
        raise LassopruneError(f"{prefix}steps: {k} cuts need a size target: give {prefix}target_macs or "
                              f"{prefix}target_params")
    return k


@dataclass(frozen=True)
class StepRecord:
    """One finished step of :func:`prune_iteratively` (JSON round trip: :meth:`to_dict` / :meth:`from_dict`).

    Attributes:
        step: its number, 1-based.
        kind: the cost the step's cut was made to (``macs`` or ``params``; with two limits, the binding one).
        target: the fraction of the original cost of that kind this step aimed at (the schedule's entry).
        relative_target: the same, as a fraction of the cost of the model the step cut.
        macs_before, params_before: the original model's counts.
        macs_after, params_after: the counts after this step.
        keep: group id -> kept channel numbers of the *original* group (composed over the steps).
        totals: group id -> channels of the original group.
        one_shot: metrics right after the cut (reconstruction and BatchNorm re-estimation included), or None.
        finetuned: metrics after the step's fine-tuning, or None (the last step, or no fine-tuning).
        seconds: wall time of the step (cut, evaluations and fine-tuning).
        prune: the step's own :meth:`PruneResult.to_dict` (counts relative to the model it cut).
    """

    step: int
    kind: str
    target: float
    relative_target: float
    macs_before: int
    params_before: int
    macs_after: int
    params_after: int
    keep: dict[str, tuple[int, ...]]
    totals: dict[str, int]
    one_shot: dict[str, Any] | None
    finetuned: dict[str, Any] | None
    seconds: float
    prune: dict[str, Any]

    @property
    def macs_ratio(self) -> float:
        """MACs kept of the original."""
        return self.macs_after / self.macs_before

    @property
    def params_ratio(self) -> float:
        """Parameters kept of the original."""
        return self.params_after / self.params_before

    def summary(self) -> dict[str, Any]:
        """The headline of the step: ratios reached, top-1 / top-5 / worst class after the cut and after fine-tuning."""
        return {"step": self.step, "kind": self.kind, "target": self.target, "relative_target": self.relative_target,
                "macs_ratio": self.macs_ratio, "params_ratio": self.params_ratio,
                "macs_after": self.macs_after, "params_after": self.params_after,
                "one_shot": _headline(self.one_shot), "finetuned": _headline(self.finetuned),
                "seconds": self.seconds}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: every field (keep sets as lists)."""
        record = dataclasses.asdict(self)
        record["keep"] = {gid: list(kept) for gid, kept in self.keep.items()}
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> StepRecord:
        """The record :meth:`to_dict` wrote.

        Raises:
            LassopruneError: a key is missing.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in record]
        if missing:
            raise LassopruneError(f"a pruning step record lacks {', '.join(missing)}")
        values = {n: record[n] for n in names}
        values["keep"] = {gid: tuple(int(c) for c in kept) for gid, kept in record["keep"].items()}
        values["totals"] = {gid: int(n) for gid, n in record["totals"].items()}
        return cls(**values)


@dataclass(frozen=True)
class IterativeResult:
    """What :func:`prune_iteratively` returns: the final model, one record per step, the limits asked.

    Attributes:
        model: the pruned network.
        steps: the records of every step, in order.
        targets: ``{"macs": T}``, ``{"params": T}`` or both (two limits): fractions of the original.
    """

    model: nn.Module
    steps: tuple[StepRecord, ...]
    targets: dict[str, float]

    @property
    def keep(self) -> dict[str, tuple[int, ...]]:
        """group id -> kept channel numbers of the original group."""
        return dict(self.steps[-1].keep)

    @property
    def widths(self) -> dict[str, tuple[int, int]]:
        """group id -> (kept, total) of the original groups."""
        last = self.steps[-1]
        return {gid: (len(kept), last.totals[gid]) for gid, kept in last.keep.items()}

    def to_dict(self) -> dict[str, Any]:
        """The last step's :meth:`PruneResult.to_dict` restated against the original model, plus ``steps``.

        Counts, ratios, ``target``, per-group ``kept`` / ``total`` and ``residual_channels`` refer to the
        original model; ``seconds`` sums the steps' pruning times (fine-tuning excluded); ``diagnostics``,
        ``reconstruction`` and ``one_shot`` are the last cut's; ``steps`` holds :meth:`StepRecord.summary`;
        ``target`` is the limit the last cut was made to.
        """
        first, last = self.steps[0], self.steps[-1]
        groups = {gid: {**entry, "kept": len(last.keep[gid]), "total": last.totals[gid]}
                  for gid, entry in last.prune["groups"].items()}
        eltwise = [gid for gid, entry in groups.items() if entry.get("eltwise")]
        total = sum(groups[gid]["total"] for gid in eltwise)
        return {
            **last.prune,
            "target": {"kind": last.kind, "ratio": self.targets[last.kind]},  # the binding limit
            "macs_before": first.macs_before, "macs_after": last.macs_after,
            "params_before": first.params_before, "params_after": last.params_after,
            "macs_ratio": last.macs_ratio, "params_ratio": last.params_ratio,
            "groups": groups,
            "residual_channels": {"total": total, "removed": total - sum(groups[g]["kept"] for g in eltwise)},
            "seconds": sum(float(step.prune["seconds"]) for step in self.steps),
            "steps": [step.summary() for step in self.steps],
        }


def prune_iteratively(
    model: nn.Module,
    example_inputs: torch.Tensor,
    settings: PruneSettings,
    data: Batches | None = None,
    *,
    steps: int | None = None,
    finetune: StepFinetune | None = None,
    evaluate: Evaluate | None = None,
    seed: int = 0,
    inplace: bool = False,
    done: Sequence[StepRecord] = (),
    on_step: Callable[[nn.Module, StepRecord], None] | None = None,
) -> IterativeResult:
    """Prune ``model`` to ``settings``' target in ``steps`` cuts (module docstring), fine-tuning between them.

    Args:
        model: the network to prune; when resuming (``done`` given), the model after the last finished step.
        example_inputs, data, seed, evaluate: as for :func:`~lassoprune.pruning.api.prune_with`, for every
            cut (data-driven methods score, and reconstruction refits, on ``data`` at each step).
        settings: what to prune; ``steps`` None reads ``settings.steps``.
        finetune: ``finetune(model, step)`` trains the model in place after every cut but the last and
            returns its metrics (or None); None: no fine-tuning between cuts.
        inplace: cut ``model`` itself (else a copy; later steps always cut the model of the step before).
        done: records of the steps already finished (resume); they are not redone.
        on_step: called with the model and the record after each step (and its fine-tuning), e.g. to save both.

    Returns:
        :class:`IterativeResult`; one step makes the same cut as ``prune_with``.

    Raises:
        LassopruneError: as :func:`check_steps`; no size target; more finished steps than ``steps``; a cut
            that went below the next step's target.
    """
    k = check_steps(settings, steps)
    targets = {kind: ratio for kind, ratio in (("macs", settings.target_macs), ("params", settings.target_params))
               if ratio is not None}
    if not targets:
        raise LassopruneError("pruning in steps needs a size target: give target_macs or target_params "
                              "(a threshold prune is one prune_with call)")
    schedules = {kind: geometric_schedule(ratio, k) for kind, ratio in targets.items()}
    if len(done) > k:
        raise LassopruneError(f"{len(done)} steps are recorded as finished, but the prune has only {k}")
    records = list(done)
    batches = list(data) if data is not None else None
    current = model
    for step in range(len(records) + 1, k + 1):
        started = time.perf_counter()
        previous = records[-1] if records else None
        relative = {kind: schedule[step - 1] / (_ratio(previous, kind) if previous else 1.0)
                    for kind, schedule in schedules.items()}
        result = prune_with(current, example_inputs, _step_settings(settings, relative), data=batches, seed=seed,
                            inplace=(inplace or step > 1) and len(targets) == 1, evaluate=evaluate)
        current = result.model
        metrics = finetune(current, step) if finetune is not None and step < k else None
        assert result.target is not None  # a size target, never a threshold
        kind = str(result.target.kind.value)
        record = _record(step, (schedules[kind][step - 1], relative[kind]), result, previous, metrics, started)
        get_logger().info("step %d/%d: %.4f of the %s kept (target %.4f)", step, k, _ratio(record, kind),
                          kind, record.target)
        records.append(record)
        if on_step is not None:
            on_step(current, record)
    return IterativeResult(model=current, steps=tuple(records), targets=targets)


def _step_settings(settings: PruneSettings, relative: Mapping[str, float]) -> PruneSettings:
    """``settings`` for one cut: the limits relative to the current model (those already met dropped), one step."""
    limits = {kind: ratio for kind, ratio in relative.items() if ratio < 1}
    if not limits:
        raise LassopruneError(f"a step's target must keep less than the whole current model, got "
                              f"{', '.join(f'{r:.4f} of the {k}' for k, r in relative.items())}: the cut before "
                              "went below the schedule (use fewer steps)")
    return dataclasses.replace(settings, target_macs=limits.get("macs"), target_params=limits.get("params"),
                               steps=1)


def _ratio(record: StepRecord, kind: str) -> float:
    return record.macs_ratio if kind == "macs" else record.params_ratio


def _record(step: int, targets: tuple[float, float], result: PruneResult, previous: StepRecord | None,
            finetuned: dict[str, Any] | None, started: float) -> StepRecord:
    """The record of a step: counts and keep sets restated against the original model.

    ``targets``: the step's target of the kind it was cut to, of the original and of the model it cut.
    """
    keep = {g.id: tuple(result.keep.get(g.id, range(g.num_channels))) for g in result.groups}
    if previous is None:
        totals = {g.id: g.num_channels for g in result.groups}
        composed = keep
        macs_before, params_before = result.macs_before, result.params_before
    else:
        totals, macs_before, params_before = previous.totals, previous.macs_before, previous.params_before
        composed = _compose(previous.keep, keep, result)
    assert result.target is not None
    return StepRecord(
        step=step, kind=str(result.target.kind.value), target=targets[0], relative_target=targets[1],
        macs_before=macs_before, params_before=params_before,
        macs_after=result.macs_after, params_after=result.params_after, keep=composed, totals=dict(totals),
        one_shot=result.final_one_shot, finetuned=finetuned, seconds=time.perf_counter() - started,
        prune=result.to_dict(),
    )


def _compose(before: Mapping[str, tuple[int, ...]], step: Mapping[str, tuple[int, ...]],
             result: PruneResult) -> dict[str, tuple[int, ...]]:
    """Keep sets of a later cut (channel numbers of the cut model) as channel numbers of the original groups."""
    sizes = {g.id: g.num_channels for g in result.groups}
    if set(step) != set(before) or any(sizes[gid] != len(before[gid]) for gid in step):
        raise LassopruneError("the channel groups of the pruned model differ from those of the model before "
                              "the cut; this model cannot be pruned in steps (use steps: 1)")
    return {gid: tuple(before[gid][c] for c in kept) for gid, kept in step.items()}


def _headline(metrics: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if metrics is None else {k: metrics[k] for k in HEADLINE if k in metrics}
