"""``lp.deploy``: a pruned model made ready for a runtime, checked, and timed the way it will run.

Steps (each checked against the model it came from):

1. BatchNorm folded into the layers before it (:func:`lassoprune.deployment.folding.fold_batchnorm`);
2. TorchScript: traced in eval mode and frozen (``torch.jit.freeze``: weights
   become constants), saved as ``model.torchscript.pt``; :func:`load_torchscript`
   loads it and applies ``torch.jit.optimize_for_inference`` (whose output cannot
   be saved: it holds oneDNN-specific nodes that ``torch.jit.load`` rejects);
3. ONNX (dynamic batch, :func:`lassoprune.io.onnx_export.export_onnx`), saved as
   ``model.onnx``; onnxruntime applies its own graph optimisations when it loads it;
4. outputs of both compared with the pruned model on random batches: the largest
   absolute difference must be <= ``tolerance`` x max(1, largest |output|);
5. latency in a warm process (``warmup`` forward passes of every runner first,
   then runners interleaved round-robin, :func:`lassoprune.analysis.latency.time_interleaved`):
   the dense model (when known, deployed the same way in memory: folded, frozen /
   exported, so the speed-up is the pruning's alone) and the deployed one, per
   runtime and batch size; written to ``deploy.json`` beside the files.

Widths are what the model was pruned to: prune with ``round_to`` for widths the
CPU kernels like (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lassoprune.analysis.latency import make_runner, time_interleaved
from lassoprune.deployment.folding import fold_batchnorm
from lassoprune.errors import LassopruneError
from lassoprune.io.atomic import atomic_write_json
from lassoprune.io.onnx_export import check_input_shape, eval_mode, export_onnx, onnx_bytes, onnx_session

__all__ = ["DeployResult", "deploy", "load_torchscript", "TORCHSCRIPT_FILE", "ONNX_FILE", "REPORT_FILE"]

TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
REPORT_FILE = "deploy.json"


@dataclass
class DeployResult:
    """What :func:`deploy` wrote and measured (also in ``DIR/deploy.json``).

    Attributes:
        out: the output directory.
        files: runtime -> written file.
        folded, kept_batchnorm: BatchNorm modules folded / left in place.
        max_abs_diff: runtime -> largest |deployed - pruned| output over the check batches.
        tolerance: the allowed difference (absolute, relative to max(1, largest |output|)).
        latency: one record per (runtime, batch size): ``deployed_ms`` and, with a dense
            model, ``dense_ms`` and ``speedup`` (medians of the interleaved warm runs).
    """

    out: Path
    files: dict[str, str]
    folded: tuple[str, ...]
    kept_batchnorm: tuple[str, ...]
    max_abs_diff: dict[str, float]
    tolerance: float
    latency: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "files": self.files, "folded_batchnorm": list(self.folded),
                "kept_batchnorm": list(self.kept_batchnorm), "max_abs_diff": self.max_abs_diff,
                "tolerance": self.tolerance, "latency": self.latency}


def deploy(
    model: nn.Module,
    out: str | Path,
    input_shape: Sequence[int],
    dense: nn.Module | None = None,
    runtimes: Sequence[str] = ("torchscript", "onnx"),
    batch_sizes: Sequence[int] = (1, 64),
    threads: int = 2,
    warmup: int = 200,
    repeats: int = 30,
    latency: bool = True,
    tolerance: float = 1e-4,
) -> DeployResult:
    """Fold, freeze, export, check and time ``model`` (module docstring); files go to ``out``.

    Args:
        model: the (pruned) model, any module ``torch.fx`` and the exporters can trace.
        out: output directory (created).
        input_shape: one input, batch first, e.g. ``(1, 3, 32, 32)``.
        dense: the unpruned model, deployed the same way in memory and timed beside (None: no speed-up).
        runtimes: ``torchscript`` and / or ``onnx``.
        batch_sizes: batch sizes timed.
        threads: intra-op threads while timing.
        warmup, repeats: untimed passes of every runner first, then timed rounds.
        latency: False skips timing.
        tolerance: allowed max |deployed - pruned| relative to max(1, max |pruned output|).

    Raises:
        LassopruneError: an unknown runtime, or a deployed model that differs from ``model``.
    """
    unknown = sorted(set(runtimes) - {"torchscript", "onnx"})
    if unknown or not runtimes:
        raise LassopruneError(f"unknown runtime(s) {unknown or list(runtimes)}: choose from torchscript, onnx")
    shape = check_input_shape(input_shape)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with eval_mode(model):
        return _deploy(model, out, shape, dense, runtimes, batch_sizes, threads, warmup, repeats, latency, tolerance)


_FILES = {"torchscript": TORCHSCRIPT_FILE, "onnx": ONNX_FILE}


def _deploy(model: nn.Module, out: Path, shape: tuple[int, ...], dense: nn.Module | None, runtimes: Sequence[str],
            batch_sizes: Sequence[int], threads: int, warmup: int, repeats: int, latency: bool,
            tolerance: float) -> DeployResult:  # fmt: skip
    """:func:`deploy` with ``model`` in eval mode. Files are written under temporary names and renamed only
    after the output check, so a failed deployment never leaves (or overwrites) a model file."""
    fold = fold_batchnorm(model)
    example = torch.randn(1, *shape[1:], generator=torch.Generator().manual_seed(0))
    staged: dict[str, Path] = {name: out / (_FILES[name] + ".tmp") for name in runtimes}
    deployed: dict[str, Any] = {}
    try:
        if "torchscript" in staged:
            torch.jit.save(_frozen_torchscript(fold.model, example), str(staged["torchscript"]))
            deployed["torchscript"] = load_torchscript(staged["torchscript"])
        if "onnx" in staged:
            export_onnx(fold.model, staged["onnx"], (1, *shape[1:]))
            deployed["onnx"] = onnx_session(str(staged["onnx"]), threads=threads)
        diffs = {name: _max_diff(model, runtime, shape) for name, runtime in deployed.items()}
        bad = {name: d for name, d in diffs.items() if d > tolerance}
        if bad:
            raise LassopruneError(f"the deployed model differs from the pruned one ({bad}, allowed {tolerance:g}); "
                                  f"nothing was written to {out}: report the model to the project")
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise
    files = {}
    for name, path in staged.items():
        final = out / _FILES[name]
        path.replace(final)
        files[name] = str(final)
    for name, file_name in _FILES.items():  # a file of a runtime not deployed this time is stale
        if name not in staged and (out / file_name).exists():
            (out / file_name).unlink()
    result = DeployResult(out, files, fold.folded, fold.kept, diffs, tolerance)
    if latency:
        result.latency = _latency(model, dense, fold.model, deployed, shape, batch_sizes, threads, warmup, repeats)
    atomic_write_json(out / REPORT_FILE, result.to_dict())
    return result


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """A deployed ``model.torchscript.pt``, loaded and optimised for inference on this machine."""
    return torch.jit.optimize_for_inference(torch.jit.load(str(path)).eval())


def _frozen_torchscript(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
        return torch.jit.freeze(traced.eval())


def _outputs(runtime: Any, x: torch.Tensor) -> torch.Tensor:
    if isinstance(runtime, torch.jit.ScriptModule | nn.Module):
        with torch.no_grad():
            return runtime(x)
    return torch.from_numpy(runtime.run(None, {runtime.get_inputs()[0].name: x.numpy()})[0])


def _max_diff(model: nn.Module, runtime: Any, shape: tuple[int, ...]) -> float:
    """Largest |runtime - model| on random batches of 1 and 3, relative to max(1, max |model output|)."""
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for batch in (1, 3):
        x = torch.randn(batch, *shape[1:], generator=gen)
        with torch.no_grad():
            expected = model(x)
        got = _outputs(runtime, x)
        worst = max(worst, float((got - expected).abs().max()) / max(1.0, float(expected.abs().max())))
    return worst


def _latency(model: nn.Module, dense: nn.Module | None, folded: nn.Module, deployed: dict[str, Any],
             shape: tuple[int, ...], batch_sizes: Sequence[int], threads: int, warmup: int,
             repeats: int) -> list[dict[str, Any]]:  # fmt: skip
    """Warm, interleaved medians of the deployed model and the dense one deployed the same way."""
    dense_runtimes = _in_memory_runtimes(dense, list(deployed), shape, threads) if dense is not None else {}
    dense_folded = fold_batchnorm(dense).model if dense is not None else None
    records = []
    for batch in batch_sizes:
        batch_shape = (batch, *shape[1:])
        for name in deployed:
            backend = "torch" if name == "torchscript" else "onnxruntime"
            runners = [_deployed_runner(deployed[name], folded, batch_shape, backend, threads)]
            if dense is not None:
                runners.append(_deployed_runner(dense_runtimes[name], dense_folded, batch_shape, backend, threads))
            samples = time_interleaved(runners, warmup, repeats, threads)
            record = {"runtime": name, "batch_size": batch, "threads": threads, "warmup": warmup, "repeats": repeats,
                      "deployed_ms": statistics.median(samples[0])}
            if dense is not None:
                record["dense_ms"] = statistics.median(samples[1])
                record["speedup"] = record["dense_ms"] / record["deployed_ms"]
            records.append(record)
    return records


def _in_memory_runtimes(model: nn.Module, runtimes: Sequence[str], shape: tuple[int, ...],
                        threads: int) -> dict[str, Any]:  # fmt: skip
    """``model`` deployed like the files, without writing them (for the dense side of the timing)."""
    folded = fold_batchnorm(model).model
    example = torch.zeros(1, *shape[1:])
    made: dict[str, Any] = {}
    if "torchscript" in runtimes:
        made["torchscript"] = torch.jit.optimize_for_inference(_frozen_torchscript(folded, example))
    if "onnx" in runtimes:
        made["onnx"] = onnx_session(onnx_bytes(folded, (1, *shape[1:])), threads=threads)
    return made


def _deployed_runner(runtime: Any, folded: nn.Module, shape: tuple[int, ...], backend: str, threads: int):
    if backend == "torch":
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))

        def run() -> None:
            with torch.no_grad():
                runtime(x)

        return run
    return make_runner(folded, shape, "onnxruntime", threads, session=runtime)
