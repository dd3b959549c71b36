"""Training hyper-parameters as one validated dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lassoprune.errors import LassopruneError

SCHEDULES = ("cosine", "multistep", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`lassoprune.training.fit`.

    Attributes:
        epochs: number of passes over the training set.
        lr: peak learning rate (reached at the end of warm-up).
        momentum, nesterov, weight_decay: SGD settings (weight decay is L2 on
            every parameter, the CIFAR convention).
        schedule: ``cosine`` (to 0 at the end), ``multistep`` (times ``gamma`` at
            each fraction of ``milestones``) or ``constant``.
        milestones: for ``multistep``, fractions of the total epochs, e.g. (0.5, 0.75).
        warmup_epochs: linear warm-up from ``lr / 10`` (may be fractional).
        label_smoothing: cross-entropy label smoothing.
        seed: seeds initial weights (when the caller builds the model after
            :func:`seed_everything`), shuffling and augmentation.
        amp: mixed precision (bfloat16 autocast); ``None`` = on for CUDA only.
        channels_last: NHWC memory format; ``None`` = on for CUDA only.
        grad_clip: max global grad norm (0 = off).
        log_every: progress bar refresh in steps.
    """

    epochs: int = 30
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    amp: bool | None = None
    channels_last: bool | None = None
    grad_clip: float = 0.0
    log_every: int = 10
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        _check(all(0 < m < 1 for m in self.milestones), f"milestones are fractions in (0, 1), got {self.milestones}")
        _check(0 <= self.warmup_epochs < self.epochs, f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
        _check(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _check(not (self.nesterov and self.momentum == 0), "nesterov needs momentum > 0")
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists)."""
        out = asdict(self)
        out["milestones"] = list(self.milestones)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error that lists the valid ones."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - valid)
        _check(not unknown, f"unknown training option(s) {unknown}; valid: {', '.join(sorted(valid))}")
        return cls(**data)

    def resume_signature(self) -> dict[str, Any]:
        """The settings that must not change when a run is resumed."""
        out = self.to_dict()
        for volatile in ("log_every", "extra"):
            out.pop(volatile)
        return out


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise LassopruneError(message)
