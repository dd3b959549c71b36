"""HSIC features for the lasso pruning methods: calibration features, channel kernels, Gram form.

- ``calibration``: one forward pass recording each group's pooled features,
  its consumer outputs and the class means of the penultimate features
- ``kernels``: per-channel kernels (median, gaussian, laplace), targets, and ``G``, ``R`` of the
  HSIC lasso (METHODS.md 1.1-1.2)
"""

from lassoprune.hsic.calibration import CalibrationFeatures, classifier_layer, collect_features
from lassoprune.hsic.kernels import (
    ClassFit,
    HsicGram,
    KernelKind,
    TargetKind,
    centre_normalise,
    channel_kernels,
    class_fit_gram,
    class_output_target_kernels,
    class_target_kernels,
    gaussian_kernels,
    hsic_gram,
    kernel_matrices,
    output_target_kernel,
    pool_features,
)

__all__ = [
    "CalibrationFeatures",
    "ClassFit",
    "HsicGram",
    "KernelKind",
    "TargetKind",
    "centre_normalise",
    "channel_kernels",
    "class_output_target_kernels",
    "class_target_kernels",
    "class_fit_gram",
    "classifier_layer",
    "collect_features",
    "gaussian_kernels",
    "hsic_gram",
    "kernel_matrices",
    "output_target_kernel",
    "pool_features",
]
