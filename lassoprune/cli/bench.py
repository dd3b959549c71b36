"""``lassoprune bench``: CPU latency of a model, or of two models side by side (e.g. dense vs. pruned)."""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from typing import Any

from torch import nn

from lassoprune.analysis import count
from lassoprune.analysis.latency import BACKENDS, make_runner, summarize, time_interleaved
from lassoprune.cli._common import model_image_size, positive, print_json
from lassoprune.errors import LassopruneError
from lassoprune.io import load, read_model_file
from lassoprune.io.onnx_export import eval_mode, onnx_bytes, onnx_session
from lassoprune.models import create_model

HELP = "measure CPU latency (PyTorch and onnxruntime) of a model, or of two models side by side"
EPILOG = """\
examples:
  lassoprune bench --checkpoint runs/r56/model.pt --against runs/p56/model.pt
  lassoprune bench --model resnet56 --against runs/p56/model.pt --batch-sizes 1 64 --threads 2 --json
  lassoprune bench --checkpoint runs/p56/model.pt --backends onnxruntime --repeats 100

A is --checkpoint FILE or a freshly built zoo --model NAME (the dense baseline;
its classes and input channels default to those of --against). B is --against.
The two are timed interleaved (A, B, A, B, ...) so that they share the machine's
noise. "B/A latency" is B's median latency over A's (below 1: B is faster),
"speed-up" is its inverse, "B/A MACs" the ratio of multiply-accumulates per image.

By default the models are timed as a long-running process runs them: 200
untimed forward passes of each first (--warmup). --fresh times them as a
freshly started process does (3 warm-up calls): a fresh process pays for new
memory pages on every large activation, which costs the larger model most, so
its speed-ups are higher than a server sees (docs/BENCHMARKS.md).
"""

WARM_CALLS = 200
FRESH_CALLS = 3


@dataclass
class Candidate:
    """One model being timed."""

    label: str
    source: str
    model: nn.Module
    macs: int
    params: int

    def describe(self) -> dict[str, Any]:
        spec = getattr(self.model, "lp_spec", None)
        return {"label": self.label, "source": self.source, "model": spec.name if spec else None,
                "macs": self.macs, "params": self.params}  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help=HELP, description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_argument_group("models")
    source.add_argument("--checkpoint", metavar="FILE", help="model file A")
    source.add_argument("--model", metavar="NAME", help="zoo model A, freshly built (instead of --checkpoint)")
    source.add_argument("--num-classes", type=int, help="classes of --model (default: those of --against, else 10)")
    source.add_argument("--in-channels", type=int, help="input channels of --model (default: --against's, else 3)")
    source.add_argument("--against", metavar="FILE", help="model file B, compared with A")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--image-size", type=int, help="input side in pixels (default: the file's, else the model's)")
    timing.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64], metavar="N", help="default: 1 64")
    timing.add_argument("--threads", type=int, default=2, help="intra-op threads (default: 2)")
    timing.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), help="default: both")
    timing.add_argument("--warmup", type=int, metavar="N",
                        help=f"untimed calls per model first (default: {WARM_CALLS}, with --fresh {FRESH_CALLS})")
    timing.add_argument("--fresh", action="store_true",
                        help="time as a freshly started process does (few warm-up calls; optimistic speed-ups)")
    timing.add_argument("--repeats", type=int, default=30, help="timed calls per model (default: 30)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _validate(args)
    against = _load_file(args.against) if args.against else None
    model_a, source_a = _model_a(args, against)
    image_size = model_image_size(model_a, args.image_size or _stored_image_size(against))
    in_channels = _in_channels(model_a)
    if against is not None and _in_channels(against) != in_channels:
        raise LassopruneError(
            f"A takes {in_channels} input channels but B takes {_in_channels(against)}; compare models of one dataset"
        )
    shape = (in_channels, image_size, image_size)
    candidates = [_candidate("A", source_a, model_a, shape)]
    if against is not None:
        candidates.append(_candidate("B", args.against, against, shape))
    report = _report(candidates, shape, args)
    if args.json:
        print_json(report)
    else:
        _print_report(report)
    return 0


def _validate(args: argparse.Namespace) -> None:
    if bool(args.checkpoint) == bool(args.model):
        raise LassopruneError("give exactly one of --checkpoint FILE or --model NAME (model A)")
    for name in ("num_classes", "in_channels", "image_size", "threads", "repeats"):
        positive(f"--{name.replace('_', '-')}", getattr(args, name))
    for size in args.batch_sizes:
        positive("--batch-sizes", size)
    if args.warmup is None:
        args.warmup = FRESH_CALLS if args.fresh else WARM_CALLS
    if args.warmup < 0:
        raise LassopruneError(f"--warmup must be 0 or more, got {args.warmup}")


def _load_file(path: str) -> nn.Module:
    read_model_file(path)  # clear error before any work
    return load(path)


def _model_a(args: argparse.Namespace, against: nn.Module | None) -> tuple[nn.Module, str]:
    """Model A and where it came from (a file, or ``zoo:NAME``)."""
    if args.checkpoint:
        return _load_file(args.checkpoint), args.checkpoint
    kwargs = _baseline_kwargs(args.model, against)
    kwargs["num_classes"] = args.num_classes or kwargs.get("num_classes", 10)
    kwargs["in_channels"] = args.in_channels or kwargs.get("in_channels", 3)
    return create_model(args.model, **kwargs).eval(), f"zoo:{args.model}"


def _baseline_kwargs(name: str, against: nn.Module | None) -> dict[str, Any]:
    """Options for the zoo baseline: all of B's if B is the same architecture, else its classes and channels."""
    spec = getattr(against, "lp_spec", None)
    if spec is None:
        return {}
    if spec.name == name:
        return dict(spec.kwargs)
    return {key: spec.kwargs[key] for key in ("num_classes", "in_channels") if key in spec.kwargs}


def _stored_image_size(model: nn.Module | None) -> int | None:
    return getattr(model, "lp_extra", {}).get("image_size") if model is not None else None


def _in_channels(model: nn.Module) -> int:
    spec = getattr(model, "lp_spec", None)
    return int(spec.kwargs.get("in_channels", 3)) if spec is not None else 3


def _candidate(label: str, source: str, model: nn.Module, shape: tuple[int, int, int]) -> Candidate:
    counted = count(model, (1, *shape))
    return Candidate(label, source, model.eval(), int(counted.macs), int(counted.params))


def _report(candidates: list[Candidate], shape: tuple[int, int, int], args: argparse.Namespace) -> dict[str, Any]:
    """Time every backend x batch size, all candidates interleaved; collect the JSON report."""
    rows = []
    for backend in args.backends:
        sessions = _sessions(candidates, shape, args.threads) if backend == "onnxruntime" else [None] * len(candidates)
        for batch in args.batch_sizes:
            rows.append(_time_row(candidates, sessions, backend, (batch, *shape), args))
    report: dict[str, Any] = {
        "input_shape": list(shape), "threads": args.threads, "regime": "fresh" if args.fresh else "warm",
        "warmup": args.warmup, "repeats": args.repeats,
        "a": candidates[0].describe(), "b": candidates[1].describe() if len(candidates) > 1 else None,
        "mac_ratio": None, "param_ratio": None, "results": rows,
    }  # fmt: skip
    if len(candidates) > 1:
        report["mac_ratio"] = candidates[1].macs / candidates[0].macs
        report["param_ratio"] = candidates[1].params / candidates[0].params
    return report


def _sessions(candidates: list[Candidate], shape: tuple[int, int, int], threads: int) -> list[Any]:
    """One onnxruntime session per model (dynamic batch), exported in memory."""
    return [onnx_session(onnx_bytes(c.model, (1, *shape)), threads=threads) for c in candidates]


def _time_row(
    candidates: list[Candidate], sessions: list[Any], backend: str, shape: tuple[int, ...], args: argparse.Namespace
) -> dict[str, Any]:
    """Latency of every candidate at one backend and batch size, and B/A ratios."""
    with contextlib.ExitStack() as stack:
        for candidate in candidates:
            stack.enter_context(eval_mode(candidate.model))
        runners = [make_runner(c.model, shape, backend, args.threads, s) for c, s in zip(candidates, sessions)]
        samples = time_interleaved(runners, args.warmup, args.repeats, args.threads)
    results = [summarize(times, backend, shape[0], args.threads) for times in samples]
    row: dict[str, Any] = {"backend": backend, "batch_size": shape[0], "a": results[0].to_dict(),
                           "b": None, "latency_ratio": None, "speedup": None}  # fmt: skip
    if len(results) > 1:
        row["b"] = results[1].to_dict()
        row["latency_ratio"] = results[1].median_ms / results[0].median_ms
        row["speedup"] = results[0].median_ms / results[1].median_ms
    return row


def _print_report(report: dict[str, Any]) -> None:
    for side in ("a", "b"):
        item = report[side]
        if item:
            print(f"{item['label']}: {item['source']}  ({item['model']}, {item['macs'] / 1e6:.2f} M MACs, "
                  f"{item['params'] / 1e6:.3f} M params)")  # fmt: skip
    dims = "x".join(map(str, report["input_shape"]))
    print(f"input {dims}, {report['threads']} threads, {report['repeats']} timed calls after {report['warmup']} "
          f"warm-up, models interleaved ({report['regime']} process)")  # fmt: skip
    two = report["b"] is not None
    header = f"{'backend':<12s} {'batch':>5s} {'A ms':>10s}"
    print(header + (f" {'B ms':>10s} {'B/A latency':>12s} {'speed-up':>9s} {'B/A MACs':>9s}" if two else ""))
    for row in report["results"]:
        line = f"{row['backend']:<12s} {row['batch_size']:>5d} {row['a']['median_ms']:>10.3f}"
        if two:
            line += (f" {row['b']['median_ms']:>10.3f} {row['latency_ratio']:>12.3f} {row['speedup']:>8.2f}x"
                     f" {report['mac_ratio']:>9.3f}")  # fmt: skip
        print(line)
