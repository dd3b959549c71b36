"""Model zoo: CIFAR ResNets, VGG, GoogLeNet, DenseNet-40, MobileNetV2, ImageNet ResNets.

Models are built by name through a timm-style registry::

    from lassoprune.models import create_model, list_models
    model = create_model("resnet56", num_classes=10, in_channels=3)
    model.lp_spec.to_dict()  # JSON-safe record to rebuild it with build_from_spec

Importing this package imports every family module, which registers its entries.
"""

from lassoprune.models import (  # noqa: F401  (imported to register the entries)
    densenet,
    googlenet,
    mobilenetv2,
    resnet_cifar,
    resnet_imagenet,
    vgg,
)
from lassoprune.models._registry import (
    ModelConfigError,
    ModelEntry,
    ModelSpec,
    build_from_spec,
    create_model,
    list_models,
    model_entry,
    register_model,
)

__all__ = [
    "ModelConfigError",
    "ModelEntry",
    "ModelSpec",
    "build_from_spec",
    "create_model",
    "list_models",
    "model_entry",
    "register_model",
]
