"""The benchmark protocol: every pruning method, Torch-Pruning's pruners, converged baselines, seeds, error bars.

Every row is one run of the library's own pipeline (:func:`lassoprune.pipeline.run_stages`,
the stages of ``lassoprune run``): the shipped converged model is copied in
(``pretrain``), optionally sparse-trained (``sparse``), cut to the MACs target
with BatchNorm statistics re-estimated on the calibration images and
evaluated (``prune``: the one-shot "pruned" accuracy), fine-tuned
(``finetune``) and evaluated again (``evaluate``: "final"). Torch-Pruning's
pruners (``benchmarks/compare_peers.py``) replace the ``prune`` stage (and,
for ``tp-group-sl``, the ``sparse`` stage); everything around them is the
same code. A row's run directory resumes after a crash at its first
unfinished stage and its last finished epoch; finished rows are skipped.

Three phases, in this order (``--phase all`` runs them one after the other):

``select``  the fine-tuning learning rate of every method, chosen once on
            ResNet-20 (the profile's first model) at the profile's selection
            target, seed 0: a short fine-tuning per candidate learning rate,
            judged on ``validation_size`` training images held out of every
            stage (class-stratified, the same for every seed). Never the test
            split.
``pilot``   a few methods fine-tuned for ``pilot_epochs`` at their chosen
            rate, validation accuracy after every epoch: where the ranking
            stops changing decides the profile's fine-tuning epochs.
``table``   every (model, method, target, seed) on the converged baseline,
            fine-tuned on all training images at the method's chosen rate,
            judged on the whole test split.

Seeds change the calibration set (scoring and BatchNorm re-estimation) and the
fine-tuning order; the dense start is the same shipped model. The report
(``RUNS/table.md``, ``RUNS/results.json``, ``RUNS/tradeoff-<model>.png``) gives
mean and standard error over seeds and marks which differences from the best
method at each target exceed two standard errors.

Profiles:

``--standard``  a 2-core CPU: resnet20 (seeds 0, 1) and resnet56 (seed 0), targets
                0.5 and 0.33, every method, 2 fine-tuning epochs; a resnet20 row takes
                about 9 minutes (one thread, two shards side by side), so every method
                is about 5 hours for resnet20 (docs/BENCHMARKS.md).
``--full``      a GPU: resnet56, seeds 0 and 1, 30 fine-tuning epochs (the engine's
                CUDA defaults: bfloat16 autocast, channels-last); other models with
                ``--checkpoint MODEL=FILE``.
``--short``     the standard rows with a twentieth of its fine-tuning (1 epoch on 6,000
                images), ResNet-20 seeds 0-2 and ResNet-56 seeds 0-1: what users with
                little compute see; learning rates from the standard study's select
                phase (``--select-runs``, default ``runs/compare-standard``).
``--tiny``      the full profile with a smoke-test budget on the synthetic dataset, for
                a baseline given with ``--checkpoint resnet20=FILE`` (numbers mean nothing).

    OMP_NUM_THREADS=1 python benchmarks/compare.py --standard --phase select --shard 0/2 &
    OMP_NUM_THREADS=1 python benchmarks/compare.py --standard --phase select --shard 1/2
    python benchmarks/compare.py --standard --report          # tables and plots of the finished rows
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from compare_profiles import METHODS, PHASES, PRETRAINED, PROFILES, TOLERANCE, Method, Profile
from compare_report import write_report
from compare_rows import Row, chosen_lr, pilot_rows, row_config, select_rows, shard, table_rows
from compare_run import run_rows

import lassoprune as lp
from lassoprune.errors import LassopruneError

__all__ = [
    "METHODS", "PHASES", "PRETRAINED", "PROFILES", "TOLERANCE", "Method", "Profile", "Row", "chosen_lr", "main",
    "parse_args", "pilot_rows", "row_config", "run_rows", "select_rows", "shard", "table_rows", "write_report",
]  # the protocol's public names, importable from its entry point  # fmt: skip

log = logging.getLogger("lassoprune.compare")

# The protocol, one concern a module: compare_profiles (what a row name and a profile mean), compare_rows (the
# rows of each phase, their configuration and results), compare_run (running them through the pipeline's
# stages), compare_report (tables and plots); statistics and method options from bench.


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    for name in PROFILES:
        which.add_argument(f"--{name}", dest="profile", action="store_const", const=name,
                           help=argparse.SUPPRESS if name == "tiny" else f"the {name} profile")
    p.add_argument("--phase", choices=(*PHASES, "all"), default="all", help="which phase to run (default: all)")
    p.add_argument("--report", action="store_true", help="only write the tables and plots of the finished rows")
    p.add_argument("--runs", default=None, help="rows and reports (default: runs/compare-<profile>)")
    p.add_argument("--select-runs", default=None,
                   help="where the learning rates' select phase is (default: --runs, or runs/compare-<profile> "
                        "of the profile's select_from)")
    p.add_argument("--cuts-runs", default=None,
                   help="where the cuts a profile reuses are (default: runs/compare-<profile's cuts_from>)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=None, metavar="METHOD",
                   help=f"default: the profile's ({', '.join(METHODS)} available)")
    p.add_argument("--models", nargs="+", choices=lp.list_models(), default=None, metavar="MODEL",
                   help=f"default: the profile's (shipped baselines: {', '.join(PRETRAINED)}; any zoo model "
                        "with --checkpoint MODEL=FILE)")
    p.add_argument("--checkpoint", nargs="+", default=[], metavar="MODEL=FILE",
                   help="start MODEL from FILE (a lassoprune model file) instead of the profile's baseline")
    p.add_argument("--targets", nargs="+", type=float, default=None, help="MACs kept (default: the profile's)")
    p.add_argument("--shard", default="0/1", help="I/N: run the I-th of N interleaved shares of the rows")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.targets and not all(0.0 < t < 1.0 for t in args.targets):
        p.error(f"--targets are fractions of the MACs kept, in (0, 1); got {args.targets}")
    try:
        index, count = (int(x) for x in args.shard.split("/"))
        assert 0 <= index < count
    except (ValueError, AssertionError):
        p.error(f"--shard is I/N with 0 <= I < N, e.g. 0/2; got {args.shard}")
    args.shard_index, args.shard_count = index, count
    pairs = [c.split("=", 1) for c in args.checkpoint]
    if any(len(pair) != 2 or pair[0] not in lp.list_models() for pair in pairs):
        p.error(f"--checkpoint takes MODEL=FILE with MODEL a zoo model (lassoprune info); got {args.checkpoint}")
    args.checkpoints = dict(pairs)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    profile = PROFILES[args.profile]
    profile = dataclasses.replace(profile, checkpoints={**profile.checkpoints, **args.checkpoints})
    runs = Path(args.runs or f"runs/compare-{profile.name}")
    select_runs = Path(args.select_runs or (f"runs/compare-{profile.select_from}" if profile.select_from else runs))
    cuts = Path(args.cuts_runs or f"runs/compare-{profile.cuts_from}") if profile.cuts_from else None
    methods = args.methods or list(profile.methods)
    models = args.models or list(profile.models)
    targets = args.targets or list(profile.targets)
    phases = [] if args.report else PHASES if args.phase == "all" else (args.phase,)
    if profile.select_from or profile.fixed_lr is not None or profile.finetune_epochs == 0:  # no rate to choose
        phases = [phase for phase in phases if phase == "table"]
    started = time.perf_counter()
    try:
        for phase in phases:
            rows = {"select": lambda: select_rows(profile, methods),
                    "pilot": lambda: pilot_rows(profile, select_runs, methods),
                    "table": lambda: table_rows(profile, runs, models, methods, targets, select_runs)}[phase]()
            rows = shard(rows, args.shard_index, args.shard_count)
            log.info("%s: %d rows in this shard", phase, len(rows))
            run_rows(profile, runs, rows, progress=not args.no_progress, cuts=cuts)
    except LassopruneError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(write_report(profile, runs), flush=True)
    log.info("done in %.0f s; %s", time.perf_counter() - started, runs / "table.md")


if __name__ == "__main__":
    main()
