"""HSIC features for the lasso pruning methods: calibration features, channel kernels, Gram form.

- ``calibration``: one forward pass recording each group's pooled features,
  its consumer outputs and the class means of the penultimate features
- ``kernels``: per-channel kernels (laplace, gaussian, median), responses, and ``G``, ``R`` of the
  HSIC lasso (docs/METHODS.md 1.1-1.2)
"""

from lassoprune.hsic.calibration import CalibrationFeatures, classifier_layer, collect_features
from lassoprune.hsic.kernels import (
    ClassFit,
    HsicGram,
    KernelKind,
    ResponseKind,
    centre_normalise,
    channel_kernels,
    class_fit_gram,
    class_output_response_kernels,
    class_response_kernels,
    gaussian_kernels,
    hsic_gram,
    kernel_matrices,
    output_kernel,
    pool_features,
)

__all__ = [
    "CalibrationFeatures",
    "ClassFit",
    "HsicGram",
    "KernelKind",
    "ResponseKind",
    "centre_normalise",
    "channel_kernels",
    "class_output_response_kernels",
    "class_response_kernels",
    "class_fit_gram",
    "classifier_layer",
    "collect_features",
    "gaussian_kernels",
    "hsic_gram",
    "kernel_matrices",
    "output_kernel",
    "pool_features",
]
