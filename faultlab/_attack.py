"""The worst case: the progressive bit search (PBS) of Rakin, He and Fan (ICCV 2019).

A research tool for measuring robustness: how few chosen bit flips of the stored int8 weights
take a model to chance, against the same number of random flips. Implemented from the paper and
``shared/papers/bit-flip-attack.md`` (the official code is CC BY-NC-SA: not used).

One iteration, on a fixed attack batch whose labels are the clean model's own predictions:

1. the loss and its gradient ``g = dL/dw`` with respect to every attacked integer weight (the
   layer computes ``w * scale``: the gradient flows through the dequantisation);
2. in each layer, the ``k_top`` weights with the largest ``|g|``; for their bits ``i`` the
   first-order loss change of a flip is ``g * delta`` with ``delta = +b_i`` for a 0 -> 1 flip and
   ``-b_i`` for 1 -> 0 (two's complement bit values ``b = 1, 2, ..., 64, -128``); only flips that
   raise the loss (``g * delta > 0``) are candidates and the layer's best ``n_b`` form its
   candidate set;
3. every layer's candidates are installed in turn and the loss measured; the layer with the
   largest loss wins. If it does not raise the loss, ``n_b`` grows by one and 2-3 repeat;
4. the winning flips are committed (a later iteration may flip a bit back).

The result is ordinary and replayable: ``AttackResult.fmap`` is a :class:`~faultlab.FaultMap`
of flips (the bits that differ from the clean model), so ``inject``, ``campaign`` and the store
take it like any random map; ``history`` has the loss and accuracy after every iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from faultlab._faults import KINDS, FaultMap
from faultlab._quant import _Int8Weight
from hwlab.errors import check, check_int, check_number, fail

__all__ = ["AttackResult", "attackable_layers", "bit_flip_attack", "random_flip_accuracy",
           "random_flips"]

# the value of bit i of a word: two's complement (symmetric int8) or unsigned (asymmetric int8)
_BIT_VALUES = {True: torch.tensor([1, 2, 4, 8, 16, 32, 64, -128], dtype=torch.float32),
               False: torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.float32)}
_FLIP = KINDS.index("flip")


@dataclass(frozen=True)
class AttackResult:
    """What :func:`bit_flip_attack` found: the flips and how the model fell."""

    fmap: FaultMap  # the bits that differ from the clean model at the end (replayable)
    history: pd.DataFrame  # iteration, layer, n_b, flips, hamming, loss, accuracy (+ physical)
    clean_accuracy: float  # of the evaluation data before any flip
    target_accuracy: float  # the stop criterion
    reached: bool  # accuracy <= target_accuracy within the budget

    @property
    def flips(self) -> int:
        """Committed flips (iterations x their n_b; a bit flipped back counts twice)."""
        return int(self.history.flips.iloc[-1]) if len(self.history) else 0

    @property
    def flips_to_target(self) -> int | None:
        """Flips when the accuracy first reached the target (None: never within the budget)."""
        hit = self.history[self.history.accuracy <= self.target_accuracy]
        return int(hit.flips.iloc[0]) if len(hit) else None

    @property
    def physical_to_target(self) -> int | None:
        """ECC-aware attack: physical flips when the accuracy first reached the target."""
        hit = self.history[self.history.accuracy <= self.target_accuracy]
        if "physical" not in hit or not len(hit):
            return None
        return int(hit.physical.iloc[0])

    @property
    def physical_flips(self) -> int | None:
        """ECC-aware attack (``ecc="secded"``): the physical flips, check bits included, that
        make the decoder return the attacked data (None for a plain attack)."""
        if "physical" not in self.history or not len(self.history):
            return None if "physical" not in self.history else 0
        return int(self.history.physical.iloc[-1])


def attackable_layers(model: nn.Module, layers=None,
                      caller: str = "bit_flip_attack") -> dict[str, nn.Module]:
    """``{weight parameter name: module}`` of the integer-coded layers of ``model``
    (``faultlab.quantize_int8``, any scheme and granularity; ``faultlab.quantize`` int8, int4,
    mxint8), in module order, restricted to ``layers`` (module names)."""
    from faultlab._attack_formats import is_attackable

    found = {f"{n}.weight" if n else "weight": m for n, m in model.named_modules()
             if isinstance(m, _Int8Weight) or is_attackable(m)}
    check(len(found) > 0, "model", caller, "a model with integer weight codes "
          "(faultlab.quantize_int8(model) or faultlab.quantize(model, 'int8' | 'int4' | "
          "'mxint8'))", type(model).__name__)
    if layers is None:
        return found
    names = [layers] if isinstance(layers, str) else list(layers)
    out = {}
    for name in names:
        key = f"{name}.weight"
        check(key in found, "layers", caller,
              f"names of int8 layers ({', '.join(k[:-7] for k in found)})", name)
        out[key] = found[key]
    return out


def bit_flip_attack(model: nn.Module, data, *, flips: int = 30, target_accuracy=None,
                    k_top: int | None = None, attack_size: int = 128, eval_data=None,
                    layers=None, max_bits_per_layer: int = 8, seed: int = 0,
                    ecc: str | None = None, progress=None) -> AttackResult:
    """Progressive bit search on the integer weight codes of ``model`` (see the module doc;
    ``faultlab.quantize`` int8 / int4 / mxint8 element codes: :mod:`faultlab._attack_formats`).

    ``data``: where the attack batch comes from (a Split, an ``(x, y)`` pair, ...): its first
    ``attack_size`` samples after a seeded shuffle, labelled with the clean model's predictions.
    ``eval_data`` (default ``data``) measures the accuracy after every iteration; the attack
    stops once it is <= ``target_accuracy`` (default ``1 / classes + 0.01``, the paper's 11 % for
    ten classes) or after ``flips`` committed flips. ``k_top``: weights per layer whose bits are
    candidates (None: all, the CIFAR setting; the ImageNet script uses 10). ``layers``: int8
    module names to attack (default all). ``model`` is not changed.

    ``ecc="secded"``: the weights sit in Hsiao (72, 64) SEC-DED memory and the attacker must beat
    the code (:mod:`faultlab._attack_ecc`): each data flip costs the physical flips (data + check
    bits) that make the decoder return it silently, flips are ranked by loss increase per
    physical flip, and ``history.physical`` / ``physical_flips`` count them.
    """
    c = "bit_flip_attack"
    check(isinstance(model, nn.Module), "model", c, "a torch.nn.Module", type(model).__name__)
    flips = check_int(flips, "flips", c, minimum=1)
    attack_size = check_int(attack_size, "attack_size", c, minimum=1)
    max_bits = check_int(max_bits_per_layer, "max_bits_per_layer", c, minimum=1, maximum=64)
    if k_top is not None:
        k_top = check_int(k_top, "k_top", c, minimum=1)
    seed = check_int(seed, "seed", c, minimum=0)
    check(ecc in (None, "secded"), "ecc", c, "None or 'secded'", ecc)
    targets = attackable_layers(model, layers)
    x_att, y_att = _attack_batch(model, data, attack_size, seed, c)
    from hwlab.data import as_xy

    x_ev, y_ev = as_xy(eval_data if eval_data is not None else data, c)
    classes = int(_logits(model, x_ev[:2]).shape[1])
    if target_accuracy is None:
        target_accuracy = 1.0 / classes + 0.01
    target_accuracy = check_number(target_accuracy, "target_accuracy", c, minimum=0, maximum=1)
    names = list(targets)
    clean = {n: targets[n].weight.detach().clone() for n in names}
    was_training = model.training
    model.eval()
    try:
        cost = None
        if ecc is not None:
            from faultlab._attack_ecc import EccCost

            cost = EccCost(targets)
        return _search(model, targets, names, clean, x_att, y_att, x_ev, y_ev, flips,
                       target_accuracy, k_top, max_bits, progress, cost)
    finally:
        with torch.no_grad():
            for n in names:
                targets[n].weight.copy_(clean[n])
        model.train(was_training)


def _search(model, targets, names, clean, x_att, y_att, x_ev, y_ev, budget, target, k_top,
            max_bits, progress, cost=None) -> AttackResult:
    clean_acc = _accuracy(model, x_ev, y_ev)
    loss = _loss(model, x_att, y_att)
    rows, done, it = [], 0, 0
    accuracy = clean_acc
    while done < budget and accuracy > target:
        grads = _grads(model, targets, x_att, y_att)
        best = None
        for n_b in range(1, max_bits + 1):
            best = _cross_layer(model, targets, names, grads, k_top, n_b, x_att, y_att,
                                loss, cost)
            if best is not None and best[0] > loss:
                break
        if best is None or best[0] <= loss:
            break  # no flip of up to max_bits bits in any layer raises the loss
        new_loss, name, flat, bits = best
        _xor(targets[name].weight, flat, bits)
        if cost is not None:
            cost.commit(name, flat.numpy(), bits.numpy())
        loss, done, it = new_loss, done + len(flat), it + 1
        accuracy = _accuracy(model, x_ev, y_ev)
        rows.append({"iteration": it, "layer": name[:-7], "n_b": len(flat), "flips": done,
                     "hamming": _hamming(targets, clean), "loss": loss, "accuracy": accuracy,
                     **({} if cost is None else {"physical": cost.total})})
        if progress is not None:
            progress(done, budget, f"flip {done}: accuracy {accuracy:.3f}")
    fmap = _diff_map(model, targets, clean)
    columns = ["iteration", "layer", "n_b", "flips", "hamming", "loss", "accuracy"]
    history = pd.DataFrame(rows, columns=columns + ([] if cost is None else ["physical"]))
    return AttackResult(fmap, history, clean_acc, float(target), accuracy <= target)


def _attack_batch(model, data, n, seed, caller):
    from hwlab.data import as_xy

    x, _ = as_xy(data, caller)
    check(len(x) > 0, "data", caller, "a non-empty dataset", "no samples")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    x = x[order]
    with torch.no_grad():
        was = model.training
        model.eval()
        y = _logits(model, x).argmax(1)  # the model's own labels: no label leaking
        model.train(was)
    return x, y


def _logits(model, x):
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise fail("model", "bit_flip_attack", "a classifier returning logits of shape "
                   "batch x classes", type(out).__name__ if not isinstance(out, torch.Tensor)
                   else f"shape {tuple(out.shape)}")
    return out


@torch.no_grad()
def _loss(model, x, y) -> float:
    return float(F.cross_entropy(_logits(model, x), y))


@torch.no_grad()
def _accuracy(model, x, y, batch: int = 500) -> float:
    hits = sum(int((_logits(model, x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
               for i in range(0, len(x), batch))
    return hits / len(x)


def _grads(model, targets, x, y) -> dict[str, torch.Tensor]:
    """dL/dq of every attacked integer word: dL/dW of the dequantised weight times its scale
    (``W = q * scale`` or ``(u - 127) * scale + offset``: per tensor or per channel)."""
    floats = {}
    try:
        for n, m in targets.items():
            w = m.dequantized(torch.float32).detach().requires_grad_(True)
            floats[n] = w
            m.dequantized = lambda dtype, w=w: w.to(dtype)  # this forward reads the leaf
        with torch.enable_grad():
            loss = F.cross_entropy(_logits(model, x), y)
            grads = torch.autograd.grad(loss, list(floats.values()))
    finally:
        for m in targets.values():
            m.__dict__.pop("dequantized", None)
    return {n: (g * targets[n].scale).reshape(-1) if isinstance(targets[n], _Int8Weight)
            else g for n, g in zip(floats, grads)}  # quantize() layers: dL/dW (_attack_formats)


def _candidates(q: torch.Tensor, g: torch.Tensor, k_top, n_b, signed: bool = True,
                cost=None):
    """(flat indices, bits) of the ``n_b`` flips of one layer with the largest first-order loss
    increase among its ``k_top`` weights of largest ``|g|`` (None: no flip raises the loss);
    ``cost(top) -> k x 8`` physical flips per candidate: ranked by increase per physical flip."""
    flat_q = q.reshape(-1)
    k = flat_q.numel() if k_top is None else min(k_top, flat_q.numel())
    top = torch.topk(g.abs(), k).indices  # k
    bits = (flat_q[top].view(torch.uint8).to(torch.int16)[:, None]
            >> torch.arange(8, dtype=torch.int16)) & 1  # k x 8
    value = _BIT_VALUES[signed]
    delta = torch.where(bits == 0, value, -value)  # k x 8: the word's change of each flip
    gain = g[top][:, None] * delta  # first-order loss change
    gain = torch.where(gain > 0, gain, torch.zeros(()))
    if cost is not None:
        gain = gain / cost(top).clamp(min=1).to(gain.dtype)
    n = min(n_b, int((gain > 0).sum()))
    if n < n_b:
        return None
    best = torch.topk(gain.reshape(-1), n).indices
    return top[best // 8], (best % 8).to(torch.int64)


def _cross_layer(model, targets, names, grads, k_top, n_b, x, y, loss0=0.0, cost=None):
    """(loss, layer, flat indices, bits) of the layer whose candidate flips raise the loss most
    (ECC-aware: most per physical flip)."""
    best, best_score = None, None
    for name in names:
        w = targets[name].weight
        grid = None if cost is None else (lambda top, n=name: cost.marginal_grid(n, top))
        if isinstance(targets[name], _Int8Weight):
            cand = _candidates(w.detach(), grads[name], k_top, n_b,
                               signed=targets[name].scheme == "symmetric", cost=grid)
        else:
            from faultlab._attack_formats import stored_candidates

            cand = stored_candidates(targets[name], grads[name], k_top, n_b, grid)
        if cand is None:
            continue
        flat, bits = cand
        _xor(w, flat, bits)
        try:
            loss = _loss(model, x, y)
        finally:
            _xor(w, flat, bits)  # XOR twice: the layer is clean again
        if math.isnan(loss):
            continue
        score = loss if cost is None else (loss - loss0) / max(
            cost.cost_of(name, flat.numpy(), bits.numpy()), 1)
        if best is None or score > best_score:
            best, best_score = (loss, name, flat, bits), score
    return best


@torch.no_grad()
def _xor(w: torch.Tensor, flat: torch.Tensor, bits: torch.Tensor) -> None:
    words = w.view(-1).view(torch.uint8)
    for f, b in zip(flat.tolist(), bits.tolist()):  # n_b flips (a handful) per iteration
        words[f] ^= 1 << b


def _hamming(targets, clean) -> int:
    return sum(int(_popcount(targets[n].weight.view(torch.uint8) ^ clean[n].view(torch.uint8)))
               for n in targets)


def _popcount(a: torch.Tensor) -> int:
    a = a.reshape(-1).to(torch.int16)
    return int(sum(((a >> i) & 1).sum() for i in range(8)))


def _diff_map(model, targets, clean) -> FaultMap:
    """The flips that turn the clean weights into the attacked ones, over the model's params."""
    names = [n for n, _ in model.named_parameters()]
    dtypes = [str(p.dtype).replace("torch.", "") for _, p in model.named_parameters()]
    params, index, bit = [], [], []
    for n in targets:
        diff = (targets[n].weight.view(torch.uint8) ^ clean[n].view(torch.uint8)).reshape(-1)
        for f in torch.nonzero(diff).reshape(-1).tolist():
            for b in range(8):
                if (int(diff[f]) >> b) & 1:
                    params.append(names.index(n))
                    index.append(f)
                    bit.append(b)
    eligible = 8 * sum(targets[n].weight.numel() for n in targets)
    order = np.lexsort((bit, index, params)) if params else np.zeros(0, np.int64)
    return FaultMap(tuple(names), tuple(dtypes), np.asarray(params, np.int32)[order],
                    np.asarray(index, np.int64)[order], np.asarray(bit, np.uint8)[order],
                    np.full(len(params), _FLIP, np.int8), eligible, None,
                    {"attack": "pbs"})


def random_flips(model: nn.Module, n: int, seed: int = 0, layers=None,
                 mode: str = "layer") -> FaultMap:
    """``n`` distinct random flips of the int8 weights, the attack's baseline.

    ``mode="layer"``: a layer uniformly, a weight in it uniformly, one of its 8 bits uniformly
    (the paper's baseline: small layers are over-sampled); ``"bit"``: uniform over every bit of
    the attacked weights (``faultlab.BitFlip(count=n)`` on them).
    """
    c = "random_flips"
    n = check_int(n, "n", c, minimum=0)
    seed = check_int(seed, "seed", c, minimum=0)
    check(mode in ("layer", "bit"), "mode", c, "one of layer, bit", mode)
    targets = attackable_layers(model, layers)
    if mode == "bit":
        from faultlab._faults import BitFlip
        from faultlab._sample import sample_faults

        return sample_faults(model, BitFlip(count=n), seed=seed,
                             layers=list(targets))  # the weight codes, never a block's scale
    names = [p for p, _ in model.named_parameters()]
    rng = np.random.default_rng([seed, 0x706273])  # "pbs": the baseline's own stream
    chosen: set = set()
    keys = list(targets)
    total = 8 * sum(targets[k].weight.numel() for k in keys)
    check(n <= total, "n", c, f"at most the {total} bits of the attacked weights", n)
    while len(chosen) < n:
        k = keys[int(rng.integers(len(keys)))]
        chosen.add((names.index(k), int(rng.integers(targets[k].weight.numel())),
                    int(rng.integers(8))))
    p, i, b = (np.asarray(v) for v in zip(*sorted(chosen))) if chosen else ([], [], [])
    dtypes = [str(t.dtype).replace("torch.", "") for _, t in model.named_parameters()]
    return FaultMap(tuple(names), tuple(dtypes), np.asarray(p, np.int32),
                    np.asarray(i, np.int64), np.asarray(b, np.uint8),
                    np.full(len(chosen), _FLIP, np.int8), total, seed, {"attack": "random"})


def random_flip_accuracy(model: nn.Module, n: int, data, seed: int = 0, layers=None,
                         mode: str = "layer") -> float:
    """Accuracy on ``data`` with ``n`` :func:`random_flips` injected (the model is restored):
    the attack's baseline at the same number of flips."""
    from faultlab._inject import inject
    from hwlab.train import evaluate

    with inject(model, random_flips(model, n, seed=seed, layers=layers, mode=mode)):
        return evaluate(model, data)
