"""Model registry (timm style) of small models that train on a CPU in seconds to a minute, and
the resolver that builds a model from any spec (zoo name, ``module:callable``, entry point).

>>> from hwlab.models import create_model, list_models, resolve
>>> model = create_model("lenet5", in_shape=(1, 28, 28), num_classes=10)   # nn.Sequential
>>> mine = resolve("mymodels:tiny_resnet", in_shape=(1, 28, 28), num_classes=10,
...                weights="tiny.safetensors")                                # any nn.Module

The classic zoo models are ``nn.Sequential`` (top-level children run in order; a residual or
transformer block is one child) with ``nn.ReLU`` (``nn.GELU`` in the ViT) modules; ``resnet18``,
``mobilenetv2`` and ``densenet`` are written like researchers' code (functional ``F.relu``,
residual adds, ``ReLU6``, ``torch.cat``) and are not Sequential: packages see every model
through ``hwlab.graph``.
Models from ``resolve`` can be any ``nn.Module``. The language model ``char-gpt``
(:func:`char_gpt`, token ids in, B x T x vocab logits out) is not in the image registry.
"""

from hwlab.models import _mlp_cnn, _researcher, _resnet, _vit  # noqa: F401  (register the built-in models)
from hwlab.models._gpt import CharGPT, KVCache, char_gpt
from hwlab.models._registry import create_model, list_models, register_model
from hwlab.models._spec import (
    ENTRY_POINT_GROUP,
    check_fits,
    check_spec,
    load_weights,
    model_names,
    resolve,
    spec_digest,
)

__all__ = ["ENTRY_POINT_GROUP", "CharGPT", "KVCache", "char_gpt", "check_fits", "check_spec", "create_model", "list_models",
           "load_weights", "model_names", "register_model", "resolve", "spec_digest"]
