"""The benchmark protocol's methods and profiles (``benchmarks/compare.py``): what each row name and study means.

:data:`METHODS` maps a row name to its prune settings and the steps around the cut; :data:`PROFILES` holds
everything that must stay the same across the rows of one study (dataset, models, seeds, targets, budgets).
The lasso methods' options come from :mod:`bench.settings`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from bench.settings import APIB_LAPLACE, CROSS_FIT
from compare_peers import DEFAULT_REG

from lassoprune.pipeline.config import FINETUNE_LR_AFTER_RECONSTRUCTION
from lassoprune.pruning import PruneSettings

TOLERANCE = 0.01  # |MACs kept - target| allowed, as a fraction of the original (lp.prune's rule)
PHASES = ("select", "pilot", "table")


def row_cut(method: str, options: dict[str, Any] | None = None, **settings: Any) -> PruneSettings:
    """A row's prune settings: the library's :class:`PruneSettings`, with every choice that defines the row
    spelled out (reconstruction off unless asked, the residual stream cut unless kept, free widths) so that a
    later change of the library's defaults cannot change what a finished row means."""
    fixed = {"reconstruct": False, "prune_residual": True, "round_to": None, **settings}
    return PruneSettings(method=method, options=dict(options or {}), **fixed)


@dataclass(frozen=True)
class Method:
    """What one row's name stands for.

    Attributes:
        prune: the cut's settings (the target and calibration size are the row's and the profile's); for a
            Torch-Pruning peer the placeholder the config carries (its ``prune`` stage is replaced).
        sparse: sparse training before the cut: ``dwgl`` or ``group-lasso`` (the
            library's regularisers, proximal steps, steered towards the row's
            target) or ``tp-group-sl`` (Torch-Pruning's
            GroupNormPruner hooked after every backward pass); None = none.
        peer: a Torch-Pruning pruner that makes the cut instead of ``lp.prune``.
        lr_from: the row whose selected fine-tuning learning rate this one uses (None = its own ``select``).
        lr: a fixed fine-tuning learning rate chosen elsewhere on held-out images (no ``select`` rows): the
            reconstructed rows use the library's rate after reconstruction, chosen on 5,000 held-out
            training images (docs/BENCHMARKS.md, "Defaults of the post-training path").
    """

    prune: PruneSettings
    sparse: str | None = None
    peer: str | None = None
    lr_from: str | None = None
    lr: float | None = None


#: The rows spell out APIB's kernels and lasso (docs/METHODS.md 1.1; APIB's final setting, the lasso methods' library
#: defaults: :data:`bench.settings.APIB_LAPLACE`) so that a later change of defaults cannot change what a finished
#: row means; APIB cuts only the inner channel of each residual block (``prune_residual=False``).
METHODS: dict[str, Method] = {
    "l1": Method(row_cut("l1")),
    "hsic-ib": Method(row_cut("hsic-ib", APIB_LAPLACE, prune_residual=False)),
    "tp-magnitude": Method(row_cut("l1"), peer="tp-magnitude"),
    "l1-rc": Method(row_cut("l1", reconstruct=True), lr=FINETUNE_LR_AFTER_RECONSTRUCTION),
    "hsic-ib-rc": Method(row_cut("hsic-ib", APIB_LAPLACE, prune_residual=False, reconstruct=True),
                         lr=FINETUNE_LR_AFTER_RECONSTRUCTION),
    "random": Method(row_cut("random")),
    "sglp-ib": Method(row_cut("sglp-ib", CROSS_FIT, prune_residual=False)),
    "stlp-ib": Method(row_cut("stlp-ib", CROSS_FIT, prune_residual=False)),
    "class-lasso": Method(row_cut("class-lasso", CROSS_FIT, prune_residual=False), lr_from="hsic-ib"),
    "tp-group-sl": Method(row_cut("l1"), sparse="tp-group-sl", peer="tp-group-sl"),
    "dwgl": Method(row_cut("dwgl-vote"), sparse="dwgl"),
    "group-lasso": Method(row_cut("dwgl-vote"), sparse="group-lasso"),
    "bn-scale": Method(row_cut("bn-scale")),
    "taylor": Method(row_cut("taylor")),
    "sglp-ib-rc": Method(row_cut("sglp-ib", CROSS_FIT, prune_residual=False, reconstruct=True),
                         lr=FINETUNE_LR_AFTER_RECONSTRUCTION),
    "l1-auto": Method(row_cut("l1", round_to="auto"), lr_from="l1"),
}
"""Every row name, in the order rows are run (the most informative first)."""

PRETRAINED = {
    "resnet20": "pretrained:resnet20-fashion-mnist",
    "resnet56": "pretrained:resnet56-fashion-mnist",
    "vgg16": "pretrained:vgg16-fashion-mnist",
}


@dataclass(frozen=True)
class Profile:
    """Everything that must stay the same across the rows of one study.

    Attributes:
        dataset: a registered dataset name (``lassoprune info --datasets``).
        models: the models of the table, in order; the first one also runs ``select`` and ``pilot``.
        checkpoints: model -> model file (``pretrained:NAME`` or a path) of the converged baseline.
        seeds: model -> seeds of its table rows (a model not listed: seed 0).
        targets: MACs fractions kept.
        model_targets: model -> its own ``(MACs kept, params kept)`` pairs instead of ``targets`` (None: no
            limit of that kind; both: two limits).
        methods: row names (:data:`METHODS`).
        finetune_epochs, finetune_subset: the table's fine-tuning (None = all training images).
        lr_candidates: fine-tuning learning rates tried by ``select``.
        select_epochs, select_subset, select_target: ``select``'s short fine-tuning and its target.
        pilot_methods, pilot_epochs: the ``pilot`` rows (at ``select_target``, seed 0).
        validation_size: training images held out for ``select`` and ``pilot``.
        sparse_epochs, sparse_lr, sparse_subset: the sparse-training budget of ``dwgl``, ``group-lasso`` and
            ``tp-group-sl`` (``sparse_subset`` training images, None = all, whatever the row's phase).
        equal_epochs: rows without sparse training fine-tune ``sparse_epochs`` longer, so that every row of the
            table trains for the same number of epochs (sparse + fine-tuning).
        dwgl_lam, dwgl_alpha: DWGL strength and coefficient slope (linear schedule).
        tp_reg: GroupNormPruner's ``reg``.
        tp_weight_decay: SGD weight decay during Torch-Pruning's sparse learning (its benchmark turns it off).
        calib_size: class-balanced calibration images (scoring and BatchNorm re-estimation).
        batch_size: training batch size.
        select_from: another profile whose ``select`` phase (the same candidates, budget and target) gives
            this one's learning rates, read from that profile's runs directory (``--select-runs``); None: its own.
        fixed_lr: the fine-tuning rate of every row without one of its own (:attr:`Method.lr`), chosen by
            another study; no ``select`` or ``pilot`` phase. None: chosen by ``select``.
        cuts_from: another profile whose finished rows give this one's cuts: a row whose prune settings, data,
            baseline and seed equal those of the same row there copies its pruned model instead of cutting
            again (``--cuts-runs``, default ``runs/compare-<cuts_from>``); None: every row cuts.
        notes: lines printed above the tables.
    """

    name: str
    dataset: str
    models: tuple[str, ...]
    checkpoints: dict[str, str]
    seeds: dict[str, tuple[int, ...]]
    targets: tuple[float, ...]
    methods: tuple[str, ...]
    finetune_epochs: int
    finetune_subset: int | None
    lr_candidates: tuple[float, ...]
    select_epochs: int
    select_subset: int | None
    select_target: float
    pilot_methods: tuple[str, ...]
    pilot_epochs: int
    validation_size: int
    sparse_epochs: int
    sparse_lr: float
    sparse_subset: int | None = None
    dwgl_lam: float = 0.5
    dwgl_alpha: float = 1.0
    tp_reg: float = DEFAULT_REG
    tp_weight_decay: float = 0.0
    calib_size: int = 500
    batch_size: int = 64
    test_images: int | None = 10_000  # the test split's size: the SE floor of the report (None: no floor)
    select_from: str | None = None
    fixed_lr: float | None = None
    cuts_from: str | None = None
    equal_epochs: bool = False
    notes: tuple[str, ...] = ()
    model_targets: dict[str, tuple[tuple[float | None, float | None], ...]] = dataclasses.field(default_factory=dict)


STANDARD = Profile(
    name="standard", dataset="fashion-mnist", models=("resnet20", "resnet56"), checkpoints=PRETRAINED,
    seeds={"resnet20": (0, 1), "resnet56": (0,)}, targets=(0.5, 0.33), methods=tuple(METHODS),
    finetune_epochs=2, finetune_subset=None, lr_candidates=(0.01, 0.001), select_epochs=1,
    select_subset=20000, select_target=0.33, pilot_methods=("l1", "hsic-ib", "tp-magnitude"),
    pilot_epochs=3, validation_size=5000, sparse_epochs=2, sparse_lr=0.01, tp_reg=5e-3,
    notes=("tp-group-sl uses reg 5e-3, ten times Torch-Pruning's CIFAR value (meant for 100 sparse epochs), "
           "because its sparse budget here is 2 epochs",),
)  # fmt: skip
FULL = Profile(
    name="full", dataset="fashion-mnist", models=("resnet56",), checkpoints=PRETRAINED,
    seeds={"resnet56": (0, 1)}, targets=(0.5, 0.33), methods=tuple(METHODS),
    finetune_epochs=30, finetune_subset=None, lr_candidates=(0.01, 0.001), select_epochs=5,
    select_subset=None, select_target=0.33, pilot_methods=(), pilot_epochs=1, validation_size=5000,
    sparse_epochs=10, sparse_lr=0.01, batch_size=128,
)
TINY = dataclasses.replace(
    FULL, name="tiny", dataset="synthetic", models=("resnet20",), checkpoints={},
    seeds={"resnet20": (0, 1)}, targets=(0.5,), methods=("l1", "hsic-ib", "dwgl", "tp-group-sl"),
    finetune_epochs=1, select_epochs=1, select_target=0.5, pilot_methods=("l1",), pilot_epochs=2,
    validation_size=200, sparse_epochs=1, calib_size=100, batch_size=50, test_images=None,
    notes=("the full profile with a smoke-test budget on the synthetic dataset, for a model given with "
           "--checkpoint; numbers mean nothing",),
)  # fmt: skip
SHORT = dataclasses.replace(
    STANDARD, name="short", seeds={"resnet20": (0, 1, 2), "resnet56": (0, 1)},
    methods=("l1", "hsic-ib", "sglp-ib", "stlp-ib", "class-lasso", "tp-magnitude", "random", "l1-rc",
             "sglp-ib-rc"),
    finetune_epochs=1, finetune_subset=6000, pilot_methods=(), select_from="standard",
    notes=(("a fine-tuning budget of 1 epoch on 6,000 training images (1/20 of the standard's): what a user "
            "with little compute for fine-tuning sees; learning rates from the standard profile's select phase"),),
)  # fmt: skip
#: The seeds' headline regimes: VGG-16 at the sGLP-IB paper's -61% FLOPs alone and with its -85% parameters as a
#: second limit; ResNet-56 at 0.2 and 0.1 of the MACs and at DWGL's 75% compression (0.25 of the parameters).
HEADLINE_TARGETS = {"vgg16": ((0.39, None), (0.39, 0.15)), "resnet56": ((0.2, None), (0.1, None), (None, 0.25))}
HEADLINE = Profile(
    name="headline", dataset="fashion-mnist", models=("vgg16", "resnet56"), checkpoints=PRETRAINED,
    seeds={"vgg16": (0, 1), "resnet56": (0, 1)}, targets=(), model_targets=HEADLINE_TARGETS,
    methods=("sglp-ib", "stlp-ib", "hsic-ib", "l1", "random", "tp-magnitude", "tp-group-sl", "sglp-ib-rc",
             "hsic-ib-rc", "l1-rc", "dwgl"),
    finetune_epochs=5, finetune_subset=None, lr_candidates=(0.01, 0.001), select_epochs=1, select_subset=20000,
    select_target=0.39, pilot_methods=("l1", "sglp-ib", "tp-magnitude"), pilot_epochs=8, validation_size=5000,
    sparse_epochs=2, sparse_lr=0.01, tp_reg=5e-3,
    notes=("the fine-tuning budget (5 epochs) is the least the ResNet-56 0.1 pilot supports (going from half an "
           "epoch to 1.5 still gained 1.1-1.4 points, docs/BENCHMARKS.md); this profile's own pilot phase has not run",),
)  # fmt: skip
HEADLINE_ONESHOT = dataclasses.replace(
    HEADLINE, name="headline-oneshot", finetune_epochs=0, pilot_methods=(),
    methods=("sglp-ib", "stlp-ib", "hsic-ib", "l1", "random", "tp-magnitude", "sglp-ib-rc", "hsic-ib-rc", "l1-rc"),
    notes=("post-training: the cut, BatchNorm re-estimated on the calibration images (and least-squares "
           "reconstruction for the -rc rows), no fine-tuning; pruned top-1 = final top-1",),
)  # fmt: skip
#: The headline regimes after a short fine-tuning, from the post-training rows' cuts: 1 epoch of 10,000 training
#: images (a sixth of an epoch) at lr 0.01 (every one-shot cut's choice in the standard profile's select phase) or
#: the library's rate after reconstruction (the ``-rc`` rows). What this 2-core CPU affords, not a pilot's choice.
HEADLINE_SHORT = dataclasses.replace(
    HEADLINE_ONESHOT, name="headline-short", finetune_epochs=1, finetune_subset=10_000, fixed_lr=0.01,
    cuts_from="headline-oneshot",
    notes=("the headline-oneshot rows' cuts, then 1 epoch of 10,000 training images (a sixth of an epoch) at "
           "lr 0.01 (the -rc rows: the library's rate after reconstruction); a budget this CPU affords, not "
           "chosen by a pilot",),
)  # fmt: skip
#: The DWGL paper's rows: ResNet-56 at its 75% compression (0.25 of the parameters) and at 0.5 of the MACs, DWGL
#: against plain group lasso (both steered towards the target, then ``dwgl-vote``), Torch-Pruning's group sparse
#: learning and the best one-shot method, every row training the same number of epochs on the same images.
DWGL_PAPER = Profile(
    name="dwgl-paper", dataset="fashion-mnist", models=("resnet56",), checkpoints=PRETRAINED,
    seeds={"resnet56": (0, 1)}, targets=(), model_targets={"resnet56": ((None, 0.25), (0.5, None))},
    methods=("dwgl", "group-lasso", "tp-group-sl", "sglp-ib-rc"),
    finetune_epochs=1, finetune_subset=10_000, lr_candidates=(0.01, 0.001), select_epochs=1, select_subset=5000,
    select_target=0.5, pilot_methods=(), pilot_epochs=1, validation_size=5000,
    sparse_epochs=1, sparse_lr=0.01, sparse_subset=10_000, equal_epochs=True, tp_reg=5e-3,
    notes=("every row trains 2 epochs of 10,000 training images: sparse training then fine-tuning, or (one-shot "
           "rows) fine-tuning alone; a small budget for a 2-core CPU",),
)  # fmt: skip
PROFILES: dict[str, Profile] = {p.name: p for p in (STANDARD, FULL, TINY, SHORT, HEADLINE, HEADLINE_ONESHOT,
                                                    HEADLINE_SHORT, DWGL_PAPER)}
