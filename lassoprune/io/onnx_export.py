"""Export a (pruned) model to ONNX and check the file against PyTorch with onnxruntime.

The exported graph has one input ``"input"`` of shape ``(batch, C, H, W)`` and
one output ``"logits"`` of shape ``(batch, num_classes)``; the batch axis is
dynamic, the other axes are fixed to ``input_shape``. Pruned models need
nothing special: their layers already have the pruned widths.

Export uses PyTorch's TorchScript-based exporter (``torch.onnx.export(...,
dynamo=False)``): with torch 2.13 it writes opset 17 directly, is fast (well
under a second for the zoo models) and needs no extra package, whereas the
``torch.export``-based default needs ``onnxscript``, only writes opset >= 18
and takes seconds. Its deprecation warnings are silenced here.

Example::

    from lassoprune.io.onnx_export import check_onnx, export_onnx
    export_onnx(model, "model.onnx", (1, 3, 32, 32))
    report = check_onnx(model, "model.onnx", (1, 3, 32, 32))   # report.ok, report.max_abs_diff
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lassoprune.errors import CheckpointError, LassopruneError
from lassoprune.io.atomic import atomic_write

__all__ = [
    "INPUT_NAME", "OUTPUT_NAME", "OnnxCheck", "check_onnx", "eval_mode", "export_onnx", "onnx_bytes", "onnx_session",
]  # fmt: skip

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_AXIS = "batch"
DEFAULT_OPSET = 17
#: Warnings of the TorchScript-based exporter that say nothing about the exported model.
_EXPORTER_NOISE = ("You are using the legacy TorchScript-based ONNX export", "The feature will be removed")


@dataclass(frozen=True)
class OnnxCheck:
    """Outcome of :func:`check_onnx`.

    Attributes:
        ok: the ONNX checker accepted the file and every batch matched within tolerance.
        max_abs_diff: largest ``|onnxruntime - torch|`` over all batches and logits.
        max_abs_logit: largest ``|torch logit|`` (the scale the difference is judged against).
        batch_sizes: batch sizes run.
        opset: the file's default-domain opset.
        tolerance: the allowed difference, ``atol + rtol * max_abs_logit``.
    """

    ok: bool
    max_abs_diff: float
    max_abs_logit: float
    batch_sizes: tuple[int, ...]
    opset: int
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        data = asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        return data


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints (batch first); raises :class:`LassopruneError` otherwise."""
    shape = tuple(input_shape)
    if len(shape) < 2 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise LassopruneError(f"input shape must be positive integers (batch, channels, ...), got {shape!r}")
    return shape


def onnx_bytes(model: nn.Module, input_shape: Sequence[int], opset: int = DEFAULT_OPSET) -> bytes:
    """The ONNX serialisation of ``model`` in eval mode (dynamic batch axis), as bytes.

    The model's training flag is restored afterwards.
    """
    shape = check_input_shape(input_shape)
    example = _example_input(model, shape)
    buffer = io.BytesIO()
    with eval_mode(model), torch.no_grad(), _quiet_exporter():
        try:
            torch.onnx.export(
                model, (example,), buffer, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}},
            )  # fmt: skip
        except (RuntimeError, ValueError, TypeError, torch.onnx.errors.OnnxExporterError) as exc:
            raise LassopruneError(
                f"the model cannot be exported to ONNX opset {opset} ({type(exc).__name__}: {exc}); "
                "try another opset, or check that forward() only uses standard tensor operations"
            ) from exc
    return buffer.getvalue()


def export_onnx(
    model: nn.Module, path: str | os.PathLike[str], input_shape: Sequence[int], opset: int = DEFAULT_OPSET
) -> Path:
    """Atomically write ``model`` as an ONNX file (input ``"input"``, output ``"logits"``, dynamic batch).

    Args:
        model: the model (pruned or not); exported in eval mode, its mode is restored.
        path: destination ``.onnx`` file; an existing file is only replaced once the export succeeded.
        input_shape: example input shape, batch first, e.g. ``(1, 3, 32, 32)``.
        opset: ONNX operator set version.

    Returns:
        The written path.
    """
    data = onnx_bytes(model, input_shape, opset)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return Path(path)


def onnx_session(source: bytes | str | os.PathLike[str], threads: int | None = None) -> Any:
    """An onnxruntime CPU ``InferenceSession`` for an ONNX file or its bytes.

    Args:
        source: ONNX bytes or a path.
        threads: ``intra_op_num_threads`` (``None``: onnxruntime's default); one inter-op thread.
    """
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    model = source if isinstance(source, bytes) else str(_existing(source))
    try:
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception classes (Fail, InvalidGraph, ...)
        where = "the ONNX model" if isinstance(source, bytes) else str(source)
        raise CheckpointError(f"onnxruntime cannot load {where} ({type(exc).__name__}: {exc}); re-export it") from exc


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 3),
    atol: float = 1e-4,
    rtol: float = 1e-5,
    seed: int = 0,
) -> OnnxCheck:
    """Check an exported file: ONNX checker, dynamic batch, and onnxruntime logits vs. torch.

    Args:
        model: the PyTorch model the file was exported from (run in eval mode, mode restored).
        path: the ONNX file.
        input_shape: the input shape; its batch size is replaced by each of ``batch_sizes``.
        batch_sizes: batch sizes to run (several, to exercise the dynamic batch axis).
        atol, rtol: allowed ``max |diff| <= atol + rtol * max |torch logit|``.
        seed: seed of the random inputs.
    """
    shape = check_input_shape(input_shape)
    onnx_model = _checked_onnx_model(path)
    session = onnx_session(path)
    generator = torch.Generator().manual_seed(seed)
    max_diff, max_logit = 0.0, 0.0
    with eval_mode(model), torch.no_grad():
        for batch in batch_sizes:
            x = torch.randn((batch, *shape[1:]), generator=generator)
            expected = model(x.to(_device_of(model))).float().cpu()
            got = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
            if got.shape != expected.shape:
                raise LassopruneError(f"{path}: onnxruntime gives shape {tuple(got.shape)} at batch {batch}, "
                                      f"torch {tuple(expected.shape)}; re-export the model")  # fmt: skip
            max_diff = max(max_diff, (got - expected).abs().max().item())
            max_logit = max(max_logit, expected.abs().max().item())
    tolerance = atol + rtol * max_logit
    return OnnxCheck(
        ok=max_diff <= tolerance, max_abs_diff=max_diff, max_abs_logit=max_logit,
        batch_sizes=tuple(batch_sizes), opset=_opset(onnx_model), tolerance=tolerance,
    )  # fmt: skip


def _checked_onnx_model(path: str | os.PathLike[str]) -> Any:
    """The file parsed and passed through ``onnx.checker`` (clear error if it is damaged)."""
    onnx = _import_onnx()
    file = _existing(path)
    try:
        model = onnx.load(str(file))
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, onnx ValidationError
        raise CheckpointError(f"{file} is not a valid ONNX model ({type(exc).__name__}: {exc}); re-export it") from exc
    return model


def _opset(onnx_model: Any) -> int:
    """The default-domain opset of a parsed ONNX model."""
    return next((int(o.version) for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")), -1)


def _existing(path: str | os.PathLike[str]) -> Path:
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"ONNX file {file} does not exist")
    return file


def _example_input(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """A random input on the model's device, in its floating dtype."""
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return torch.randn(shape, dtype=dtype, device=_device_of(model))


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode, restore every submodule's training flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the TorchScript exporter's deprecation notices (other warnings still show)."""
    with warnings.catch_warnings():
        for message in _EXPORTER_NOISE:
            warnings.filterwarnings("ignore", message=message)
        yield


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise LassopruneError("checking ONNX files needs the onnx package: pip install 'onnx>=1.16'") from exc
    return onnx


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise LassopruneError("running ONNX models needs onnxruntime: pip install 'onnxruntime>=1.18'") from exc
    return onnxruntime
