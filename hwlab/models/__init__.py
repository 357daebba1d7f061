"""Model registry (timm style) of small models that train on a CPU in seconds to a minute.

>>> from hwlab.models import create_model, list_models
>>> model = create_model("lenet5", in_shape=(1, 28, 28), num_classes=10)   # nn.Sequential

Every model is an ``nn.Sequential`` whose top-level children run in order (a residual or
transformer block is one child); activations are ``nn.ReLU`` (``nn.GELU`` in the ViT) modules.
"""

from hwlab.models import _mlp_cnn, _resnet, _vit  # noqa: F401  (register the built-in models)
from hwlab.models._registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
