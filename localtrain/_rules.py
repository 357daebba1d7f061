"""End-to-end, DGL, InfoPro and feature-reconstruction rules, and the ``make_rule`` factory."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from hwlab.errors import check, check_choice
from localtrain._base import LocalRule, _check_pair, interpolate_weight
from localtrain._heads import Decoder, dgl_head, infopro_head

__all__ = [
    "DGL",
    "E2E",
    "INFOPRO_LAMBDAS",
    "RULES",
    "FeatRecon",
    "InfoPro",
    "infopro_lambdas",
    "list_rules",
    "make_rule",
]

# (lambda_rec first, lambda_ce first, lambda_rec last, lambda_ce last) = (ixx_1, ixy_1, ixx_2,
# ixy_2) of InfoPro's published ResNet-32 / CIFAR-10 commands (official code, comand.sh), by K.
INFOPRO_LAMBDAS = {2: (5.0, 1.0, 0.0, 0.0), 4: (6.0, 0.0, 1.0, 2.0), 8: (5.0, 0.0, 0.0, 2.0),
                   16: (5.0, 0.05, 0.2, 0.5)}


def infopro_lambdas(K: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Published InfoPro weights for K modules (nearest published K, ties to the larger K).

    Returns ``((rec first, rec last), (ce first, ce last))``. K = 3 takes K = 4's values (K = 2's
    last-module pair is never used at K = 2 and is (0, 0)).
    """
    near = min(INFOPRO_LAMBDAS, key=lambda k: (abs(k - K), -k))
    a, b, c, d = INFOPRO_LAMBDAS[near]
    return (a, c), (b, d)


class E2E(LocalRule):
    """End-to-end backpropagation: one module (K = 1), the ordinary cross-entropy."""

    name = "e2e"

    def __init__(self, model, K: int = 1, in_shape=(1, 28, 28), balance="memory", lr=1e-3):
        super().__init__(model, 1, in_shape, balance, lr)  # K is ignored: E2E is one module


class DGL(LocalRule):
    """Decoupled greedy learning (Belilovsky et al. 2020): a small classifier head per module."""

    name = "dgl"

    def build_aux(self, k: int) -> nn.Module:
        return dgl_head(self.out_shapes[k], self.num_classes)

    def local_loss(self, k, out, inp, x, y):
        loss = F.cross_entropy(self.net["aux"][k](out), y)
        return loss, {}


class _ReconClassify(LocalRule):
    """Shared part of InfoPro and feature reconstruction: decoder + classifier, weighted sum."""

    def __init__(self, model, K=4, in_shape=(1, 28, 28), balance="memory", lr=1e-3,
                 lambda_rec=None, lambda_ce=None):
        caller = f"make_rule({self.name!r})"
        rec0, ce0 = self.default_lambdas(K)
        self.lambda_rec = rec0 if lambda_rec is None else _check_pair(lambda_rec, "lambda_rec", caller)
        self.lambda_ce = ce0 if lambda_ce is None else _check_pair(lambda_ce, "lambda_ce", caller)
        super().__init__(model, K, in_shape, balance, lr)

    def default_lambdas(self, K):
        return infopro_lambdas(K)

    def weights(self, k: int) -> tuple[float, float]:
        """(reconstruction weight, cross-entropy weight) of module k."""
        return (interpolate_weight(k, self.K, self.lambda_rec),
                interpolate_weight(k, self.K, self.lambda_ce))

    def aux_input_shape(self, k: int):
        return self.out_shapes[k]

    def target_shape(self, k: int):
        return self.in_shape

    def build_aux(self, k: int) -> nn.Module:
        shape = self.aux_input_shape(k)
        return nn.ModuleDict({
            "decoder": Decoder(shape, self.target_shape(k), image=self.is_image_target(k)),
            "head": infopro_head(shape, self.num_classes)})

    def is_image_target(self, k: int) -> bool:
        return True

    def aux_features(self, k: int, out: torch.Tensor) -> torch.Tensor:
        return out

    def target(self, k: int, inp: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x

    def local_loss(self, k, out, inp, x, y):
        w_rec, w_ce = self.weights(k)
        aux = self.net["aux"][k]
        z = self.aux_features(k, out)
        loss = out.new_zeros(())
        parts = {}
        if w_rec > 0:  # a zero weight skips the term (the official code computes and multiplies by 0)
            rec = aux["decoder"](z, self.target(k, inp, x))
            loss = loss + w_rec * rec
            parts[f"rec{k}"] = float(rec.detach())
        if w_ce > 0:
            ce = F.cross_entropy(aux["head"](z), y)
            loss = loss + w_ce * ce
            parts[f"ce{k}"] = float(ce.detach())
        return loss, parts


class InfoPro(_ReconClassify):
    """InfoPro (Wang et al., ICLR 2021): reconstruct the image + classify, weights interpolated.

    Loss of module k: ``lambda_rec_k * BCE(decoder(h_k), image) + lambda_ce_k * CE(head(h_k), y)``
    with the weights interpolated linearly from module 0 to module K-2 (see
    :func:`interpolate_weight`); defaults are the published ResNet-32 CIFAR-10 values for K
    (:data:`INFOPRO_LAMBDAS`). Differs from the paper: the task-relevant term is cross-entropy
    (InfoPro's ``local_loss_mode='cross_entropy'``, as in the MAN note), not the supervised
    contrastive loss of the published CIFAR commands.
    """

    name = "infopro"


class FeatRecon(_ReconClassify):
    """Local learning on transformers via feature reconstruction (Pathak et al., 2022).

    The decoder of module k reconstructs that module's **input** features (the detached output of
    module k-1; the image for module 0, with BCE as in InfoPro), mean squared error; a classifier
    head gives the cross-entropy; the module is trained on the weighted sum. Weights default to
    1 and 1 for every module (the paper gives no schedule); tokens are decoded by a per-token MLP
    (one of the paper's decoder families). Works on CNN feature maps as well.
    """

    name = "featrecon"

    def default_lambdas(self, K):
        return (1.0, 1.0), (1.0, 1.0)

    def target_shape(self, k: int):
        return self.module_in_shapes[k]

    def is_image_target(self, k: int) -> bool:
        return k == 0

    def target(self, k, inp, x):
        return inp.detach()


def _registry():
    from localtrain._auglocal import AugLocal
    from localtrain._checkpoint import Checkpoint
    from localtrain._man import MAN
    from localtrain._sgr import SGR

    return {"e2e": E2E, "checkpoint": Checkpoint, "dgl": DGL, "infopro": InfoPro, "man": MAN,
            "auglocal": AugLocal, "featrecon": FeatRecon, "sgr": SGR}


RULES = ("e2e", "checkpoint", "dgl", "infopro", "man", "auglocal", "featrecon", "sgr")


def list_rules() -> list[str]:
    """Names accepted by :func:`make_rule`."""
    return list(RULES)


def make_rule(name: str, model: nn.Module, K: int = 4, sample=None, **config) -> LocalRule:
    """Build the training task of rule ``name`` over ``model`` cut into ``K`` local modules.

    ``model``: any traceable network (see :func:`localtrain.split`). Common options:
    ``in_shape=(C, H, W)``, taken from ``sample`` (an input batch N x C x H x W) when omitted,
    else (1, 28, 28); an input shape the model rejects is an error naming ``in_shape``;
    ``balance="memory"|"layers"`` (default "memory": InfoPro*, cuts that balance each module's
    saved activations, auxiliary net included; "layers": equal unit counts), ``lr`` (for
    :meth:`LocalRule.step`). Rule options:
    ``lambda_rec``/``lambda_ce`` (infopro, man, featrecon), ``momentum`` (man), ``depth``/``tau``
    (auglocal), ``lam`` (sgr). ``checkpoint`` is E2E with the first K-1 modules under
    ``torch.utils.checkpoint`` (exact gradients). The model is trained in place.
    """
    check_choice(name, RULES, "name", "make_rule")
    if sample is not None:
        ok = isinstance(sample, torch.Tensor) and sample.ndim == 4 and len(sample) > 0
        check(ok, "sample", f"make_rule({name!r})", "an input batch N x C x H x W",
              getattr(sample, "shape", sample))
        config.setdefault("in_shape", tuple(int(s) for s in sample.shape[1:]))
    cls = _registry()[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model",
                                                                                  "K")]
    for key in config:
        check(key in allowed, "option", f"make_rule({name!r})", f"one of {', '.join(allowed)}",
              key)
    return cls(model, K=K, **config)
