"""Deployment: BatchNorm folding, frozen TorchScript and ONNX, checked outputs, warm-process latency.

- ``folding``: :func:`fold_batchnorm`, BatchNorm absorbed by the Conv / Linear before it
- ``package``: :func:`deploy`, the files a runtime loads, checked against the pruned model and timed
"""

from lassoprune.deployment.folding import FoldResult, fold_batchnorm
from lassoprune.deployment.package import DeployResult, deploy, load_torchscript

__all__ = ["DeployResult", "FoldResult", "deploy", "fold_batchnorm", "load_torchscript"]
