"""Side by side: lassoprune's pruning methods and Torch-Pruning's own pipeline, same models, data and budgets.

For each model (Fashion-MNIST, 1 input channel, 10 classes, padded to 32x32;
pretrained with the engine and cached under RUNS/pretrain) and each MACs
target (fraction kept), every method cuts the same pretrained network:

* ours, through ``lp.prune`` with the same 500-image class-balanced
  calibration set: ``sglp-ib``, ``stlp-ib``, ``hsic-ib``, ``class-lasso``,
  ``l1``, ``bn-scale``, ``random``;
* ``dwgl``: sparse training with the DWGL regulariser (``fit(...,
  regularizer=...)``, proximal steps), then ``lp.prune(method="dwgl-vote")``;
* Torch-Pruning's pipeline through its own API (``benchmarks/compare_peers.py``):
  ``tp-magnitude`` (DepGraph + GroupMagnitudeImportance, no sparse learning)
  and ``tp-group-sl`` (GroupNormPruner: group sparse learning for the same
  sparse budget as ``dwgl``, then the cut). Torch-Pruning takes a channel
  ``pruning_ratio``; the ratio keeping the MACs target within 1% is found by
  bisection on deep copies.

After every cut, for every method alike: BatchNorm statistics re-estimated on
the calibration (training) images, evaluation ("pruned"), fine-tuning with
the same budget (epochs, lr, training subset, seed), evaluation ("final").
MACs and parameters are counted by lassoprune for one image; latency is the
median of interleaved forward passes (dense and pruned alternating, torch
eager, batch 64) so the ratio shares the machine's noise.

Each finished (model, method, target) row is written at once to
RUNS/results.json (atomically); a rerun skips finished rows, and pretrained
and sparse-trained models are cached, so an interrupted run resumes. The
results file remembers the profile's settings and refuses to mix rows of
other settings. The Markdown tables (one per model, settings above) are
printed and written to RUNS/table.md.

Profiles:

``--quick``  CPU, under an hour on 2 cores: resnet20 and resnet56, each the
             shipped ``lassoprune/pretrained/<model>_fashion_mnist.pt`` when
             it exists (now the converged 30-epoch baselines; the quick tables
             in docs/BENCHMARKS.md were made with the earlier 2-epoch models),
             else trained here (2 epochs on 20k / 10k images), fine-tune 1 epoch on 3000 images, sparse
             budget 1 epoch on 10k images, evaluation on 2000 class-stratified
             test images, all methods and targets.
``--full``   a GPU (``--device cuda``): resnet56 and vgg16 trained here for
             30 epochs on all 60k images, fine-tune 10 epochs and sparse budget
             10 epochs on all images, the whole test split.

    python benchmarks/compare.py --quick
    python benchmarks/compare.py --full --device cuda --runs runs/compare-full
    python benchmarks/compare.py --quick --models resnet20 --methods l1 tp-magnitude --targets 0.5
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import lassoprune as lp
from compare_peers import DEFAULT_REG, PEERS, peer_cut, sparse_train_group_sl
from lassoprune.analysis.latency import make_runner, time_interleaved
from lassoprune.data import BatchLoader, load_dataset, stratified_subset
from lassoprune.errors import LassopruneError
from lassoprune.io import atomic_write_json, atomic_write_text
from lassoprune.regularizers import create_regularizer
from lassoprune.training import TrainConfig, evaluate, fit
from lassoprune.training.bn_recalibration import recalibrate_batchnorm
from lassoprune.training.data_setup import calibration_batches, make_loaders
from lassoprune.utils.runtime import default_device

DATASET = "fashion-mnist"
IMAGE_SIZE = 32
IN_CHANNELS = 1
NUM_CLASSES = 10

OURS: tuple[str, ...] = ("sglp-ib", "stlp-ib", "hsic-ib", "class-lasso", "l1", "bn-scale", "random")
SPARSE: tuple[str, ...] = ("dwgl", "tp-group-sl")
METHODS: tuple[str, ...] = (*OURS, "dwgl", *PEERS)
MODELS: tuple[str, ...] = ("resnet20", "resnet56", "vgg16")
TARGETS: tuple[float, ...] = (0.5, 0.33, 0.25)
TOLERANCE = 0.01  # |MACs kept - target| allowed, as a fraction of the original (lp.prune's rule)

log = logging.getLogger("lassoprune.compare")


@dataclass(frozen=True)
class Budget:
    """A training budget: ``epochs`` over ``subset`` class-stratified training images (None = all), peak ``lr``."""

    epochs: int
    lr: float
    subset: int | None

    def describe(self) -> str:
        images = "all training images" if self.subset is None else f"{self.subset} training images"
        return f"{self.epochs} epoch{'s' if self.epochs > 1 else ''} on {images}, lr {self.lr:g}"


@dataclass(frozen=True)
class Profile:
    """Everything that must stay the same across the rows of one results file.

    Attributes:
        name: ``quick``, ``full`` (or ``tiny``, a smoke test).
        models: the models run by default.
        pretrain: per model, the budget of the dense training (SGD, cosine).
        use_shipped: start from ``lassoprune/pretrained/<model>_fashion_mnist.pt``
            when it exists instead of training.
        finetune: the fine-tuning budget after every cut (same for every method).
        sparse: the sparse-training budget of ``dwgl`` and ``tp-group-sl``.
        test_subset: class-stratified test images evaluated (None = all 10k).
        batch_size: training batch size.
        calib_size: class-balanced calibration images (scoring and BN re-estimation).
        dwgl_lam, dwgl_alpha: DWGL strength and coefficient slope (linear
            schedule); default: ``benchmarks/dwgl.py``'s.
        tp_reg: GroupNormPruner's ``reg``; default: Torch-Pruning's CIFAR
            ``group_sl`` script (tuned there for 100 sparse epochs).
        tp_weight_decay: SGD weight decay during Torch-Pruning's sparse learning
            (its benchmark script turns weight decay off while regularising).
        latency_batch, latency_warmup, latency_repeats: the interleaved timing.
        seed: seeds of every training run and subset.
        notes: extra lines printed above the tables.
    """

    name: str
    models: tuple[str, ...]
    pretrain: dict[str, Budget]
    use_shipped: bool
    finetune: Budget
    sparse: Budget
    test_subset: int | None
    batch_size: int
    calib_size: int = 500
    dwgl_lam: float = 0.5
    dwgl_alpha: float = 1.0
    tp_reg: float = DEFAULT_REG
    tp_weight_decay: float = 0.0
    latency_batch: int = 64
    latency_warmup: int = 2
    latency_repeats: int = 7
    seed: int = 0
    notes: tuple[str, ...] = field(default=())

    def settings(self) -> dict[str, Any]:
        """JSON-safe settings; a results file only accepts rows made with equal settings."""
        out = dataclasses.asdict(self)
        out.pop("models")
        out["notes"] = list(self.notes)
        return out


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick", models=("resnet20", "resnet56"),
        pretrain={"resnet20": Budget(2, 0.1, 20000), "resnet56": Budget(2, 0.1, 10000),
                  "vgg16": Budget(2, 0.05, 10000)},
        use_shipped=True, finetune=Budget(1, 0.01, 3000), sparse=Budget(1, 0.02, 10000), test_subset=2000,
        batch_size=64, tp_reg=5e-3,
        notes=("tp-group-sl uses reg 5e-3, ten times Torch-Pruning's CIFAR value, because its sparse budget "
               "here is one epoch instead of 100 (with 5e-4 group norms shrank by 6% only)",),
    ),
    "full": Profile(
        name="full", models=("resnet56", "vgg16"),
        pretrain={"resnet20": Budget(30, 0.1, None), "resnet56": Budget(30, 0.1, None),
                  "vgg16": Budget(30, 0.05, None)},
        use_shipped=False, finetune=Budget(10, 0.01, None), sparse=Budget(10, 0.02, None), test_subset=None,
        batch_size=128, latency_warmup=5, latency_repeats=20,
    ),
    "tiny": Profile(
        name="tiny", models=("resnet20",),
        pretrain={"resnet20": Budget(1, 0.1, 1000), "resnet56": Budget(1, 0.1, 500), "vgg16": Budget(1, 0.05, 500)},
        use_shipped=False, finetune=Budget(1, 0.01, 256), sparse=Budget(1, 0.02, 256), test_subset=500,
        batch_size=64, calib_size=200, latency_warmup=1, latency_repeats=3,
        notes=("smoke-test profile: numbers mean nothing",),
    ),
}  # fmt: skip


def shipped_pretrained(model: str) -> Path:
    """Where a pretrained Fashion-MNIST model of the zoo is shipped with the package."""
    return Path(lp.__file__).parent / "pretrained" / f"{model}_fashion_mnist.pt"


def file_id(path: Path) -> str:
    """First 12 hex digits of the file's SHA-256 (ties rows and sparse caches to one pretrained model)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def row_key(model: str, method: str, target: float) -> tuple[str, str, float]:
    return model, method, round(float(target), 6)


@dataclass(frozen=True)
class Cut:
    """One pruned network and what it cost to make (``details``: method-specific, JSON-safe)."""

    model: nn.Module
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    seconds: float
    details: dict[str, Any]


class Results:
    """RUNS/results.json: settings, one record per model, finished rows; written atomically after each change."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        data = json.loads(path.read_text()) if path.exists() else {}
        if data and data.get("settings") != settings:
            old = data["settings"]
            changed = sorted(k for k in set(settings) | set(old) if settings.get(k) != old.get(k))
            raise LassopruneError(
                f"{path} holds rows made with other settings (differing: {', '.join(changed)}); "
                "rerun with the same profile or choose another --runs directory"
            )
        self.settings = settings
        self.models: dict[str, dict[str, Any]] = data.get("models", {})
        self.rows: list[dict[str, Any]] = data.get("rows", [])

    def set_model(self, name: str, record: dict[str, Any]) -> None:
        """Record the model's pretrained file; rows and records of an older pretrained model are dropped."""
        old = self.models.get(name)
        if old is not None and old["pretrained_id"] != record["pretrained_id"]:
            stale = [r for r in self.rows if r["model"] == name]
            log.warning("%s: the pretrained model changed (%s -> %s); dropping its %d finished rows",
                        name, old["pretrained_id"], record["pretrained_id"], len(stale))
            self.rows = [r for r in self.rows if r["model"] != name]
            old = None
        self.models[name] = {**(old or {}), **record}
        self.save()

    def done(self) -> set[tuple[str, str, float]]:
        return {row_key(r["model"], r["method"], r["target_macs"]) for r in self.rows}

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, {"settings": self.settings, "models": self.models, "rows": self.rows})


class Bench:
    """The shared data, the cached models and the per-row pipeline of one run."""

    def __init__(self, profile: Profile, runs: Path, device: torch.device, progress: bool) -> None:
        self.profile, self.runs, self.device, self.progress = profile, runs, device, progress
        self.example = torch.zeros(1, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
        self.threads = torch.get_num_threads()
        log.info("loading %s: calibration set, test images, training subsets", DATASET)
        self.calib = calibration_batches(DATASET, image_size=IMAGE_SIZE, size=profile.calib_size, seed=profile.seed)
        self.test = self._test_batches()
        self.probe = [next(iter(self.test))]  # the engine's per-epoch evaluation: one batch, for the log only
        self.finetune_data = self._train_batches(profile.finetune, profile.seed + 1)
        self._sparse_data: BatchLoader | None = None

    def _test_batches(self) -> BatchLoader:
        test_set = load_dataset(DATASET, split="test")
        indices = None
        if self.profile.test_subset is not None:
            indices = stratified_subset(test_set.labels, self.profile.test_subset, seed=self.profile.seed)
        return BatchLoader(test_set, batch_size=256, image_size=IMAGE_SIZE, indices=indices)

    def _train_batches(self, budget: Budget, seed: int) -> BatchLoader:
        loaders = make_loaders(DATASET, image_size=IMAGE_SIZE, batch_size=self.profile.batch_size,
                               train_subset=budget.subset, seed=seed)
        assert loaders.train is not None
        return loaders.train

    @property
    def sparse_data(self) -> BatchLoader:
        if self._sparse_data is None:
            self._sparse_data = self._train_batches(self.profile.sparse, self.profile.seed + 2)
        return self._sparse_data

    def evaluate(self, model: nn.Module) -> lp.EvalResult:
        return evaluate(model, self.test, NUM_CLASSES, self.device)

    # -- models ---------------------------------------------------------------------------------------

    def pretrained(self, name: str) -> tuple[Path, str]:
        """The dense model file of ``name`` and a description of where it comes from (trained and cached once)."""
        shipped = shipped_pretrained(name)
        if self.profile.use_shipped and shipped.exists():
            return shipped, f"shipped `lassoprune/pretrained/{shipped.name}`"
        budget = self.profile.pretrain[name]
        out = self.runs / "pretrain" / name
        if not (out / "model.pt").exists():
            log.info("%s: pretraining, %s", name, budget.describe())
            data = self._train_batches(budget, self.profile.seed)
            lp.seed_everything(self.profile.seed)
            model = lp.create_model(name, num_classes=NUM_CLASSES, in_channels=IN_CHANNELS)
            cfg = TrainConfig(epochs=budget.epochs, lr=budget.lr, seed=self.profile.seed)
            fit(model, data, self.probe, cfg, num_classes=NUM_CLASSES, out_dir=out, resume=True, device=self.device,
                progress=self.progress, model_extra={"dataset": DATASET, "image_size": IMAGE_SIZE})
        return out / "model.pt", f"trained here ({budget.describe()}, SGD cosine)"

    def sparse_trained(
        self, name: str, method: str, dense_file: Path, pretrained_id: str
    ) -> tuple[nn.Module, dict[str, Any]]:
        """The dense model after ``method``'s sparse training (cached per pretrained model) and its record."""
        out = self.runs / "sparse" / f"{name}-{pretrained_id}" / method
        record_file = out / "record.json"
        if not record_file.exists():
            record = self._sparse_train(method, lp.load(dense_file), out)
            atomic_write_json(record_file, record)
        return lp.load(out / "model.pt").eval(), json.loads(record_file.read_text())

    def _sparse_train(self, method: str, model: nn.Module, out: Path) -> dict[str, Any]:
        budget, p = self.profile.sparse, self.profile
        log.info("%s sparse training, %s", method, budget.describe())
        if method == "dwgl":
            reg = create_regularizer("dwgl", model, self.example, p.dwgl_lam, "linear", p.dwgl_alpha)
            cfg = TrainConfig(epochs=budget.epochs, lr=budget.lr, seed=p.seed)
            result = fit(model, self.sparse_data, self.probe, cfg, num_classes=NUM_CLASSES, out_dir=out / "fit",
                         resume=True, device=self.device, regularizer=reg, progress=self.progress)
            seconds = sum(epoch["seconds"] for epoch in result.history)
        else:
            cfg = TrainConfig(epochs=budget.epochs, lr=budget.lr, weight_decay=p.tp_weight_decay, seed=p.seed)
            seconds = sparse_train_group_sl(model, self.example, self.sparse_data, cfg, num_classes=NUM_CLASSES,
                                            reg=p.tp_reg, device=self.device, out_dir=out / "fit",
                                            progress=self.progress, test_batches=self.probe)
        model.to("cpu").eval()
        lp.save(model, out / "model.pt")
        recalibrate_batchnorm(model.to(self.device), self.calib, self.device)
        after = self.evaluate(model)
        return {"seconds": seconds, "top1": after.top1, "worst": after.worst_class}

    # -- one row --------------------------------------------------------------------------------------

    def cut(self, method: str, start: nn.Module, target: float) -> Cut:
        """Prune a copy of ``start`` (on the CPU) with ``method`` to keep ``target`` of its MACs."""
        start = start.to("cpu").eval()
        if method in PEERS:
            c = peer_cut(method, start, self.example, target, NUM_CLASSES, self.profile.tp_reg, TOLERANCE)
            details = {"pruning_ratio": c.ratio, "evaluations": c.evaluations, "step_seconds": c.step_seconds,
                       "trials": [list(t) for t in c.trials]}
            return Cut(c.model, c.macs_before, c.macs_after, c.params_before, c.params_after, c.seconds, details)
        if method == "dwgl":
            r = lp.prune(start, self.example, method="dwgl-vote", target_macs=target, seed=self.profile.seed)
        else:
            r = lp.prune(start, self.example, method=method, target_macs=target, data=self.calib,
                         seed=self.profile.seed)
        widths = {gid: list(w) for gid, w in r.widths.items()}
        return Cut(r.model, r.macs_before, r.macs_after, r.params_before, r.params_after, r.seconds, {"widths": widths})

    def latency(self, dense: nn.Module, pruned: nn.Module) -> tuple[float, float]:
        """Median ms of one batch through ``dense`` and ``pruned``, timed interleaved in one call."""
        shape = (self.profile.latency_batch, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
        runners = [make_runner(m.eval(), shape, "torch", self.threads) for m in (dense, pruned)]
        samples = time_interleaved(runners, self.profile.latency_warmup, self.profile.latency_repeats, self.threads)
        return tuple(float(torch.tensor(s).median()) for s in samples)  # type: ignore[return-value]

    def row(self, name: str, method: str, target: float, start: nn.Module, dense: nn.Module) -> dict[str, Any]:
        cut = self.cut(method, start, target)
        pruned = cut.model.to(self.device)
        recalibrate_batchnorm(pruned, self.calib, self.device)
        before = self.evaluate(pruned)
        dense_ms, pruned_ms = self.latency(dense, pruned)
        budget = self.profile.finetune
        started = time.perf_counter()
        cfg = TrainConfig(epochs=budget.epochs, lr=budget.lr, seed=self.profile.seed)
        fit(pruned, self.finetune_data, self.probe, cfg, num_classes=NUM_CLASSES, device=self.device,
            progress=self.progress)
        finetune_seconds = time.perf_counter() - started
        after = self.evaluate(pruned)
        macs_ratio = cut.macs_after / cut.macs_before
        return {
            "model": name, "method": method, "target_macs": target,
            "macs_before": cut.macs_before, "macs_after": cut.macs_after, "macs_ratio": macs_ratio,
            "params_before": cut.params_before, "params_after": cut.params_after,
            "params_ratio": cut.params_after / cut.params_before,
            "within_tolerance": abs(macs_ratio - target) <= TOLERANCE,
            "pruned_top1": before.top1, "pruned_worst": before.worst_class,
            "final_top1": after.top1, "final_worst": after.worst_class,
            "latency_dense_ms": dense_ms, "latency_pruned_ms": pruned_ms, "latency_ratio": pruned_ms / dense_ms,
            "prune_seconds": cut.seconds, "finetune_seconds": finetune_seconds, "details": cut.details,
        }  # fmt: skip


def run_model(bench: Bench, results: Results, name: str, methods: Sequence[str], targets: Sequence[float]) -> None:
    """Every pending (method, target) row of one model, in method order (sparse training happens once)."""
    dense_file, source = bench.pretrained(name)
    pretrained_id = file_id(dense_file)
    record = results.models.get(name, {})
    if record.get("pretrained_id") != pretrained_id or "dense_top1" not in record:
        dense_eval = bench.evaluate(lp.load(dense_file).to(bench.device))
        record = {"pretrained_id": pretrained_id, "pretrained": source,
                  "dense_top1": dense_eval.top1, "dense_worst": dense_eval.worst_class}
    results.set_model(name, record)
    dense = lp.load(dense_file).to(bench.device).eval()
    done = results.done()
    pending = [(m, t) for m in methods for t in targets if row_key(name, m, t) not in done]
    log.info("%s (%s): dense top-1 %.4f; %d rows to run, %d already done",
             name, source, results.models[name]["dense_top1"], len(pending), len(methods) * len(targets) - len(pending))
    starts: dict[str, tuple[nn.Module, dict[str, Any] | None]] = {}
    for method, target in tqdm(pending, desc=name, unit="row", disable=not bench.progress):
        if method not in starts:
            starts.clear()  # keep one start model in memory
            if method in SPARSE:
                model, sparse = bench.sparse_trained(name, method, dense_file, pretrained_id)
                results.models[name][f"sparse_{method}"] = sparse
                results.save()
                starts[method] = (model, sparse)
            else:
                starts[method] = (lp.load(dense_file).eval(), None)
        start, sparse = starts[method]
        started = time.perf_counter()
        row = bench.row(name, method, target, start, dense)
        row["sparse_seconds"] = sparse["seconds"] if sparse else None
        row["pretrained_id"] = pretrained_id
        results.add(row)
        log.info("%s %s @ %g: MACs %.3f, pruned %.4f, final %.4f, latency x%.2f (%.0f s)", name, method, target,
                 row["macs_ratio"], row["pruned_top1"], row["final_top1"], row["latency_ratio"],
                 time.perf_counter() - started)


# -- report -------------------------------------------------------------------------------------------


def _acc(top1: float, worst: float) -> str:
    return f"{top1:.4f} / {worst:.3f}"


def model_table(results: Results, name: str, profile: Profile, device: str, threads: int) -> str:
    record = results.models[name]
    rows = [r for r in results.rows if r["model"] == name and r.get("pretrained_id") == record["pretrained_id"]]
    rows.sort(key=lambda r: (-r["target_macs"], METHODS.index(r["method"]) if r["method"] in METHODS else 99))
    test = "the whole test split (10000 images)" if profile.test_subset is None else (
        f"{profile.test_subset} class-stratified test images (fixed subset, seed {profile.seed})")
    sparse = [f"{m} {record[f'sparse_{m}']['top1']:.4f}" for m in SPARSE if f"sparse_{m}" in record]
    lines = [
        f"### {name} on Fashion-MNIST (`--{profile.name}` profile)",
        "",
        f"- pretrained: {record['pretrained']} (sha256 {record['pretrained_id']}); dense top-1 / worst class "
        f"{_acc(record['dense_top1'], record['dense_worst'])}",
        f"- evaluation: {test}; accuracies are top-1 / worst-class accuracy",
        f"- calibration: {profile.calib_size} class-balanced training images (scoring of the data-driven methods, "
        "and BatchNorm re-estimation after every cut)",
        f"- after every cut: BN statistics re-estimated, \"pruned\" accuracy; fine-tune {profile.finetune.describe()} "
        f"(SGD, cosine, seed {profile.seed}, batch {profile.batch_size}; identical for every method), "
        "\"final\" accuracy",
        f"- sparse training (dwgl, tp-group-sl), same budget: {profile.sparse.describe()} (SGD, cosine); dwgl: lam "
        f"{profile.dwgl_lam:g}, alpha {profile.dwgl_alpha:g} (benchmarks/dwgl.py's defaults: 0.5, 1), proximal steps, "
        f"then `dwgl-vote`; tp-group-sl: `pruner.regularize(model)` after every backward pass, GroupNormPruner reg "
        f"{profile.tp_reg:g} (Torch-Pruning's CIFAR group_sl value: 5e-4, meant for 100 sparse epochs), "
        f"weight decay {profile.tp_weight_decay:g} while regularising (as Torch-Pruning's benchmark does)"
        + (f"; top-1 after sparse training (BN re-estimated): {', '.join(sparse)}" if sparse else ""),
        "- tp-magnitude / tp-group-sl: Torch-Pruning's own pruners (GroupMagnitudeImportance(p=2), global ranking, "
        "classifier ignored); the pruning ratio is found by bisection to keep the target within 1% of the MACs",
        f"- MACs / params: lassoprune's count (conv + linear) for one 1x{IMAGE_SIZE}x{IMAGE_SIZE} image; "
        "kept = pruned / dense; † = more than 1% away from the target",
        f"- latency: pruned / dense median over {profile.latency_repeats} interleaved forward passes, torch eager, "
        f"batch {profile.latency_batch}, {threads} thread{'s' if threads > 1 else ''}, {device}",
        "- prune s: scoring + selection + surgery (for the Torch-Pruning peers, the whole ratio search); "
        "sparse s: sparse-training time (one run shared by the three targets)",
        *[f"- {note}" for note in profile.notes],
        "",
        "| method | target | MACs kept | params kept | latency | pruned top-1 / worst | final top-1 / worst "
        "| prune s | sparse s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = "" if r["within_tolerance"] else " †"
        sparse_s = "" if r.get("sparse_seconds") is None else f"{r['sparse_seconds']:.0f}"
        lines.append(
            f"| {r['method']} | {r['target_macs']:g} | {r['macs_ratio']:.3f}{mark} | {r['params_ratio']:.3f} "
            f"| {r['latency_ratio']:.2f} | {_acc(r['pruned_top1'], r['pruned_worst'])} "
            f"| {_acc(r['final_top1'], r['final_worst'])} | {r['prune_seconds']:.1f} | {sparse_s} |"
        )
    return "\n".join(lines)


def report(results: Results, models: Sequence[str], profile: Profile, device: str, threads: int) -> str:
    return "\n\n".join(model_table(results, m, profile, device, threads) for m in models if m in results.models) + "\n"


# -- command line -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--quick", dest="profile", action="store_const", const="quick", help="CPU profile (< 60 min)")
    which.add_argument("--full", dest="profile", action="store_const", const="full", help="GPU profile")
    which.add_argument("--tiny", dest="profile", action="store_const", const="tiny", help=argparse.SUPPRESS)
    p.add_argument("--runs", default="runs/compare", help="results and caches (default: runs/compare)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="METHOD",
                   help=f"default: all ({', '.join(METHODS)})")
    p.add_argument("--targets", nargs="+", type=float, default=list(TARGETS), help="MACs kept (default: 0.5 0.33 0.25)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=None, metavar="MODEL",
                   help=f"default: the profile's ({', '.join(MODELS)} available)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--dwgl-lam", type=float, default=None, help="override the profile's DWGL lam (0.5)")
    p.add_argument("--tp-reg", type=float, default=None, help="override the profile's GroupNormPruner reg (5e-4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    bad = [t for t in args.targets if not 0.0 < t < 1.0]
    if bad:
        p.error(f"--targets are fractions of the MACs kept, in (0, 1); got {bad}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    profile = PROFILES[args.profile]
    if args.dwgl_lam is not None:
        profile = dataclasses.replace(profile, dwgl_lam=args.dwgl_lam)
    if args.tp_reg is not None:
        profile = dataclasses.replace(profile, tp_reg=args.tp_reg)
    models = tuple(args.models or profile.models)
    device = torch.device(args.device) if args.device else default_device()
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    try:
        results = Results(runs / "results.json", profile.settings())
    except LassopruneError as exc:
        raise SystemExit(f"error: {exc}") from None
    started = time.perf_counter()
    with logging_redirect_tqdm():
        bench = Bench(profile, runs, device, progress=not args.no_progress)
        for name in models:
            run_model(bench, results, name, args.methods, args.targets)
    table = report(results, models, profile, str(device), bench.threads)
    atomic_write_text(runs / "table.md", table)
    print(table, flush=True)
    log.info("done in %.0f s; %s and %s", time.perf_counter() - started, runs / "results.json", runs / "table.md")


if __name__ == "__main__":
    main()
