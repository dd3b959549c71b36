"""Weight initialisation shared by the zoo (one dispatch over layer types)."""

from __future__ import annotations

from torch import nn

LINEAR_INITS = ("kaiming-uniform", "normal", "default")


def init_weights(model: nn.Module, linear: str = "kaiming-uniform") -> None:
    """He normal (fan-out, ReLU gain) for convs (He et al. 2015), BatchNorm to identity.

    Args:
        linear: classifier init: ``kaiming-uniform`` (linear gain, zero bias),
            ``normal`` (N(0, 0.01), zero bias, the VGG / MobileNetV2 recipe) or
            ``default`` (PyTorch's own, as torchvision's ResNets).
    """
    if linear not in LINEAR_INITS:
        raise ValueError(f"unknown linear init {linear!r}; valid: {', '.join(LINEAR_INITS)}")
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and linear != "default":
            if linear == "normal":
                nn.init.normal_(module.weight, 0.0, 0.01)
            else:
                nn.init.kaiming_uniform_(module.weight, nonlinearity="linear")
            nn.init.zeros_(module.bias)
