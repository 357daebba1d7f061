"""The adaptive attacker against RADAR: a progressive bit search that keeps every checksum
group's signature as the attacker believes it is stored.

RADAR (:mod:`faultlab._radar`) stores, per group of ``G`` permuted int8 words, bit 7 of the masked
sum ``M = sum(k_i w_i) mod 256`` and the parity of the negative terms. An attacker who knows the
scheme can check any candidate flip against the signature it would leave, given a permutation
and key:

* ``secret="known"`` (white-box upper bound): the defender's own permutation and key. Every
  accepted move leaves every group's signature equal to the stored one, so RADAR flags nothing
  (checked after every move) and the count of flips to chance is the price of evasion.
* ``secret="guessed"`` (the realistic attacker: knows the scheme and ``G``, not the secret):
  the same search against its own draw of a permutation and key (``radar(model, G,
  seed=guess_seed)``); its moves cancel in the groups it guessed, the defender's groups are
  others, and ``history.flagged`` / :meth:`Radar.detected` measure how often it is caught.

Moves, each judged with the exact signature arithmetic (not a first-order guess): a single flip
whose group signature stays (a low bit that does not carry M across a multiple of 128 and keeps
the term's sign), or a pair of flips in two words of one group that together keep it (two MSB
flips: ``M`` moves by 0 or +-256 and two signs change). Per iteration, on the attack batch
labelled by the clean model: the first-order gain ``g * delta`` of every bit (``g`` the gradient
of the int8 word, as in PBS), the best valid singles, and for the ``pairs`` best flips that would
change their group, the best partner inside that group; each layer's ``tries`` best moves by
gain per flip are installed and measured, and the move with the highest attack loss is committed
if it raises the loss (else the search stops). A pair counts two flips.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from faultlab._attack import (
    AttackResult,
    _accuracy,
    _attack_batch,
    _diff_map,
    _grads,
    _hamming,
    _logits,
    _loss,
    _xor,
    attackable_layers,
)
from faultlab._radar import Radar, radar
from hwlab.errors import check, check_choice, check_int, check_number

__all__ = ["radar_attack"]


def radar_attack(model: nn.Module, data, defence: Radar, *, secret: str = "known",
                 guess_seed: int = 1, flips: int = 60, target_accuracy=None,
                 attack_size: int = 128, eval_data=None, seed: int = 0, pairs: int = 64,
                 tries: int = 3, progress=None) -> AttackResult:
    """PBS against the RADAR signatures ``defence`` of ``model`` (see the module doc).

    ``secret``: ``"known"`` (the attacker holds ``defence``'s permutation and key) or
    ``"guessed"`` (it draws its own with ``guess_seed``, same group size and layers).
    ``data`` / ``eval_data`` / ``flips`` / ``target_accuracy`` / ``attack_size`` / ``seed``: as
    :func:`faultlab.bit_flip_attack`. ``history`` has ``flagged`` (groups the DEFENDER's
    signatures flag after each move) next to the usual columns; ``model`` is not changed.
    """
    c = "radar_attack"
    check(isinstance(model, nn.Module), "model", c, "a torch.nn.Module", type(model).__name__)
    check(isinstance(defence, Radar), "defence", c, "a faultlab.Radar (faultlab.radar(model))",
          type(defence).__name__)
    check_choice(secret, ("known", "guessed"), "secret", c)
    flips = check_int(flips, "flips", c, minimum=1)
    attack_size = check_int(attack_size, "attack_size", c, minimum=1)
    seed = check_int(seed, "seed", c, minimum=0)
    guess_seed = check_int(guess_seed, "guess_seed", c, minimum=0)
    pairs = check_int(pairs, "pairs", c, minimum=0)
    tries = check_int(tries, "tries", c, minimum=1)
    params = dict(model.named_parameters())
    check(all(n in params and params[n].numel() == p.size
              for n, p in zip(defence.names, defence.perms)), "defence", c,
          "the RADAR signatures of this model", f"signatures of {', '.join(defence.names)}")
    layers = [n[:-len(".weight")] for n in defence.names]
    targets = attackable_layers(model, layers, c)
    view = defence
    if secret == "guessed":
        view = radar(model, group=defence.group, seed=guess_seed, layers=layers)
        check(any(not np.array_equal(a, b) for a, b in zip(view.perms, defence.perms)),
              "guess_seed", c, "a seed whose secret differs from the defender's", guess_seed)
    check(all(len(v) == 0 for v in view.flagged(model).values()), "model", c,
          "the known-good model the signatures were taken from", "a model they flag")
    x_att, y_att = _attack_batch(model, data, attack_size, seed, c)
    from hwlab.data import as_xy

    x_ev, y_ev = as_xy(eval_data if eval_data is not None else data, c)
    classes = int(_logits(model, x_ev[:2]).shape[1])
    target = check_number(1.0 / classes + 0.01 if target_accuracy is None else target_accuracy,
                          "target_accuracy", c, minimum=0, maximum=1)
    clean = {n: m.weight.detach().clone() for n, m in targets.items()}
    was_training = model.training
    model.eval()
    try:
        res = _search(model, targets, view, defence, clean, x_att, y_att, x_ev, y_ev, flips,
                      target, pairs, tries, progress)
    finally:
        with torch.no_grad():
            for n, m in targets.items():
                m.weight.copy_(clean[n])
        model.train(was_training)
    fmap = dataclasses.replace(res.fmap, extra={"attack": f"pbs-radar-{secret}"})
    return dataclasses.replace(res, fmap=fmap)


def _search(model, targets, view, defence, clean, x, y, x_ev, y_ev, budget, target, pairs,
            tries, progress) -> AttackResult:
    clean_acc = accuracy = _accuracy(model, x_ev, y_ev)
    loss = _loss(model, x, y)
    rows, done = [], 0
    while done < budget and accuracy > target:
        grads = _grads(model, targets, x, y)
        best = None
        for li, name in enumerate(view.names):
            w = targets[name].weight
            for flat, bits in _moves(w, grads[name], view, li, pairs)[:tries]:
                _xor(w, flat, bits)
                try:
                    new = _loss(model, x, y)
                finally:
                    _xor(w, flat, bits)
                if not math.isnan(new) and (best is None or new > best[0]):
                    best = (new, name, flat, bits)
        if best is None or best[0] <= loss:
            break  # no move that keeps the signatures raises the loss
        loss, name, flat, bits = best
        _xor(targets[name].weight, flat, bits)
        done += len(flat)
        accuracy = _accuracy(model, x_ev, y_ev)
        flagged = int(sum(len(v) for v in defence.flagged(model).values()))
        rows.append({"iteration": len(rows) + 1, "layer": name[:-7], "n_b": len(flat),
                     "flips": done, "hamming": _hamming(targets, clean), "loss": loss,
                     "accuracy": accuracy, "flagged": flagged})
        if progress is not None:
            progress(done, budget, f"flip {done}: accuracy {accuracy:.3f}, {flagged} flagged")
    columns = ["iteration", "layer", "n_b", "flips", "hamming", "loss", "accuracy", "flagged"]
    return AttackResult(_diff_map(model, targets, clean), pd.DataFrame(rows, columns=columns),
                        clean_acc, float(target), accuracy <= target)


def _moves(w: torch.Tensor, g: torch.Tensor, view: Radar, li: int, pairs: int):
    """The layer's signature-keeping moves ``(flat indices, bits)``, best gain per flip first."""
    perm, key, gold, group = view.perms[li], view.keys[li], view.golden[li], view.group
    words = w.detach().reshape(-1).cpu().numpy()
    signed = words.dtype == np.int8
    u = words.view(np.uint8).astype(np.int64)
    old = u - 256 * (u >= 128) if signed else u
    new = u[:, None] ^ (1 << np.arange(8))  # n x 8 words after each single flip
    new = new - 256 * (new >= 128) if signed else new
    gain = g.detach().numpy().astype(np.float64)[:, None] * (new - old[:, None])
    pos = np.empty_like(perm)
    pos[perm] = np.arange(perm.size)
    grp, k = pos // group, key[pos]  # each word's group and key
    term = k * old
    m = np.bincount(grp, weights=term, minlength=gold.size).astype(np.int64)
    neg = np.bincount(grp, weights=term < 0, minlength=gold.size).astype(np.int64)
    d_m = k[:, None] * (new - old[:, None])
    d_neg = (k[:, None] * new < 0).astype(np.int64) - (term < 0)[:, None]

    def keeps(gr, dm, dn):
        return (((m[gr] + dm) & 0xFF) >> 7) << 1 | ((neg[gr] + dn) & 1) == gold[gr]

    ok = keeps(grp[:, None], d_m, d_neg)
    moves = []  # (gain per flip, flat indices, bits)
    single = np.where(ok & (gain > 0), gain, 0.0).reshape(-1)
    for j in np.argsort(-single, kind="stable")[:8]:
        if single[j] > 0:
            moves.append((single[j], [j // 8], [j % 8]))
    lone = np.where(~ok & (gain > 0), gain, 0.0).reshape(-1)
    for j in np.argsort(-lone, kind="stable")[:pairs]:
        if lone[j] <= 0:
            break
        i, b = divmod(int(j), 8)
        gr = grp[i]
        mates = perm[gr * group:(gr + 1) * group]
        mates = mates[mates != i]
        both = keeps(gr, d_m[i, b] + d_m[mates], d_neg[i, b] + d_neg[mates])
        total = np.where(both, gain[i, b] + gain[mates], -np.inf)
        if mates.size and np.isfinite(total.max()) and total.max() > 0:
            jm, bm = np.unravel_index(int(np.argmax(total)), total.shape)
            moves.append((total.max() / 2, [i, int(mates[jm])], [b, int(bm)]))
    moves.sort(key=lambda t: -t[0])
    return [(torch.tensor(f, dtype=torch.int64), torch.tensor(b, dtype=torch.int64))
            for _, f, b in moves]
