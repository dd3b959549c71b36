"""Least-squares reconstruction of the layers that lost input channels (He et al. 2017; Luo et al. 2017, ThiNet).

After a cut, a layer that reads fewer channels keeps its old weights for the
channels that stay, and what the removed channels carried is lost. This
module refits those weights so that the layer reproduces, on calibration
images, what the *unpruned* network computed at that layer, from the inputs
the *pruned* network actually gives it:

    W*, b* = argmin_{W, b}  || X_p W + 1 b^T - Y_o ||_F^2 + lam ||W - W_0||_F^2,
    lam    = ridge * trace(X_p^T X_p) / D,

with ``X_p`` (rows = sampled output positions, D = kept inputs x kernel
area) the pruned network's im2col rows at the layer's input and ``Y_o`` the
unpruned layer's output there (before its BatchNorm), kept output channels
only. The normal equations are accumulated in float64 over the calibration
batches (``X^T X``, ``X^T Y``, ``1^T X``, ``1^T Y``, ``||Y||^2``) and solved in
closed form, shrunk towards the cut's weights ``W_0``, with ``ridge`` chosen per
layer by generalised cross-validation (a layer with few rows for its unknowns,
such as a linear layer with one row per image, stays near ``W_0``); the
intercept ``b`` is not penalised and absorbs the mean of what the removed
channels contributed. Layers are refitted in the order the
network runs them, each from the pruned network's inputs *after* the earlier
refits, so errors of earlier layers are corrected rather than compounded.

Grouped and depthwise convolutions are refitted per group; linear layers
directly. The intercept goes into the layer's bias, or, for a bias-free conv
read only by a BatchNorm, into that BatchNorm's running mean (equivalent
while the statistics are kept; re-estimating them afterwards absorbs it
anyway).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lassoprune.channels.groups import ChannelGroup
from lassoprune.errors import LassopruneError
from lassoprune.pruning.frontier import FrozenPrefix, UntraceableNetwork
from lassoprune.pruning.prefix_cache import FinishedModuleCache
from lassoprune.utils.runtime import get_logger

Batch = tuple[Tensor, Tensor]

RIDGE_GRID = tuple(10.0**e for e in range(-6, 3))
"""Ridge strengths, relative to the mean diagonal of ``X^T X``, that generalised cross-validation chooses from."""

DEFAULT_POSITIONS = 64
"""Output positions sampled per image and layer (all of them when a map is smaller)."""

PREFIX_MODES = ("auto", "frontier", "cache", "none")

TARGETS_IN_MEMORY_BYTES = 512 * 2**20
"""Default bound on the unpruned network's sampled outputs held in memory during a reconstruction."""


@dataclass(frozen=True)
class LayerRefit:
    """What reconstruction did to one layer.

    Attributes:
        name: qualified module name.
        inputs_kept, inputs_before: input channels (features) after / before the cut.
        rows: sampled rows the fit used (images x positions).
        ridge: the relative ridge used (the largest over the layer's groups).
        error_before, error_after: relative output error ``||X_p W + b - Y_o||_F / ||Y_o - mean(Y_o)||_F``
            on the calibration rows, with the cut's weights and with the refitted ones (the intercept at its
            best for the given weights both times, since BatchNorm re-estimation absorbs a constant shift).
    """

    name: str
    inputs_kept: int
    inputs_before: int
    rows: int
    error_before: float
    error_after: float
    ridge: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "inputs_kept": self.inputs_kept, "inputs_before": self.inputs_before,
                "rows": self.rows, "error_before": self.error_before, "error_after": self.error_after,
                "ridge": self.ridge}


@dataclass(frozen=True)
class _Plan:
    """Which inputs and outputs of one layer survived the cut (positions in the unpruned layer)."""

    kept_in: Tensor  # int64 (C_in',)
    kept_out: Tensor  # int64 (C_out',)
    inputs_before: int


def kept_positions(
    original: nn.Module, groups: Sequence[ChannelGroup], keep: Mapping[str, Sequence[int]]
) -> dict[str, _Plan]:
    """Per conv / linear layer that lost input channels: its kept input and output positions.

    Args:
        original: the unpruned model (names as in the pruned copy).
        groups, keep: the cut (:class:`~lassoprune.pruning.PruneResult`'s ``groups`` and ``keep``).
    """
    modules = dict(original.named_modules())
    removed_in: dict[str, set[int]] = {}
    removed_out: dict[str, set[int]] = {}
    for group in groups:
        kept = set(keep.get(group.id, range(group.num_channels)))
        for where, slices in ((removed_in, group.consumers + group.depthwise), (removed_out, group.producers)):
            for s in slices:
                gone = {i for i, c in zip(s.indices, s.channels) if c not in kept}
                where.setdefault(s.module, set()).update(gone)
        for s in group.depthwise:  # a depthwise conv loses outputs with its inputs
            removed_out.setdefault(s.module, set()).update(
                i for i, c in zip(s.indices, s.channels) if c not in kept)
    plans = {}
    for name, gone in removed_in.items():
        layer = modules[name]
        if not gone or not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        n_in, n_out = _fan_in(layer), _fan_out(layer)
        plans[name] = _Plan(
            kept_in=torch.tensor([i for i in range(n_in) if i not in gone], dtype=torch.int64),
            kept_out=torch.tensor([i for i in range(n_out) if i not in removed_out.get(name, set())],
                                  dtype=torch.int64),
            inputs_before=n_in,
        )
    return plans


def reconstruct(
    original: nn.Module,
    pruned: nn.Module,
    groups: Sequence[ChannelGroup],
    keep: Mapping[str, Sequence[int]],
    batches: Iterable[Batch],
    *,
    ridge: float | None = None,
    positions: int = DEFAULT_POSITIONS,
    seed: int = 0,
    prefix: str = "auto",
    targets_in_memory: int = TARGETS_IN_MEMORY_BYTES,
) -> tuple[LayerRefit, ...]:
    """Refit, in place, every layer of ``pruned`` whose input channels were removed.

    Args:
        original: the unpruned model (left unchanged).
        pruned: its pruned copy (same module names), changed in place.
        groups, keep: the cut that made ``pruned`` from ``original``.
        batches: calibration batches ``(x, y)``; ``x`` float ``(B, C, H, W)``.
        ridge: ``lam / mean diag(X^T X)`` for every layer; None (default) = chosen per layer (and per
            group) by generalised cross-validation from :data:`RIDGE_GRID`, so a layer with few rows
            for its unknowns (a linear layer: one row per image) stays near the cut's weights.
        positions: output positions sampled per image (seeded by ``seed``).
        prefix: how the pruned network's prefix is run before each refit, all giving the same result:
            ``"frontier"`` (:class:`~lassoprune.pruning.frontier.FrozenPrefix`: each node once, only the
            frozen frontier held; needs a ``torch.fx``-traceable network), ``"cache"``
            (:class:`~lassoprune.pruning.prefix_cache.FinishedModuleCache`: the outputs of finished
            modules held), ``"none"`` (the whole prefix for every layer) or ``"auto"`` (default: the
            frontier when the network traces, else the cache).
        targets_in_memory: the unpruned network's sampled outputs (the fit's targets, about
            ``images x positions x kept outputs x 4`` bytes per layer) are kept in memory up to this
            many bytes, else written to a temporary directory and read back one layer at a time.

    Returns:
        one :class:`LayerRefit` per refitted layer, in the order the network runs them.
    """
    if (ridge is not None and ridge < 0) or positions < 1:
        raise LassopruneError(f"reconstruction needs ridge >= 0 and positions >= 1; got {ridge}, {positions}")
    if prefix not in PREFIX_MODES:
        raise LassopruneError(f"unknown prefix mode {prefix!r}; choose one of {', '.join(PREFIX_MODES)}")
    images = [x for x, _ in batches]
    if not images:
        raise LassopruneError("reconstruction needs calibration batches: give data=[(x, y), ...]")
    plans = kept_positions(original, groups, keep)
    if not plans:
        return ()
    was_training = original.training
    original.eval()
    try:
        with tempfile.TemporaryDirectory(prefix="lassoprune-targets-") as spill:
            fit = _Fit(plans, positions, seed, targets_in_memory, Path(spill))
            return _refit_in_order(original, pruned.eval(), images, ridge, prefix, fit)
    finally:
        original.train(was_training)  # the caller's model is left in the mode it came in


@dataclass(frozen=True)
class _Fit:
    """The fixed settings of one reconstruction."""

    plans: Mapping[str, _Plan]
    positions: int
    seed: int
    targets_in_memory: int
    spill: Path


def _refit_in_order(original: nn.Module, pruned: nn.Module, images: Sequence[Tensor], ridge: float | None,
                    prefix: str, fit: _Fit) -> tuple[LayerRefit, ...]:  # fmt: skip
    """The refits of :func:`reconstruct`, both models in eval mode."""
    layers = dict(pruned.named_modules())
    names = {module: name for name, module in layers.items()}
    with channels_last_if_it_runs((original, pruned), images[0][:1]):
        paddings = layer_paddings(pruned, images[0][:1], [n for n in fit.plans])
        plain = [n for n in fit.plans if n not in paddings or paddings[n] is not None]
        order = [n for n in execution_order(pruned, images[0][:1]) if n in plain]
        norms = following_norms(pruned, images[0][:1], order)
        writes = {n: (n, names[norms[n]]) if n in norms else (n,) for n in order}  # what each refit changes
        inputs = _prefix_runner(pruned, order, [m for n in order for m in writes[n]], prefix)
        targets = _original_outputs(original, images, order, fit)
        refits = []
        with inputs:
            for name in order:
                layer = layers[name]
                stats = _accumulate(layer, inputs.of(name, images), targets.pop(name), paddings.get(name))
                refits.append(_refit(name, layer, fit.plans[name], stats, ridge, norms.get(name)))
                for written in writes[name]:
                    inputs.finish(written)
        return tuple(refits)


def layer_paddings(model: nn.Module, example: Tensor, names: Sequence[str]) -> dict[str, Padding | None]:
    """:func:`effective_padding` of every named layer that has its own forward (one pass on ``example``); a
    layer whose output is not a plain conv / linear of its weights maps to None and is left as cut (logged)."""
    modules = dict(model.named_modules())
    custom = [n for n in names if has_own_forward(modules[n])]
    found: dict[str, Padding | None] = {}
    if not custom:  # stock layers take their padding attribute: no probe pass
        return found

    def probe(name: str):
        def hook(layer: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            if name not in found:
                try:
                    found[name] = effective_padding(layer, inputs[0], out)
                except (RuntimeError, ValueError, TypeError):  # not a conv / linear of its input at all
                    found[name] = None
        return hook

    handles = [modules[n].register_forward_hook(probe(n)) for n in custom]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    skipped = [n for n, pad in found.items() if pad is None]
    if skipped:
        get_logger().info("reconstruction leaves %d layers as cut (their forward transforms the weights): %s",
                          len(skipped), ", ".join(skipped[:5]))
    return found


@contextmanager
def channels_last_if_it_runs(models: Sequence[nn.Module], example: Tensor) -> Iterator[bool]:
    """Hold the models' weights in channels-last layout for the block when every model runs so; yields whether.

    Convolutions on CPU (oneDNN) run about 1.5x faster with channels-last weights (ResNet-50 at 224 on two
    cores: 6.0 -> 3.8 s per 50 images; converting only the images does nothing for a one-channel input,
    whose layout is ambiguous), and the activations follow the weights' layout; the values are the same up
    to the summation order. A network that ``view``-s a channels-last activation fails on it, which one
    image tells, and keeps its layout. The layouts are restored afterwards (the values never change).
    """
    before = [_is_channels_last(model) for model in models]
    used = example.dim() == 4
    if used:
        for model in models:
            model.to(memory_format=torch.channels_last)
        try:
            with torch.no_grad():
                for model in models:
                    model(example)
        except RuntimeError:
            used = False
            _restore(models, before)
    try:
        yield used
    finally:
        if used:
            _restore(models, before)


def _is_channels_last(model: nn.Module) -> bool:
    return any(p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
               for p in model.parameters())


def _restore(models: Sequence[nn.Module], channels_last: Sequence[bool]) -> None:
    for model, was in zip(models, channels_last):
        model.to(memory_format=torch.channels_last if was else torch.contiguous_format)


# -- graph facts -------------------------------------------------------------------------------------------


def _fan_in(layer: nn.Module) -> int:
    return layer.in_channels if isinstance(layer, nn.Conv2d) else layer.in_features


def _fan_out(layer: nn.Module) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


@torch.no_grad()
def execution_order(model: nn.Module, example: Tensor) -> list[str]:
    """Names of the conv / linear layers in the order one forward pass runs them."""
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda _m, _i, n=n: order.append(n))
               for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        model(example)
    finally:
        for h in handles:
            h.remove()
    return list(dict.fromkeys(order))


@torch.no_grad()
def following_norms(model: nn.Module, example: Tensor, names: Sequence[str]) -> dict[str, nn.BatchNorm2d]:
    """For each bias-free conv of ``names``: the BatchNorm that reads its output tensor directly, if any."""
    modules = dict(model.named_modules())
    outputs: dict[int, tuple[str, Tensor]] = {}  # the tensors are held so that their ids are not reused
    found: dict[str, nn.BatchNorm2d] = {}

    def conv_hook(name: str):
        return lambda _m, _i, out: outputs.__setitem__(id(out), (name, out))

    def norm_hook(norm: nn.BatchNorm2d):
        def hook(_m: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            name, out = outputs.get(id(inputs[0]), (None, None))
            if name is not None and out is inputs[0]:
                found[name] = norm
        return hook

    handles = [modules[n].register_forward_hook(conv_hook(n)) for n in names
               if isinstance(modules[n], nn.Conv2d) and modules[n].bias is None]
    handles += [m.register_forward_pre_hook(norm_hook(m)) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        model(example)
    finally:
        for h in handles:
            h.remove()
    return found


# -- the data of the fit -----------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised by a hook once the wanted layer has been seen (the rest of the forward pass is skipped)."""


def _sample(count: int, positions: int, generator: torch.Generator) -> Tensor:
    """``positions`` distinct positions out of ``count`` (all of them, in order, when ``count`` is smaller)."""
    if count <= positions:
        return torch.arange(count)
    return torch.randperm(count, generator=generator)[:positions].sort().values


def _rows_of_output(layer: nn.Module, out: Tensor, kept_out: Tensor, where: Tensor | None) -> Tensor:
    """Output rows ``(B * P, C_out')`` at the sampled positions ``where`` (int64 ``(B, P)``; None for linear)."""
    if isinstance(layer, nn.Linear):
        return out.reshape(-1, out.shape[-1])[:, kept_out]
    last = out.permute(0, 2, 3, 1).flatten(1, 2)  # (B, L, C), a view for a channels-last map
    picked = last.gather(1, where[:, :, None].expand(-1, -1, last.shape[2]))  # (B, P, C)
    return picked[:, :, kept_out].reshape(-1, len(kept_out))


class _Responses:
    """The unpruned layers' sampled output rows and positions, per layer and batch, in memory or on disk."""

    def __init__(self, order: Sequence[str], spill: Path | None) -> None:
        self._index = {name: i for i, name in enumerate(order)}
        self._spill = spill
        self._held: dict[str, list[tuple[Tensor, Tensor | None]]] = {n: [] for n in order}

    def add(self, name: str, batch: int, rows: Tensor, where: Tensor | None) -> None:
        if self._spill is not None:  # raw bytes (a tenth of torch.save's time); shape and dtype kept here
            path = self._spill / f"{self._index[name]}-{batch}.bin"
            rows.detach().cpu().numpy().tofile(path)
            rows = _OnDisk(path, tuple(rows.shape), rows.dtype, rows.device)  # type: ignore[assignment]
        self._held[name].append((rows, where))

    def pop(self, name: str) -> list[tuple[Tensor, Tensor | None]]:
        """Every batch's ``(rows, positions)`` of layer ``name``, then forgotten."""
        return [(rows.load() if isinstance(rows, _OnDisk) else rows, where) for rows, where in self._held.pop(name)]


@dataclass(frozen=True)
class _OnDisk:
    """A tensor written as raw bytes; :meth:`load` reads it back (and deletes the file)."""

    path: Path
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    def load(self) -> Tensor:
        array = np.fromfile(self.path, dtype=torch.empty((), dtype=self.dtype).numpy().dtype)
        self.path.unlink()
        return torch.from_numpy(array).reshape(self.shape).to(self.device)


def _target_bytes(original: nn.Module, order: Sequence[str], fit: _Fit, images: Sequence[Tensor]) -> int:
    """An upper bound of the bytes the targets take: images x positions x kept outputs x 4 per layer."""
    count = sum(int(x.shape[0]) for x in images)
    modules = dict(original.named_modules())
    per_image = sum((fit.positions if isinstance(modules[n], nn.Conv2d) else 1) * len(fit.plans[n].kept_out)
                    for n in order)
    return count * per_image * images[0].element_size()


@torch.no_grad()
def _original_outputs(original: nn.Module, images: Sequence[Tensor], order: Sequence[str], fit: _Fit) -> _Responses:
    """Per layer, per batch: the unpruned layer's output rows (kept outputs) and the sampled positions."""
    modules = dict(original.named_modules())
    generator = torch.Generator().manual_seed(fit.seed)
    spill = fit.spill if _target_bytes(original, order, fit, images) > fit.targets_in_memory else None
    targets = _Responses(order, spill)
    batch = 0

    def hook(name: str):
        def grab(layer: nn.Module, _inputs: Any, out: Tensor) -> None:
            where = None
            if isinstance(layer, nn.Conv2d):
                count = out.shape[-2] * out.shape[-1]
                where = torch.stack([_sample(count, fit.positions, generator) for _ in range(out.shape[0])])
                where = where.to(out.device)
            targets.add(name, batch, _rows_of_output(layer, out, fit.plans[name].kept_out.to(out.device), where),
                        where)
        return grab

    handles = [modules[n].register_forward_hook(hook(n)) for n in order]
    try:
        for batch, x in enumerate(images):
            original(x)
    finally:
        for h in handles:
            h.remove()
    return targets


class _PrefixRunner:
    """The refitted layer's input on every batch, by one of :data:`PREFIX_MODES` (a context manager)."""

    def __init__(self, model: nn.Module, order: Sequence[str], pending: Sequence[str], mode: str) -> None:
        self._model = model
        self._frontier: FrozenPrefix | None = None
        self._cache: FinishedModuleCache | None = None
        if mode in ("auto", "frontier"):
            try:
                self._frontier = FrozenPrefix(model, order, pending)
            except UntraceableNetwork as error:
                if mode == "frontier":
                    raise LassopruneError(f"reconstruction prefix='frontier': {error}; use prefix='cache'") from error
        if self._frontier is None and mode != "none":
            self._cache = FinishedModuleCache(model, pending)
        self._installed = self._cache.installed() if self._cache is not None else nullcontext()

    def __enter__(self) -> _PrefixRunner:
        self._installed.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._frontier is not None:
            self._frontier.clear()
        self._installed.__exit__(*exc)

    def finish(self, name: str) -> None:
        for runner in (self._frontier, self._cache):
            if runner is not None:
                runner.finish(name)

    def of(self, name: str, images: Sequence[Tensor]) -> Iterator[Tensor]:
        """The first input of layer ``name`` on each batch, in order."""
        if self._frontier is not None:
            for batch, x in enumerate(images):
                yield self._frontier.layer_input(name, batch, x)
            return
        layer = dict(self._model.named_modules())[name]
        captured: list[Tensor] = []

        def grab(_m: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            captured.append(inputs[0])
            raise _Stop

        handle = layer.register_forward_pre_hook(grab)
        try:
            for batch, x in enumerate(images):
                if self._cache is not None:
                    self._cache.batch = batch
                try:
                    self._model(x)
                except _Stop:
                    pass
                yield captured.pop()
        finally:
            handle.remove()


def _prefix_runner(model: nn.Module, order: Sequence[str], pending: Sequence[str], mode: str) -> _PrefixRunner:
    with torch.no_grad():
        return _PrefixRunner(model, order, pending, mode)


def _input_rows(layer: nn.Module, x: Tensor, where: Tensor | None, padding: Padding | None = None) -> Tensor:
    """im2col rows of the layer's input at the sampled output positions: ``(G, B * P, D_g)``."""
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1])[None]
    assert where is not None
    cols = conv_patches(layer, x, where, padding)  # (B * P, C_in k k)
    groups = layer.groups
    return cols.reshape(-1, groups, cols.shape[-1] // groups).transpose(0, 1)


def conv_patches(layer: nn.Conv2d, x: Tensor, where: Tensor, padding: Padding | None = None) -> Tensor:
    """The input patches that ``layer`` reads at the flat output positions ``where`` (int64 ``(B, P)``).

    Row ``(b, p)`` is ``x[b, :, y s_h + i d_h - p_top, x s_w + j d_w - p_left]`` for ``(i, j)`` over the
    kernel (zero outside the map), flattened in the weight's ``(C_in, k_h, k_w)`` order: the im2col rows of
    ``F.unfold`` at those positions only, without unfolding the whole map. ``padding`` ``(left, right, top,
    bottom)`` is the zero padding the layer applies (default: its ``padding`` attribute; a conv that pads in
    its own forward, such as TensorFlow-style "same", passes what :func:`effective_padding` found).
    Returns ``(B * P, C_in k_h k_w)``.
    """
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    padding = padding if padding is not None else _symmetric(_padding(layer))
    left, right, top, _bottom = padding
    batch, channels, height, width = x.shape
    out_w = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    rows, cols = where // out_w, where % out_w  # (B, P)
    ys = rows[:, :, None] * sh + torch.arange(kh, device=x.device) * dh  # (B, P, kh), padded coordinates
    xs = cols[:, :, None] * sw + torch.arange(kw, device=x.device) * dw  # (B, P, kw)
    padded = F.pad(x, padding).permute(0, 2, 3, 1)  # (B, H', W', C)
    images = torch.arange(batch, device=x.device)[:, None, None, None]
    patches = padded[images, ys[:, :, :, None], xs[:, :, None, :]]  # (B, P, kh, kw, C)
    return patches.permute(0, 1, 4, 2, 3).reshape(-1, channels * kh * kw)


#: ``(left, right, top, bottom)`` zero padding, in ``F.pad``'s order.
Padding = tuple[int, int, int, int]


def _symmetric(pad: tuple[int, int]) -> Padding:
    return pad[1], pad[1], pad[0], pad[0]


def has_own_forward(layer: nn.Module) -> bool:
    """True for a conv / linear subclass that overrides ``forward`` or ``_conv_forward`` (it may pad or
    transform its weights)."""
    if isinstance(layer, nn.Conv2d) and type(layer)._conv_forward is not nn.Conv2d._conv_forward:
        return True
    return type(layer).forward not in (nn.Conv2d.forward, nn.Linear.forward)


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's "same" padding of one dimension: ``(before, after)``, the extra pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


@torch.no_grad()
def effective_padding(layer: nn.Module, x: Tensor, out: Tensor | None = None) -> Padding | None:
    """The zero padding under which the layer's output on ``x`` is a plain conv of ``x`` with its own weight and
    bias, or None when none is (its forward transforms the weights, e.g. weight standardisation: a refit of
    ``weight`` would not give the fitted output). Linear layers: ``(0, 0, 0, 0)`` or None likewise.

    Stock ``nn.Conv2d`` / ``nn.Linear`` are not probed. A subclass with its own forward is run on ``x`` and
    compared with its padding attribute and with TensorFlow-style "same" padding (timm's ``Conv2dSame``);
    ``out`` is its output on ``x`` when already known.
    """
    if not has_own_forward(layer):
        return (0, 0, 0, 0) if isinstance(layer, nn.Linear) else _symmetric(_padding(layer))
    want = layer(x) if out is None else out
    scale = float(want.abs().max()) or 1.0
    if isinstance(layer, nn.Linear):
        ok = float((F.linear(x, layer.weight, layer.bias) - want).abs().max()) <= 1e-4 * scale
        return (0, 0, 0, 0) if ok else None
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    top, bottom = _same_padding(x.shape[2], kh, sh, dh)
    left, right = _same_padding(x.shape[3], kw, sw, dw)
    for pad in (_symmetric(_padding(layer)), (left, right, top, bottom)):
        got = F.conv2d(F.pad(x, pad), layer.weight, layer.bias, layer.stride, 0, layer.dilation, layer.groups)
        if got.shape == want.shape and float((got - want).abs().max()) <= 1e-4 * scale:
            return pad
    return None


def _padding(layer: nn.Conv2d) -> tuple[int, int]:
    """The layer's zero padding as two integers (``"same"`` with odd kernels, ``"valid"``)."""
    if layer.padding_mode != "zeros":
        raise LassopruneError(f"reconstruction supports zero-padded convolutions; {layer} pads with "
                              f"{layer.padding_mode!r}: pass reconstruct=False")
    if layer.padding == "valid":
        return 0, 0
    if layer.padding == "same":
        reach = [d * (k - 1) for k, d in zip(layer.kernel_size, layer.dilation)]
        if any(r % 2 for r in reach):
            raise LassopruneError(f"reconstruction of {layer}: padding='same' with an even reach is "
                                  "asymmetric; pass reconstruct=False")
        return reach[0] // 2, reach[1] // 2
    return int(layer.padding[0]), int(layer.padding[1])


@dataclass
class _Stats:
    """Accumulated float64 moments of one layer's fit, per group ``g``.

    ``xx`` (G, D, D), ``xy`` (G, D, C_g), ``sx`` (G, D), ``sy`` (G, C_g), ``yy`` (G,) = sum of squares,
    ``n`` rows. When the fit has fewer rows than unknowns (n < D: a wide linear layer with one row per image,
    such as VGG-16's 25,088-input classifier at 224x224), the rows themselves are kept instead of the Gram:
    ``x`` (G, n, D) and ``y`` (G, n, C_g), with ``xx`` and ``xy`` None (see :func:`solve_ridge`).
    """

    xx: Tensor | None
    xy: Tensor | None
    sx: Tensor
    sy: Tensor
    yy: Tensor
    n: int
    x: Tensor | None = None
    y: Tensor | None = None

    @property
    def keeps_rows(self) -> bool:
        """True when the rows are kept (the dual form of the fit) instead of ``X^T X``."""
        return self.x is not None


def stats_of(x: Tensor, y: Tensor, keep_rows: bool = False) -> _Stats:
    """The moments of one batch of rows, float64 ``x`` (G, R, D) and ``y`` (G, R, C_g) (the rows themselves
    when ``keep_rows``)."""
    sums = (x.sum(1), y.sum(1), (y * y).sum((1, 2)), x.shape[1])
    if keep_rows:
        return _Stats(None, None, *sums, x=x, y=y)
    return _Stats(x.transpose(1, 2) @ x, x.transpose(1, 2) @ y, *sums)


def _add(a: _Stats, b: _Stats) -> _Stats:
    if a.keeps_rows:
        return _Stats(None, None, a.sx + b.sx, a.sy + b.sy, a.yy + b.yy, a.n + b.n,
                      x=torch.cat([a.x, b.x], 1), y=torch.cat([a.y, b.y], 1))
    return _Stats(a.xx + b.xx, a.xy + b.xy, a.sx + b.sx, a.sy + b.sy, a.yy + b.yy, a.n + b.n)


@torch.no_grad()
def _accumulate(layer: nn.Module, inputs: Iterable[Tensor], targets: Sequence[tuple[Tensor, Tensor | None]],
                padding: Padding | None = None) -> _Stats:  # fmt: skip
    """Accumulate the moments of the layer's fit from its input on each batch and the batch's targets (the rows
    themselves when there are fewer rows than unknowns)."""
    rows = sum(int(y_rows.shape[0]) for y_rows, _ in targets)
    keep_rows = rows < layer.weight[0].numel()  # D_g, the unknowns per output
    stats: _Stats | None = None
    for x, (y_rows, where) in zip(inputs, targets):
        xg = _input_rows(layer, x, where, padding).double()  # (G, R, D)
        groups = xg.shape[0]
        yg = y_rows.double().reshape(y_rows.shape[0], groups, -1).transpose(0, 1)  # (G, R, C_g)
        part = stats_of(xg, yg, keep_rows)
        stats = part if stats is None else _add(stats, part)
    assert stats is not None
    return stats


# -- the fit -----------------------------------------------------------------------------------------------


def _weights_as_matrix(layer: nn.Module) -> Tensor:
    """The layer's weights as ``(G, D_g, C_g)`` float64 (the fit's unknowns, same layout as the im2col rows)."""
    w = layer.weight.detach().double()
    if isinstance(layer, nn.Linear):
        return w.t()[None]
    groups = layer.groups
    return w.reshape(groups, w.shape[0] // groups, -1).transpose(1, 2)


def best_intercept(stats: _Stats, w: Tensor) -> Tensor:
    """The intercept minimising the residual for fixed weights: ``b = m_y - W^T m_x``, float64 ``(G, C_g)``."""
    return (stats.sy - (w * stats.sx[:, :, None]).sum(1)) / stats.n


def _centred(stats: _Stats, intercept: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(A, B, s_yy)``: ``X^T X``, ``X^T Y`` and ``||Y||^2`` per group, centred when the fit has an intercept.

    Centring removes the (unpenalised) intercept: with ``m_x = sx / n`` and ``m_y = sy / n``,
    ``A = xx - n m_x m_x^T``, ``B = xy - n m_x m_y^T``, ``s_yy = yy - n ||m_y||^2``.
    """
    if not intercept:
        return stats.xx, stats.xy, stats.yy
    n = stats.n
    mx, my = stats.sx / n, stats.sy / n
    return (stats.xx - n * mx[:, :, None] * mx[:, None, :], stats.xy - n * mx[:, :, None] * my[:, None, :],
            stats.yy - n * (my * my).sum(1))


def _inverse(d: Tensor, lam: Tensor) -> Tensor:
    """``1 / (d + lam)``, 0 where that is not positive (the minimum-norm solution for lam = 0)."""
    total = d + lam
    return torch.where(total > 1e-12 * d.amax(-1, keepdim=True).clamp_min(1e-300), 1.0 / total, 0.0)


def eigh_psd(a: Tensor) -> tuple[Tensor, Tensor]:
    """Eigen-decomposition of symmetric positive semi-definite ``a`` (``(G, D, D)``), eigenvalues clamped at 0.

    LAPACK's divide-and-conquer ``eigh`` can fail to converge on a rank-deficient Gram with many
    (near-)zero eigenvalues (seen on ResNet-18 at 32x32: 3,231 unknowns, 1,600 rows). Then a jitter of
    ``1e-10 * trace / D`` separates them (it shifts every eigenvalue by that, far below any ridge of
    :data:`RIDGE_GRID`, and is subtracted again), and an SVD is the last resort (for a PSD matrix its
    singular vectors are eigenvectors).
    """
    try:
        d, v = torch.linalg.eigh(a)
    except torch.linalg.LinAlgError:
        jitter = 1e-10 * a.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-300)  # (G,)
        eye = torch.eye(a.shape[-1], dtype=a.dtype)
        try:
            d, v = torch.linalg.eigh(a + jitter[:, None, None] * eye)
            d = d - jitter[:, None]
        except torch.linalg.LinAlgError:
            v, d, _ = torch.linalg.svd(a)
    return d.clamp_min(0.0), v


def solve_ridge(
    stats: _Stats, ridge: float | Sequence[float] | None, intercept: bool, prior: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Ridge least squares shrunk towards ``prior``, with an unpenalised intercept, per group.

    ``W = prior + (A + lam I)^{-1} (B - A prior)`` (A, B centred by :func:`_centred`),
    ``b = m_y - W^T m_x``; ``lam = ridge * trace(A) / D``. Solved in the eigenbasis
    ``A = V diag(d) V^T``. With ``ridge`` None, each group's ``ridge`` is the value of
    :data:`RIDGE_GRID` with the smallest generalised cross-validation score
    ``GCV = RSS / (n (1 - df / n)^2)``, ``df = sum_i d_i / (d_i + lam)`` (+1 for the intercept),
    among the values with ``df <= n / 2`` (the largest when none has), where RSS follows from the
    eigenbasis in O(D) per value; a sequence is a grid to choose from.

    With the rows kept (fewer rows than unknowns, :attr:`_Stats.keeps_rows`) the same solution comes from
    the n x n kernel ``K = X_c X_c^T = U diag(d) U^T`` (Woodbury): ``W = prior + X_c^T U diag(1 / (d + lam))
    U^T R`` with the residual of the prior ``R = Y_c - X_c prior``; ``A`` has the same non-zero eigenvalues, so
    the ridge scale and the GCV choice are identical, at O(n^2 D) instead of O(D^3).

    Args:
        prior: float64 ``(G, D, C_g)``, the weights to shrink towards (None = zeros).

    Returns:
        ``W`` float64 ``(G, D, C_g)``, ``b`` float64 ``(G, C_g)`` (zeros without an intercept) and the
        relative ridge used per group, float64 ``(G,)``.
    """
    grid = RIDGE_GRID if ridge is None else (ridge,) if isinstance(ridge, (int, float)) else tuple(ridge)
    if stats.keeps_rows:
        return _solve_dual(stats, grid, intercept, prior)
    a, b_mat, syy = _centred(stats, intercept)
    prior = torch.zeros_like(b_mat) if prior is None else prior
    d, v = eigh_psd(a)  # (G, D), (G, D, D)
    scale = d.mean(-1, keepdim=True)  # trace / D
    q_mat = v.transpose(1, 2) @ (b_mat - a @ prior)  # (G, D, C)
    rss0 = (prior * (a @ prior)).sum((1, 2)) - 2 * (prior * b_mat).sum((1, 2)) + syy  # (G,)
    rel = _choose_ridge(d, (q_mat * q_mat).sum(-1), rss0, scale, stats.n, intercept, grid)
    inv = _inverse(d, rel[:, None] * scale)
    w = prior + v @ (inv[:, :, None] * q_mat)
    b = best_intercept(stats, w) if intercept else torch.zeros_like(stats.sy)
    return w, b, rel


def _solve_dual(stats: _Stats, grid: tuple[float, ...], intercept: bool,
                prior: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """:func:`solve_ridge` from the kept rows (n < D): the n x n kernel instead of the D x D Gram."""
    x, y = stats.x, stats.y
    if intercept:
        x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    prior = torch.zeros(x.shape[0], x.shape[2], y.shape[2], dtype=x.dtype) if prior is None else prior
    residual = y - x @ prior  # (G, n, C)
    d, u = eigh_psd(x @ x.transpose(1, 2))  # (G, n), (G, n, n)
    scale = d.sum(-1, keepdim=True) / x.shape[2]  # trace(A) / D
    p = u.transpose(1, 2) @ residual  # (G, n, C); the primal q_i = sqrt(d_i) p_i
    rel = _choose_ridge(d, d * (p * p).sum(-1), (residual * residual).sum((1, 2)), scale, stats.n, intercept, grid)
    inv = _inverse(d, rel[:, None] * scale)
    w = prior + x.transpose(1, 2) @ (u @ (inv[:, :, None] * p))
    b = best_intercept(stats, w) if intercept else torch.zeros_like(stats.sy)
    return w, b, rel


def _choose_ridge(d: Tensor, q: Tensor, rss0: Tensor, scale: Tensor, n: int, intercept: bool,
                  grid: tuple[float, ...]) -> Tensor:  # fmt: skip
    """The relative ridge of ``grid`` with the smallest GCV per group (see :func:`solve_ridge`).

    ``d`` (G, K) eigenvalues of ``A``, ``q`` (G, K) squared projections of ``B - A prior`` on its eigenvectors
    (summed over outputs), ``rss0`` (G,) the prior's residual, ``scale`` (G, 1) = trace(A) / D.
    """
    rel = torch.tensor(grid, dtype=torch.float64)
    if len(grid) == 1:
        return rel.expand(d.shape[0])
    inv = _inverse(d[:, None, :], rel[None, :, None] * scale[:, :, None])  # (G, K, D)
    rss = rss0[:, None] - 2 * (q[:, None, :] * inv).sum(-1) + (d[:, None, :] * q[:, None, :] * inv**2).sum(-1)
    df = (d[:, None, :] * inv).sum(-1) + (1.0 if intercept else 0.0)
    # GCV degenerates towards interpolation (RSS 0, df -> n): at least two rows per effective parameter
    gcv = torch.where(df <= n / 2, rss.clamp_min(0.0) / (n * (1 - df / n) ** 2), torch.inf)
    gcv[:, -1] = torch.where(torch.isinf(gcv).all(-1), 0.0, gcv[:, -1])  # nothing qualifies: the largest
    return rel[gcv.argmin(-1)]  # (G,)


def residual_sum(stats: _Stats, w: Tensor, b: Tensor) -> float:
    """``||X W + 1 b^T - Y||_F^2`` from the moments (summed over groups)."""
    if stats.keeps_rows:
        return float(((stats.x @ w + b[:, None, :] - stats.y) ** 2).sum())
    n = stats.n
    quad = (w * (stats.xx @ w)).sum()
    cross = (w * stats.xy).sum()
    lin = (b[:, None, :] * (stats.sx[:, :, None] * w)).sum()  # sum_r 1 b^T . X W  = b . (sx^T W)
    return float(quad - 2 * cross + 2 * lin - 2 * (b * stats.sy).sum() + n * (b * b).sum() + stats.yy.sum())


def _spread(stats: _Stats) -> float:
    """``||Y - mean(Y)||_F^2`` (the scale the relative error is measured against)."""
    return float(stats.yy.sum() - (stats.sy * stats.sy).sum() / stats.n)


@torch.no_grad()
def _refit(name: str, layer: nn.Module, plan: _Plan, stats: _Stats, ridge: float | None,
           norm: nn.BatchNorm2d | None) -> LayerRefit:  # fmt: skip
    """Solve for one layer and write its new weights (and intercept) in place."""
    intercept = layer.bias is not None or norm is not None
    old_w = _weights_as_matrix(layer)
    old_b = best_intercept(stats, old_w) if intercept else torch.zeros_like(stats.sy)
    scale = max(_spread(stats), 1e-30)
    before = math.sqrt(max(residual_sum(stats, old_w, old_b), 0.0) / scale)
    w, b, chosen = solve_ridge(stats, ridge, intercept, prior=old_w)
    after = math.sqrt(max(residual_sum(stats, w, b), 0.0) / scale)
    if isinstance(layer, nn.Linear):
        layer.weight.copy_(w[0].t())
    else:
        layer.weight.copy_(w.transpose(1, 2).reshape(layer.weight.shape))
    shift = b.reshape(-1)
    if layer.bias is not None:
        layer.bias.copy_(shift)
    elif norm is not None:
        norm.running_mean.sub_(shift.to(norm.running_mean.dtype))
    return LayerRefit(name, int(plan.kept_in.numel()), plan.inputs_before, stats.n, before, after,
                      float(chosen.max()))
