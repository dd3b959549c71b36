"""Shared helpers of the pruning tests (imported by the test modules beside it)."""

import torch
from torch import nn

import lassoprune as lp


def model_with_random_bn(name: str = "resnet20", num_classes: int = 10) -> nn.Module:
    """A zoo model in eval mode with random BatchNorm statistics and affine terms.

    Fresh BatchNorm layers are the identity; randomising them makes channels
    differ and makes masked channels non-trivially zero, so the equivalence
    tests of pruned vs masked models can fail.
    """
    torch.manual_seed(0)
    return randomise_batchnorm(lp.create_model(name, num_classes=num_classes).eval())


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Random BatchNorm statistics and affine terms (seeded), in place; returns the model in eval mode."""
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            module.bias.data.copy_(torch.rand(c, generator=gen) * 0.4 - 0.2)
    return model.eval()
