"""ProAct / HyReLU (Mousavi et al., arXiv 2406.06313): FT-ClipAct's successor with trained
thresholds, layer-wise everywhere but neuron-wise in the last activation.

From the paper and the notes of its toolbox (``shared/papers/newer-defences.md``), reimplemented:

* :class:`HyReLU` computes ``y = b - b * sigmoid(k (b - lam))`` of the site's activation ``b``
  (for a ReLU, ``max(0, x - x sigmoid(k (x - lam)))``, the paper's form): a smooth, trainable
  version of FT-ClipAct's "zero above the threshold", ``k = 20``. ``lam`` is a Parameter, so it
  sits in the weight memory and fault maps reach it (the paper's memory argument).
* :func:`proact` profiles the activations on ``data`` (per-neuron maxima), starts every site
  but the last at its layer maximum and the last at its per-neuron maxima, freezes every other
  parameter (and keeps BatchNorm in eval mode) and trains one site's thresholds at a time, from
  the last site back to the first, with cross-entropy on the labels plus cross-entropy to the
  unclipped model's soft targets (temperature 1), Adam at ``lr`` with cosine decay. A sweep of
  weight decays (4e-5, 4e-6, ..., 4e-15) pushes the thresholds down; after each epoch the model
  is kept only while the validation accuracy stays within ``tolerance`` (0.2 points) of the
  unclipped model, else the last good thresholds come back and the sweep moves on; a drop of 10
  points or more ends the site.

Differences from the paper, stated: ``epochs`` per weight decay defaults to 3 (the paper: up to
100, on a GPU), and the cosine schedule has no warm-up epochs (``hwlab.train`` has none).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from faultlab.clipact._modules import base_activation, clip_sites, eval_mode, require_sites, trace
from hwlab.errors import check, check_int, check_number
from hwlab.train import ClassificationTask, TrainConfig, evaluate, fit

__all__ = ["HyReLU", "proact"]

WEIGHT_DECAYS = tuple(4 * 10.0 ** -e for e in range(5, 16))  # the toolbox's sweep, 4e-5 .. 4e-15


class HyReLU(nn.Module):
    """The smooth clipped activation of one site; ``threshold`` is a scalar (layer-wise) or a
    tensor of the activation's per-sample shape (neuron-wise)."""

    _hwlab_leaf = True  # hwlab.graph: one opaque call
    _hwlab_activation = True  # and an activation site (its thresholds can be re-trained)

    def __init__(self, threshold: torch.Tensor, base: nn.Module | None = None, k: float = 20.0,
                 site: str | None = None):
        super().__init__()
        self.base = base if base is not None else nn.ReLU()
        self.k, self.site = float(k), site
        self.threshold = nn.Parameter(torch.as_tensor(threshold, dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.base(x)
        return b - b * torch.sigmoid(self.k * (b - self.threshold.to(b.dtype)))

    def extra_repr(self) -> str:
        shape = tuple(self.threshold.shape)
        return f"k={self.k:g}, thresholds={'layer-wise' if not shape else shape}"


class _Distill(ClassificationTask):
    """Labels plus the unclipped model's soft targets; every module stays in eval mode."""

    def __init__(self, model: nn.Module, teacher: nn.Module):
        super().__init__(model)
        self._teacher = (teacher,)  # not a Task module: never trained, moved or put in train mode

    def train(self, mode: bool = True):
        self.model.eval()  # BatchNorm statistics and dropout stay as deployed
        return self

    def backward(self, x, y):
        out = self.model(x)
        with torch.no_grad():
            soft = F.softmax(self._teacher[0](x), dim=1)
        loss = F.cross_entropy(out, y) - (soft * F.log_softmax(out, dim=1)).sum(1).mean()
        loss.backward()
        return {"loss": loss.item()}


class _Accept:
    """Keeps a site's thresholds only while validation accuracy holds (the acceptance rule)."""

    def __init__(self, threshold: nn.Parameter, val, reference: float, tolerance: float):
        self.threshold, self.val = threshold, val
        self.reference, self.tolerance = reference, tolerance
        self.good = threshold.detach().clone()
        self.aborted = False

    def on_epoch_end(self, state) -> None:
        acc = evaluate(state.task, self.val)
        if acc >= self.reference - self.tolerance:
            self.good = self.threshold.detach().clone()
            return
        with torch.no_grad():
            self.threshold.copy_(self.good)
        self.aborted = acc < self.reference - 0.10
        state.stop = True


def proact(model: nn.Module, data, val=None, *, epochs: int = 3, lr: float = 0.01,
           weight_decays=WEIGHT_DECAYS, tolerance: float = 0.002, k: float = 20.0,
           batch_size: int = 128, seed: int = 0, leaf_modules=()) -> nn.Module:
    """A NEW model whose unbounded activation sites are :class:`HyReLU` with ProAct-trained
    thresholds (see the module docstring); ``model`` is left untouched.

    ``data``: training data for the thresholds (a Split or an ``(x, y)`` pair); ``val`` (default
    ``data``): the acceptance rule's data. The result is a ``GraphModule`` with the model's
    parameter names plus ``<site path>.threshold`` per site.
    """
    c = "proact"
    epochs = check_int(epochs, "epochs", c, minimum=1)
    lr = check_number(lr, "lr", c, minimum=0, inclusive=(False, True))
    tolerance = check_number(tolerance, "tolerance", c, minimum=0, maximum=1)
    k = check_number(k, "k", c, minimum=0, inclusive=(False, True))
    decays = tuple(check_number(w, "weight_decays", c, minimum=0) for w in weight_decays)
    check(len(decays) > 0, "weight_decays", c, "a non-empty sequence of numbers >= 0", decays)
    val = data if val is None else val
    graph = trace(model, c, leaf_modules)
    sites = clip_sites(graph)
    require_sites(graph, sites, c)
    modules = {name: HyReLU(torch.tensor(float("inf")), base_activation(graph, s, c), k, name)
               for name, s in sites.items()}
    from hwlab.graph import rewrite

    with eval_mode(model):
        new = rewrite(model, {sites[n].name: m for n, m in modules.items()},
                      leaf_modules=leaf_modules)
    new.eval()
    hy = {m.site: m for m in new.modules() if isinstance(m, HyReLU)}
    order = list(sites)  # execution order
    _initialise(new, hy, order, data, batch_size)
    for p in new.parameters():
        p.requires_grad_(False)
    reference = evaluate(model, val)
    task = _Distill(new, model)
    for name in reversed(order):  # the last site first
        lam = hy[name].threshold
        lam.requires_grad_(True)
        for wd in decays:
            accept = _Accept(lam, val, reference, tolerance)
            cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=wd,
                              schedule="cosine", seed=seed, device="cpu")
            fit(task, data, cfg, callbacks=[accept])
            if accept.aborted:
                break
        lam.requires_grad_(False)
    return new.eval()


@torch.no_grad()
def _initialise(new: nn.Module, hy: dict, order: list, data, batch_size: int) -> None:
    """Per-neuron maxima of each site's activation over ``data``: the last site keeps the
    tensor (neuron-wise), the others their maximum (layer-wise)."""
    from hwlab.data import iter_batches

    maxima: dict = {}

    def hook(name):
        def record(module, args, output):
            b = module.base(args[0]).amax(0)  # per neuron
            maxima[name] = b if name not in maxima else torch.maximum(maxima[name], b)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in hy.items()]
    try:
        for x, _ in iter_batches(data, batch_size, "proact"):
            new(x)
    finally:
        for h in handles:
            h.remove()
    for name in order:
        top = maxima[name].clamp(min=0.0)
        value = top if name == order[-1] else top.max()
        hy[name].threshold.data = value.float().clone()
