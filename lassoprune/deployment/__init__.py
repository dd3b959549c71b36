"""Deployment: BatchNorm folding, frozen TorchScript, ONNX and AOTInductor packages, checked outputs,
warm-process latency.

- ``folding``: :func:`fold_batchnorm`, BatchNorm absorbed by the Conv / Linear before it
- ``package``: :func:`deploy`, the files a runtime loads, checked against the pruned model and timed
"""

from lassoprune.deployment.folding import FoldResult, fold_batchnorm
from lassoprune.deployment.package import RUNTIMES, DeployResult, deploy, load_aoti, load_torchscript

__all__ = ["RUNTIMES", "DeployResult", "FoldResult", "deploy", "fold_batchnorm", "load_aoti", "load_torchscript"]
