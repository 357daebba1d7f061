"""SGR: Successive Gradient Reconciliation (Yang et al., ICML 2024, arXiv 2406.05222).

Non-greedy local learning trains module k on its own auxiliary loss ``L_k``; in end-to-end
backpropagation it would instead be driven by module k+1's gradient with respect to its input.
The paper shows that convergence needs the two to agree: the gradient of module k+1's loss with
respect to its INPUT, ``g_in = dL_{k+1}/dh_k``, and the gradient of module k's loss with respect
to its OUTPUT, ``g_out = dL_k/dh_k`` (the same tensor ``h_k``). SGR adds to each module's loss,
successively in forward order, a distance between its input gradient and the (constant) output
gradient of the module before it. Nothing flows into module k (its output enters module k+1
detached, and ``g_out`` is a constant), and there are no learnable parameters.

Mechanics (module k >= 1): ``x = h_{k-1}.detach().requires_grad_()``, ``L_k`` from module k and
its head, ``g_in = autograd.grad(L_k, x, create_graph=True)``, loss ``L_k + lam * D`` with
``D = B * ||g_in - g_out||^2`` (``B`` the batch: for mean-reduced losses this is the mean over
samples of the squared distance of per-sample gradients, so ``lam`` does not depend on the
batch), one backward (a double backward through module k only). Module 0 has no predecessor; the
last module's loss is the task cross-entropy, also reconciled with module K-2's output gradient.

Local losses are DGL's auxiliary classifiers (cross-entropy), the simplest local-BP setting of the
paper. **Ours, not verified against the paper**: the distance (squared L2, batch-scaled) and the
weight ``lam = 1`` (the method section and its tables were not readable here; see
../shared/papers/sgr.md). With ``lam = 0`` the rule is exactly DGL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hwlab.errors import check_number
from localtrain._rules import DGL

__all__ = ["SGR"]


class SGR(DGL):
    """DGL's local losses plus successive gradient reconciliation (see the module docstring).

    ``lam``: weight of the reconciliation term (default 1, ours). ``backward`` also reports, per
    module k >= 1, ``sgr{k}`` (the distance ``D``) and ``cos{k}`` (cosine between ``g_in`` and
    ``g_out``: the paper's diagnostic, higher when reconciled).
    """

    name = "sgr"

    def __init__(self, model, K=4, in_shape=(1, 28, 28), balance="memory", lr=1e-3,
                 lam: float = 1.0):
        self.lam = check_number(lam, "lam", "make_rule('sgr')", 0)
        super().__init__(model, K, in_shape, balance, lr)

    def backward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Module by module: local loss (+ reconciliation), one backward each, outputs detached."""
        losses: dict[str, float] = {}
        h, g_prev = x, None
        last = self.K - 1
        for k, module in enumerate(self.modules_):
            inp = h.detach().requires_grad_(g_prev is not None)
            out = module(inp)
            if k == last:
                loss = F.cross_entropy(out, y)
                losses["loss"] = float(loss.detach())
            else:
                loss, parts = self.local_loss(k, out, inp, x, y)
                losses[f"local{k}"] = float(loss.detach())
                losses.update(parts)
            wanted = ([inp] if g_prev is not None else []) + ([out] if k < last and self.lam > 0
                                                              else [])
            total = loss
            if wanted:
                grads = torch.autograd.grad(loss, wanted, create_graph=g_prev is not None,
                                            retain_graph=True)
                if g_prev is not None:
                    g_in = grads[0]
                    dist = len(x) * (g_in - g_prev).pow(2).sum()
                    total = loss + self.lam * dist
                    losses[f"sgr{k}"] = float(dist.detach())
                    losses[f"cos{k}"] = float(F.cosine_similarity(
                        g_in.detach().flatten(), g_prev.flatten(), dim=0))
                g_prev = grads[-1].detach() if k < last and self.lam > 0 else None
            total.backward()
            h = out.detach()
            del out, loss, total
        return losses
