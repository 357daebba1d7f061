"""Weight clipping during training (Stutz et al., MLSys 2021, section 4.2): ``w <- clamp(w, +-w_max)``.

Constraining the weights to ``[-w_max, w_max]`` while minimising cross-entropy makes the network
spread its function over more weights, so one flipped bit of a quantised weight (whose range is
then at most ``w_max``) changes the logits less. The paper clips every step before quantising
(Algorithm 1, line 6) with ``w_max = 0.1`` for its headline CIFAR-10 numbers.

* :func:`clip_weights` clamps in place (no autograd) and returns how many elements changed;
* :class:`ClippedTask` wraps any :class:`hwlab.train.Task` (or a model, as a classification task)
  so that ``hwlab.train.fit`` clips before every forward (Algorithm 1) and after every optimiser
  step (so the returned weights are inside the range too).

Differences from the paper: only the weights of Conv / Linear layers are clipped by default
(``include_bias=True`` adds their biases); normalisation parameters are never clipped (the paper's
networks use group/batch normalisation with reparameterised scales, ours use plain BatchNorm, whose
scale must be free).
"""

from __future__ import annotations

import torch
from torch import nn

from hwlab.errors import check, check_bool, check_number
from hwlab.train import Task, as_task

__all__ = ["W_MAX", "ClippedTask", "clip_weights", "clipped_parameters"]

W_MAX = 0.1  # the paper's Clipping[0.1] (CIFAR-10 SimpleNet: 8.93 % error at p = 1 %, 8 bit)
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _check_w_max(w_max, caller: str) -> float:
    return check_number(w_max, "w_max", caller, 0, inclusive=(False, True))


def clipped_parameters(model: nn.Module, include_bias: bool = False) -> list[torch.Tensor]:
    """The floating-point weights (and biases) of the Conv / Linear layers, each once."""
    out, seen = [], set()
    for module in model.modules():
        if not isinstance(module, _LAYERS):
            continue
        for name in ("weight", "bias") if include_bias else ("weight",):
            p = getattr(module, name, None)
            if isinstance(p, torch.Tensor) and p.is_floating_point() and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def clip_weights(model: nn.Module, w_max: float = W_MAX, include_bias: bool = False) -> int:
    """Clamp the Conv / Linear weights of ``model`` to ``[-w_max, w_max]`` in place.

    Returns the number of elements that were outside the range. Runs under ``no_grad`` (the
    optimiser's state is untouched); int8 (already quantised) layers are skipped.
    """
    check(isinstance(model, nn.Module), "model", "clip_weights", "a torch.nn.Module",
          type(model).__name__)
    w_max = _check_w_max(w_max, "clip_weights")
    return _clip(clipped_parameters(model, include_bias), w_max)


@torch.no_grad()
def _clip(params, w_max: float) -> int:
    changed = 0
    for p in params:
        changed += int((p.abs() > w_max).sum())
        p.clamp_(-w_max, w_max)
    return changed


class ClippedTask(Task):
    """``task`` with its Conv / Linear weights clipped to ``[-w_max, w_max]`` around every step.

    ``fit(ClippedTask(model), data, config)`` trains ``model`` in place under weight clipping.
    ``task_or_model``: any Task (its modules are clipped) or an ``nn.Module`` (trained as a
    ``ClassificationTask``). The number of elements clipped after the last step is kept in
    ``last_clipped``.
    """

    def __init__(self, task_or_model, w_max: float = W_MAX, include_bias: bool = False):
        self.inner = as_task(task_or_model, "ClippedTask")
        self.w_max = _check_w_max(w_max, "ClippedTask")
        self.include_bias = check_bool(include_bias, "include_bias", "ClippedTask", "a bool")
        self.last_clipped = 0

    def modules(self) -> list[nn.Module]:
        return self.inner.modules()

    def _params(self):
        return [p for m in self.modules() for p in clipped_parameters(m, self.include_bias)]

    def backward(self, x, y):
        _clip(self._params(), self.w_max)  # Algorithm 1, line 6: clip before quantising
        return self.inner.backward(x, y)

    def after_step(self) -> None:
        self.last_clipped = _clip(self._params(), self.w_max)
        self.inner.after_step()

    def predict(self, x):
        return self.inner.predict(x)
