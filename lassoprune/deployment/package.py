"""``lp.deploy``: a pruned model made ready for a runtime, checked, and timed the way it will run.

Steps (each checked against the model it came from):

1. BatchNorm folded into the layers before it (:func:`lassoprune.deployment.folding.fold_batchnorm`);
2. TorchScript: traced in eval mode and frozen (``torch.jit.freeze``: weights
   become constants), saved as ``model.torchscript.pt``; :func:`load_torchscript`
   loads it and applies ``torch.jit.optimize_for_inference`` (whose output cannot
   be saved: it holds oneDNN-specific nodes that ``torch.jit.load`` rejects);
3. ONNX (dynamic batch, :func:`lassoprune.io.onnx_export.export_onnx`), saved as
   ``model.onnx``; onnxruntime applies its own graph optimisations when it loads it;
   on request (``aoti``, needs a C++ compiler): ``torch.export`` with a dynamic batch
   dimension compiled ahead of time by Inductor (the compiler behind ``torch.compile``),
   saved as ``model.pt2``; :func:`load_aoti` loads it. On this project's CPU it was the
   fastest PyTorch runtime for ResNet-56 at batch 64 (docs/BENCHMARKS.md, "Deployed latency");
4. outputs of every runtime compared with the pruned model on random batches: the largest
   absolute difference must be <= ``tolerance`` x max(1, largest |output|), or, when that
   fails, <= :data:`ROUNDOFF_FACTOR` x the pruned model's own float32 error (its outputs
   against a float64 copy's, relative the same way): a deep or ill-conditioned network
   carries more roundoff than 1e-4 (a ResNeXt-101 reconstructed on 32 random images: 9e-5
   relative in eager float32 itself), and two float32 implementations differ by about as much;
5. latency in a warm process (``warmup`` forward passes of every runner first,
   then runners interleaved round-robin, :func:`lassoprune.analysis.latency.time_interleaved`):
   the dense model (when known, deployed the same way in memory: folded, frozen /
   exported, so the speed-up is the pruning's alone) and the deployed one, per
   runtime and batch size, and the fastest runtime per batch size; written to
   ``deploy.json`` beside the files.

Widths are what the model was pruned to: prune with ``round_to`` (16 measured
fastest here) for widths the CPU kernels like (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import copy
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable, Sequence
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

__all__ = ["DeployResult", "deploy", "load_torchscript", "load_aoti", "RUNTIMES", "TORCHSCRIPT_FILE", "ONNX_FILE",
           "AOTI_FILE", "REPORT_FILE"]

TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
AOTI_FILE = "model.pt2"
REPORT_FILE = "deploy.json"
_FILES = {"torchscript": TORCHSCRIPT_FILE, "onnx": ONNX_FILE, "aoti": AOTI_FILE}
#: Every runtime :func:`deploy` knows (``aoti`` compiles C++: on request only).
RUNTIMES: tuple[str, ...] = tuple(_FILES)
#: A runtime may differ from the pruned model by this many times the model's own float32 error (step 4).
ROUNDOFF_FACTOR = 10.0
#: The largest batch an ``aoti`` package accepts (its batch dimension is dynamic up to this).
AOTI_MAX_BATCH = 4096


@dataclass
class DeployResult:
    """What :func:`deploy` wrote and measured (also in ``DIR/deploy.json``).

    Attributes:
        out: the output directory.
        files: runtime -> written file.
        folded, kept_batchnorm: BatchNorm modules folded / left in place.
        max_abs_diff: runtime -> largest |deployed - pruned| output over the check batches.
        tolerance: the allowed difference (absolute, relative to max(1, largest |output|)): the
            ``tolerance`` asked for, or the roundoff bound of step 4 where it was larger and needed.
        latency: one record per (runtime, batch size): ``deployed_ms`` and, with a dense
            model, ``dense_ms`` and ``speedup`` (medians of the interleaved warm runs).
        fastest: batch size -> the runtime with the lowest ``deployed_ms`` (empty without timing).
    """

    out: Path
    files: dict[str, str]
    folded: tuple[str, ...]
    kept_batchnorm: tuple[str, ...]
    max_abs_diff: dict[str, float]
    tolerance: float
    latency: list[dict[str, Any]] = field(default_factory=list)
    fastest: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "files": self.files, "folded_batchnorm": list(self.folded),
                "kept_batchnorm": list(self.kept_batchnorm), "max_abs_diff": self.max_abs_diff,
                "tolerance": self.tolerance, "latency": self.latency,
                "fastest": {str(batch): name for batch, name in self.fastest.items()}}


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
        runtimes: any of :data:`RUNTIMES` (``aoti`` needs a C++ compiler and compiles for a minute or so).
        batch_sizes: batch sizes timed.
        threads: intra-op threads while timing.
        warmup, repeats: untimed passes of every runner first, then timed rounds.
        latency: False skips timing.
        tolerance: allowed max |deployed - pruned| relative to max(1, max |pruned output|) (raised to
            :data:`ROUNDOFF_FACTOR` x the model's own float32 error when that is larger: step 4).

    Raises:
        LassopruneError: an unknown runtime, ``aoti`` without a C++ compiler or on a model
            ``torch.export`` cannot capture, or a deployed model that differs from ``model``.
    """
    unknown = sorted(set(runtimes) - set(RUNTIMES))
    if unknown or not runtimes:
        raise LassopruneError(f"unknown runtime(s) {unknown or list(runtimes)}: choose from {', '.join(RUNTIMES)}")
    if "aoti" in runtimes:
        check_cxx_compiler()
    shape = check_input_shape(input_shape)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with eval_mode(model):
        return _deploy(model, out, shape, dense, runtimes, batch_sizes, threads, warmup, repeats, latency, tolerance)


def _deploy(model: nn.Module, out: Path, shape: tuple[int, ...], dense: nn.Module | None, runtimes: Sequence[str],
            batch_sizes: Sequence[int], threads: int, warmup: int, repeats: int, latency: bool,
            tolerance: float) -> DeployResult:  # fmt: skip
    """:func:`deploy` with ``model`` in eval mode. Files are written under temporary names and renamed only
    after the output check, so a failed deployment never leaves (or overwrites) a model file."""
    fold = fold_batchnorm(model)
    example = torch.randn(1, *shape[1:], generator=torch.Generator().manual_seed(0))
    staged: dict[str, Path] = {name: _staged_path(out / _FILES[name]) for name in runtimes}
    deployed: dict[str, Any] = {}
    try:
        if "torchscript" in staged:
            torch.jit.save(_frozen_torchscript(fold.model, example), str(staged["torchscript"]))
            deployed["torchscript"] = load_torchscript(staged["torchscript"])
        if "onnx" in staged:
            export_onnx(fold.model, staged["onnx"], (1, *shape[1:]))
            deployed["onnx"] = onnx_session(str(staged["onnx"]), threads=threads)
        if "aoti" in staged:
            _aoti_package(fold.model, shape, staged["aoti"])
            deployed["aoti"] = load_aoti(staged["aoti"])
        diffs = {name: _max_diff(model, runtime, shape) for name, runtime in deployed.items()}
        tolerance = _allowed_difference(model, shape, diffs, tolerance)
        bad = {name: d for name, d in diffs.items() if d > tolerance}
        if bad:
            raise LassopruneError(f"the deployed model differs from the pruned one ({bad}, allowed {tolerance:g}, "
                                  f"at least {ROUNDOFF_FACTOR:g}x the model's own float32 error); nothing was "
                                  f"written to {out}: report the model to the project")
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
        result.fastest = _fastest(result.latency)
    atomic_write_json(out / REPORT_FILE, result.to_dict())
    return result


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """A deployed ``model.torchscript.pt``, loaded and optimised for inference on this machine."""
    return torch.jit.optimize_for_inference(torch.jit.load(str(path)).eval())


def load_aoti(path: str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """A deployed ``model.pt2`` (AOTInductor package): a callable from a batch to the outputs."""
    return torch._inductor.aoti_load_package(str(path))


def check_cxx_compiler() -> str:
    """The C++ compiler Inductor will use (``$CXX``, else g++ / clang++); a clear error when there is none."""
    for candidate in (os.environ.get("CXX"), "g++", "clang++", "c++"):
        if candidate and shutil.which(candidate):
            return candidate
    raise LassopruneError("runtime aoti compiles the model to C++ and no C++ compiler was found (g++, clang++ or "
                          "$CXX): install one (Debian: apt install g++) or deploy with --runtime torchscript onnx")


def _staged_path(final: Path) -> Path:
    """Where a file is written before the check: ``model.tmp.onnx`` for ``model.onnx`` (AOTInductor insists on
    the ``.pt2`` suffix, so the marker goes before it)."""
    return final.with_name(f"{final.stem}.tmp{final.suffix}")


def _aoti_package(model: nn.Module, shape: tuple[int, ...], path: Path) -> None:
    """``torch.export`` with a dynamic batch dimension, compiled by AOTInductor into the package ``path``."""
    example = torch.randn(2, *shape[1:], generator=torch.Generator().manual_seed(0))  # 2: batch 1 would specialise
    batch = torch.export.Dim("batch", min=1, max=AOTI_MAX_BATCH)
    try:
        with torch.no_grad():
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch.export's errors are many and internal; the advice is the same
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise LassopruneError(f"runtime aoti: torch.export cannot capture this model ({type(exc).__name__}: "
                              f"{first[:200]}); deploy it with --runtime torchscript onnx") from exc
    torch._inductor.aoti_compile_and_package(program, package_path=str(path))


def _frozen_torchscript(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
        return torch.jit.freeze(traced.eval())


def _is_onnx_session(runtime: Any) -> bool:
    return hasattr(runtime, "get_inputs") and hasattr(runtime, "run")


def _outputs(runtime: Any, x: torch.Tensor) -> torch.Tensor:
    if _is_onnx_session(runtime):
        return torch.from_numpy(runtime.run(None, {runtime.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        return runtime(x)


def _check_batches(shape: tuple[int, ...]) -> list[torch.Tensor]:
    """The random batches (of 1 and 3) every runtime is checked on."""
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(batch, *shape[1:], generator=gen) for batch in (1, 3)]


def _relative_diff(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max(1, max |expected|)."""
    return float((got.double() - expected.double()).abs().max()) / max(1.0, float(expected.abs().max()))


def _max_diff(model: nn.Module, runtime: Any, shape: tuple[int, ...]) -> float:
    """Largest |runtime - model| on the check batches, relative to max(1, max |model output|)."""
    worst = 0.0
    for x in _check_batches(shape):
        with torch.no_grad():
            expected = model(x)
        worst = max(worst, _relative_diff(_outputs(runtime, x), expected))
    return worst


def float32_error(model: nn.Module, shape: tuple[int, ...]) -> float:
    """The roundoff ``model`` itself carries: largest |float32 output - float64 output| on the check batches,
    relative like :func:`_max_diff` (a float64 copy of the model is run; ``model`` is untouched)."""
    reference = copy.deepcopy(model).double()
    worst = 0.0
    with torch.no_grad():
        for x in _check_batches(shape):
            worst = max(worst, _relative_diff(model(x), reference(x.double())))
    return worst


def _allowed_difference(model: nn.Module, shape: tuple[int, ...], diffs: dict[str, float],
                        tolerance: float) -> float:
    """``tolerance``, or, when some runtime exceeds it, the larger of it and :data:`ROUNDOFF_FACTOR` x
    :func:`float32_error` (measured only then: it copies the model to float64)."""
    if max(diffs.values(), default=0.0) <= tolerance:
        return tolerance
    try:
        roundoff = float32_error(model, shape)
    except (RuntimeError, TypeError):  # a module that cannot run in float64: the plain tolerance stands
        return tolerance
    return max(tolerance, ROUNDOFF_FACTOR * roundoff)


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
            backend = "onnxruntime" if name == "onnx" else "torch"
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


def _fastest(records: list[dict[str, Any]]) -> dict[int, str]:
    """Batch size -> the runtime with the lowest median deployed latency."""
    best: dict[int, dict[str, Any]] = {}
    for record in records:
        batch = record["batch_size"]
        if batch not in best or record["deployed_ms"] < best[batch]["deployed_ms"]:
            best[batch] = record
    return {batch: record["runtime"] for batch, record in best.items()}


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
    if "aoti" in runtimes:
        with tempfile.TemporaryDirectory() as scratch:  # the loaded package keeps its code in memory
            package = Path(scratch) / AOTI_FILE
            _aoti_package(folded, shape, package)
            made["aoti"] = load_aoti(package)
    return made


def _deployed_runner(runtime: Any, folded: nn.Module, shape: tuple[int, ...], backend: str, threads: int):
    if backend == "torch":
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))

        def run() -> None:
            with torch.no_grad():
                runtime(x)

        return run
    return make_runner(folded, shape, "onnxruntime", threads, session=runtime)
