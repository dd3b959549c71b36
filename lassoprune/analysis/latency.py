"""Inference latency on the CPU: PyTorch eager and onnxruntime, several models interleaved.

MACs are a proxy; what a pruned model buys in practice is wall-clock latency.
:func:`measure_latency` times one model; :func:`time_interleaved` times several
runners round-robin (A, B, A, B, ...) so that they share the machine's noise
(frequency scaling, other processes) and their ratio is more stable than two
separate measurements.

Every timed call is one forward pass of a fixed random batch, in eval mode,
under ``torch.no_grad()``. PyTorch's intra-op thread count is set to
``threads`` while timing and restored afterwards; onnxruntime sessions get
``intra_op_num_threads=threads`` and one inter-op thread. On CUDA models each
call is followed by ``torch.cuda.synchronize()``.

Example::

    from lassoprune.analysis.latency import measure_latency
    r = measure_latency(model, (1, 3, 32, 32), threads=2, backend="onnxruntime")
    print(r.median_ms, r.p90_ms)
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lassoprune.errors import LassopruneError, UnknownNameError
from lassoprune.io.onnx_export import INPUT_NAME, OUTPUT_NAME, check_input_shape, eval_mode, onnx_bytes, onnx_session

__all__ = [
    "BACKENDS", "LatencyResult", "make_runner", "measure_latency", "summarize", "time_interleaved", "torch_threads",
]  # fmt: skip

BACKENDS: tuple[str, ...] = ("torch", "onnxruntime")
Runner = Callable[[], None]


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one forward pass of one batch (milliseconds).

    Attributes:
        backend: ``"torch"`` or ``"onnxruntime"``.
        batch_size: images per call.
        threads: intra-op threads used.
        repeats: timed calls (after the warm-up calls).
        median_ms, p90_ms, mean_ms, min_ms: statistics of the timed calls.
    """

    backend: str
    batch_size: int
    threads: int
    repeats: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float

    @property
    def images_per_second(self) -> float:
        """Throughput at the median latency."""
        return self.batch_size * 1000.0 / self.median_ms

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (throughput included)."""
        return {**asdict(self), "images_per_second": self.images_per_second}


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    threads: int = 2,
    warmup: int = 10,
    repeats: int = 50,
    backend: str = "torch",
) -> LatencyResult:
    """Median and 90th-percentile latency of ``model`` on a random batch of ``input_shape``.

    Args:
        model: the model; timed in eval mode (its training flags are restored).
        input_shape: batch first, e.g. ``(1, 3, 32, 32)``.
        threads: intra-op threads (PyTorch's are restored afterwards).
        warmup: untimed calls first (lazy initialisation, caches).
        repeats: timed calls.
        backend: ``"torch"`` (eager) or ``"onnxruntime"`` (the model is exported to ONNX in memory).
    """
    shape = check_input_shape(input_shape)
    with eval_mode(model):
        runner = make_runner(model, shape, backend, threads)
        samples = time_interleaved([runner], warmup, repeats, threads)[0]
    return summarize(samples, backend, shape[0], threads)


def make_runner(
    model: nn.Module, input_shape: Sequence[int], backend: str, threads: int, session: Any = None
) -> Runner:
    """A zero-argument callable that runs one forward pass of a fixed random batch.

    For ``backend="onnxruntime"`` an existing ``session`` (from
    :func:`lassoprune.io.onnx_export.onnx_session`, dynamic batch) may be passed
    to avoid exporting again; otherwise the model is exported in memory.
    Call it with the model in eval mode.
    """
    check_backend(backend)
    check_threads(threads)
    shape = check_input_shape(input_shape)
    if backend == "torch":
        return _torch_runner(model, shape)
    if session is None:
        session = onnx_session(onnx_bytes(model, (1, *shape[1:])), threads=threads)
    return _onnxruntime_runner(session, shape)


def _torch_runner(model: nn.Module, shape: tuple[int, ...]) -> Runner:
    """Eager PyTorch forward pass under ``no_grad`` (synchronised on CUDA)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.randn(shape, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def run() -> None:
        with torch.no_grad():
            model(x)
        if sync is not None:
            sync(device)

    return run


def _onnxruntime_runner(session: Any, shape: tuple[int, ...]) -> Runner:
    """onnxruntime forward pass of a float32 numpy batch."""
    feed = {INPUT_NAME: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}

    def run() -> None:
        session.run([OUTPUT_NAME], feed)

    return run


def time_interleaved(runners: Sequence[Runner], warmup: int, repeats: int, threads: int) -> list[list[float]]:
    """Call the runners round-robin; return each runner's ``repeats`` wall-clock times in ms.

    ``warmup`` untimed rounds come first. PyTorch uses ``threads`` intra-op threads meanwhile.
    """
    if warmup < 0 or repeats < 1:
        raise LassopruneError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    samples: list[list[float]] = [[] for _ in runners]
    with torch_threads(threads):
        for _ in range(warmup):
            for run in runners:
                run()
        for _ in range(repeats):
            for times, run in zip(samples, runners):
                start = time.perf_counter()
                run()
                times.append((time.perf_counter() - start) * 1000.0)
    return samples


def summarize(samples_ms: Sequence[float], backend: str, batch_size: int, threads: int) -> LatencyResult:
    """A :class:`LatencyResult` from raw timings in milliseconds."""
    values = np.asarray(samples_ms, dtype=np.float64)
    return LatencyResult(
        backend=backend, batch_size=batch_size, threads=threads, repeats=len(values),
        median_ms=float(statistics.median(values)), p90_ms=float(np.percentile(values, 90)),
        mean_ms=float(values.mean()), min_ms=float(values.min()),
    )  # fmt: skip


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Set ``torch.set_num_threads(threads)``; restore the previous value afterwards."""
    check_threads(threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_backend(backend: str) -> None:
    """Raise :class:`UnknownNameError` unless ``backend`` is one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise UnknownNameError("backend", str(backend), BACKENDS)


def check_threads(threads: int) -> None:
    """Raise :class:`LassopruneError` unless ``threads`` is a positive int."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise LassopruneError(f"threads must be a positive integer, got {threads!r}")
