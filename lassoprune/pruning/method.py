"""Pruning methods as plug-ins: one :class:`MethodSpec` per method, one registry.

A method is one module under :mod:`lassoprune.pruning.methods` that calls
:func:`register_method` with its spec (every module there is imported when
:mod:`lassoprune.pruning` is, so adding a file is all it takes). The spec says
everything :func:`lassoprune.prune`, the pipeline config and the command line
need to know, so none of them ever branches on a method's name:

- ``options``: a frozen dataclass derived from :class:`MethodOptions`; its
  fields are the method's keyword options, with defaults, checked by
  :meth:`MethodOptions.validate` before any copy, trace or forward pass. An
  option the method does not have is an error listing the ones it has.
- ``needs_data``: whether it reads calibration batches.
- ``target``: :class:`TargetUse`, whether it needs a MACs / params target or
  also accepts a threshold of its own instead.
- ``decides_widths``: True when ``run`` returns keep sets (the lasso methods,
  ``dwgl-vote``); False when it returns per-channel scores that the
  allocation (``global`` / ``uniform``) turns into widths. A method that
  decides widths must keep every group at or above ``ctx.floors`` (checked),
  and says with ``rounds_widths`` whether it honours ``ctx.round_to`` and
  with ``keeps_units`` whether its keep sets take whole units of the groups a
  grouped convolution reads or writes (``ChannelGroup.blocks``); a
  width-deciding method that does not keeps such groups whole.
- ``run(ctx) -> Selection``.

Example (a complete method; see ``tests/pruning/test_method_plugins.py``)::

    @dataclass(frozen=True)
    class KeepFirstOptions(MethodOptions):
        offset: float = 0.0

    def keep_first(ctx: MethodContext) -> Selection:
        scores = {g.id: torch.arange(g.num_channels, 0, -1, dtype=torch.float64) + ctx.options.offset
                  for g in ctx.analysis.groups}
        return Selection(keep={}, scores=scores)

    register_method(MethodSpec("keep-first", keep_first, "keeps the first channels", KeepFirstOptions))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lassoprune.channels import CostModel, GroupAnalysis, Target
from lassoprune.errors import LassopruneError, UnknownOptionError
from lassoprune.pruning.search import SearchRecord
from lassoprune.utils.enums import NamedEnum
from lassoprune.utils.registry import Registry

Batch = tuple[torch.Tensor, torch.Tensor]


class TargetUse(NamedEnum):
    """How a method is told how much to prune."""

    REQUIRED = "required"  # target_macs or target_params
    OR_THRESHOLD = "or-threshold"  # a target, or the method's own ``threshold`` option instead


def option(default: Any, help: str) -> Any:
    """A field of a :class:`MethodOptions` dataclass with its help text (units, range) for listings."""
    return field(default=default, metadata={"help": help})


#: The name of the one option that holds a method's :class:`ExperimentalOptions`.
EXPERIMENTAL = "experimental"


@dataclass(frozen=True)
class ExperimentalOptions:
    """Base of a method's ablation settings: ones that measured worse than the defaults and stay for research.

    A method that has them declares one option field ``experimental`` whose
    default is an instance of its subclass; users pass a dict
    (``lp.prune(..., experimental={"kernel": "gaussian"})``, ``prune.options.experimental``
    in a run config, ``--experimental kernel=gaussian`` on the command line).
    Every setting is listed by ``--list-methods`` under "experimental".
    """

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def parse(cls, method: str, value: Any) -> ExperimentalOptions:
        """From a dict (or an instance, or None for the defaults); an unknown key lists the valid ones."""
        if value is None or isinstance(value, cls):
            return value if value is not None else cls()
        if not isinstance(value, Mapping):
            raise LassopruneError(f"{method}: experimental takes a mapping of settings, got {type(value).__name__}")
        unknown = sorted(set(value) - set(cls.names()))
        if unknown:
            raise UnknownOptionError(f"{method} experimental", unknown[0], cls.names())
        return cls(**value)

    def changed(self) -> dict[str, Any]:
        """The settings that differ from their defaults (JSON-safe)."""
        default = type(self)()
        return {f.name: _json_safe(getattr(self, f.name)) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}


@dataclass(frozen=True)
class MethodOptions:
    """Base of every method's options: a frozen dataclass of keyword options with defaults.

    Subclasses add fields (``name: float = option(0.1, "help, with units and range")``;
    the help shows in ``lassoprune prune --list-methods``) and override :meth:`validate`,
    which must refuse every option value the method would ignore. Ablation settings go
    in one ``experimental`` field (:class:`ExperimentalOptions`).
    """

    @classmethod
    def names(cls) -> list[str]:
        """The option names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def experimental_type(cls) -> type[ExperimentalOptions] | None:
        """The method's :class:`ExperimentalOptions` subclass, or None when it has none."""
        for f in dataclasses.fields(cls):
            if f.name == EXPERIMENTAL:
                return type(f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        return None

    @classmethod
    def parse(cls, method: str, options: Mapping[str, Any]) -> MethodOptions:
        """Build and validate from keyword options.

        Raises:
            UnknownOptionError: an option the method does not have (the message
                lists the ones it has).
            LassopruneError: a value out of range, or one the method would ignore.
        """
        valid = cls.names()
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise UnknownOptionError(method, unknown[0], valid)
        options = dict(options)
        experimental = cls.experimental_type()
        if experimental is not None:
            options[EXPERIMENTAL] = experimental.parse(method, options.get(EXPERIMENTAL))
        opts = cls(**options)
        opts.validate(method)
        return opts

    def validate(self, method: str) -> None:
        """Raise :class:`LassopruneError` for a value out of range or ignored (the message names the option)."""

    def replaces_target(self) -> bool:
        """True when these options set a threshold that stands in for a target (``TargetUse.OR_THRESHOLD``)."""
        return False


@dataclass(frozen=True)
class NoOptions(MethodOptions):
    """The options of a method that has none."""


@dataclass(frozen=True)
class MethodContext:
    """What a method's ``run`` receives.

    Attributes:
        model: the (copied) network being pruned, in eval mode.
        analysis: its channel groups and Torch-Pruning graph.
        cost_model: MACs / params as functions of kept counts.
        target: the cost target, or None when the options' threshold replaces it.
        floors: ``(G,)`` the fewest channels each group may keep (``groups`` order).
        batches: calibration batches ``(x (B, C, H, W), y (B,))``, or None.
        seed: seed of random choices.
        options: the method's validated options (its :class:`MethodOptions` subclass).
        round_to: kept widths should be multiples of this (or the whole group).
        example_inputs: one input, ``(1, C, H, W)``.
    """

    model: nn.Module
    analysis: GroupAnalysis
    cost_model: CostModel
    target: Target | None
    floors: np.ndarray
    batches: Sequence[Batch] | None
    seed: int
    options: Any
    round_to: int | None = None
    example_inputs: torch.Tensor | None = None


@dataclass(frozen=True)
class GroupDiagnostics:
    """What a method says about one group beyond its width.

    Attributes:
        note: one short line printed beside the group's width by ``lassoprune prune`` (may be empty).
        values: method-specific numbers (JSON-safe), e.g. the lasso's ``lambda_max`` and support size,
            a vote's counts.
    """

    note: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**({"note": self.note} if self.note else {}), **self.values}


@dataclass(frozen=True)
class ClassStructureRecord:
    """The structure a method put over the classes.

    Attributes:
        kind: ``graph`` or ``tree``.
        source: ``output`` (one structure, from the penultimate features' class means) or ``layer``
            (one per group, from that group's own features; then ``edges`` and ``groups`` are empty).
        edges: the class graph's edges ``(m, l, weight)``.
        groups: the class tree's groups ``((classes...), weight)``.
    """

    kind: str
    source: str = "output"
    edges: tuple[tuple[int, int, float], ...] = ()
    groups: tuple[tuple[tuple[int, ...], float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "from": self.source}
        if self.kind == "graph" and self.source == "output":
            out["edges"] = [list(e) for e in self.edges]
        if self.kind == "tree" and self.source == "output":
            out["groups"] = [[list(g), w] for g, w in self.groups]
        return out


@dataclass(frozen=True)
class Diagnostics:
    """A method's diagnostics, typed: read by the command line, reports, ``PruneResult.to_dict`` and benchmarks.

    Attributes:
        groups: group id -> :class:`GroupDiagnostics` (groups the method says nothing about are absent).
        search: how the method's strength was set (:class:`~lassoprune.pruning.search.SearchRecord`), or None.
        structure: the structure over the classes, or None.
        record: a small dict stored with the pruned model file (e.g. the vote's ``tau``).
        seconds: wall time of the method's phases.
        settings: the settings the method ran with (JSON-safe), for the record.
        extra: anything else the method reports (JSON-safe), e.g. ``dwgl-vote``'s per-voter lists.
    """

    groups: dict[str, GroupDiagnostics] = field(default_factory=dict)
    search: SearchRecord | None = None
    structure: ClassStructureRecord | None = None
    record: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (the per-group records are merged into ``PruneResult.to_dict``'s ``groups``)."""
        return {
            "search": self.search.to_dict() if self.search is not None else None,
            "structure": self.structure.to_dict() if self.structure is not None else None,
            "record": self.record, "seconds": self.seconds, "settings": self.settings, "extra": self.extra,
        }


@dataclass(frozen=True)
class Selection:
    """A method's answer.

    Attributes:
        keep: group id -> kept channel numbers (methods that decide widths; else empty).
        scores: group id -> ``(C,)`` importance, higher = keep.
        diagnostics: :class:`Diagnostics`.
    """

    keep: dict[str, tuple[int, ...]]
    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    diagnostics: Diagnostics = field(default_factory=Diagnostics)


@dataclass(frozen=True)
class MethodSpec:
    """A registered pruning method (module docstring).

    Attributes:
        name: the registry name, e.g. ``"sglp-ib"``.
        run: ``run(ctx) -> Selection``.
        summary: one line for listings.
        options: its options dataclass.
        needs_data: reads calibration batches.
        target: :class:`TargetUse`.
        decides_widths: ``run`` returns keep sets (else scores for the allocation).
        rounds_widths: a width-deciding method that rounds its widths to
            ``ctx.round_to`` itself; one that does not (the default) only gets
            its floors raised to ``round_to``, with a warning.
        keeps_units: a width-deciding method whose keep sets are unions of
            whole units of blocked groups (checked); one that is not keeps
            those groups whole.
        prune_residual: the method's default for ``lp.prune(prune_residual=None)``:
            whether residual (eltwise) groups may be cut.
    """

    name: str
    run: Callable[[MethodContext], Selection]
    summary: str = ""
    options: type[MethodOptions] = NoOptions
    needs_data: bool = False
    target: TargetUse = TargetUse.REQUIRED
    decides_widths: bool = False
    rounds_widths: bool = False
    keeps_units: bool = False
    prune_residual: bool = True

    def parse_options(self, options: Mapping[str, Any]) -> MethodOptions:
        """This method's validated options (:meth:`MethodOptions.parse`)."""
        return self.options.parse(self.name, options)

    def uses_threshold(self, options: MethodOptions) -> bool:
        """True when ``options`` set a threshold that replaces the cost target (``TargetUse.OR_THRESHOLD`` only)."""
        return self.target is TargetUse.OR_THRESHOLD and options.replaces_target()

    def check_target(self, options: MethodOptions, has_target: bool) -> None:
        """Raise a clear error unless the target / threshold combination suits this method."""
        threshold = self.uses_threshold(options)
        if threshold and has_target:
            raise LassopruneError(f"{self.name}: give either threshold or a target (target_macs / target_params), "
                                  "not both")
        if not threshold and not has_target:
            alternative = " or threshold" if self.target is TargetUse.OR_THRESHOLD else ""
            raise LassopruneError(f"{self.name} needs a target: give exactly one of target_macs or target_params "
                                  f"(a fraction of the original to keep){alternative}")


METHODS: Registry[MethodSpec] = Registry("pruning method")


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry (a name registered twice is an error)."""
    return METHODS.add(spec.name, spec)


def get_method(name: str) -> MethodSpec:
    """The spec of method ``name``; an unknown name lists the valid ones."""
    return METHODS.get(name)


def list_methods() -> list[str]:
    """Every registered pruning method, sorted."""
    return METHODS.names()


def describe_methods() -> list[dict[str, Any]]:
    """One JSON-safe record per method: name, summary, needs data, target use, residual default, options
    (``experimental``: its ablation settings, listed apart)."""
    records = []
    for name, spec in METHODS.items():
        options = {f.name: _described(f) for f in dataclasses.fields(spec.options) if f.name != EXPERIMENTAL}
        experimental = spec.options.experimental_type()
        ablations = {f.name: _described(f) for f in dataclasses.fields(experimental)} if experimental else {}
        records.append({"name": name, "summary": spec.summary, "needs_data": spec.needs_data,
                        "target": spec.target.value, "decides_widths": spec.decides_widths,
                        "prune_residual": spec.prune_residual, "options": options, "experimental": ablations})
    return records


def _described(f: dataclasses.Field) -> dict[str, Any]:
    return {"default": _default(f), "help": f.metadata.get("help", "")}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return None
    return _json_safe(value)


def _json_safe(value: Any) -> Any:
    return value.value if isinstance(value, NamedEnum) else value
