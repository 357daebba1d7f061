"""The adaptive attacker against RADAR: the moves it considers keep every signature (checked by
installing them and asking the Radar itself), its singles are the brute-force best valid flips,
a white-box attack is never flagged, and a guessed secret is caught by the real one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import faultlab as fl
from faultlab._attack import _xor
from faultlab._radar_attack import _moves


def _int8_mlp():
    torch.manual_seed(0)
    return fl.quantize_int8(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval())


def _data(n=128):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g), torch.zeros(n, dtype=torch.long)


def _grad(w, seed):
    return torch.randn(w.numel(), generator=torch.Generator().manual_seed(seed))


def test_every_move_keeps_every_signature_and_singles_are_the_brute_force_best():
    q = _int8_mlp()
    r = fl.radar(q, group=4, seed=3)
    for li, name in enumerate(r.names):
        w = q.get_parameter(name)
        g = _grad(w, li)
        moves = _moves(w, g, r, li, pairs=1000)
        assert any(len(f) == 2 for f, _ in moves) and any(len(f) == 1 for f, _ in moves)
        for flat, bits in moves:
            _xor(w, flat, bits)
            try:
                assert all(len(v) == 0 for v in r.flagged(q).values()), (flat, bits)
            finally:
                _xor(w, flat, bits)
            if len(flat) == 2:  # a pair: two words of one group, each alone would be flagged
                group = np.argsort(r.perms[li])[flat.numpy()] // 4
                assert group[0] == group[1] and flat[0] != flat[1]
        valid = []  # brute force: install every single flip, keep those the Radar misses
        words = w.detach().reshape(-1).to(torch.int64)
        for i in range(w.numel()):
            for b in range(8):
                new = int(words[i]) ^ (1 << b) if b < 7 else int(words[i]) ^ -128
                new = new - 256 if new > 127 else new
                gain = float(g[i]) * (new - int(words[i]))
                one = torch.tensor([i])
                _xor(w, one, torch.tensor([b]))
                if gain > 0 and all(len(v) == 0 for v in r.flagged(q).values()):
                    valid.append((gain, i, b))
                _xor(w, one, torch.tensor([b]))
        singles = [(int(f[0]), int(b[0])) for f, b in moves if len(f) == 1]
        assert singles == [(i, b) for _, i, b in sorted(valid, key=lambda t: -t[0])[:8]]


def test_white_box_attack_is_never_flagged_and_raises_the_loss():
    q = _int8_mlp()
    r = fl.radar(q, group=4, seed=2)
    res = fl.radar_attack(q, _data(), r, flips=10, target_accuracy=0.0)
    h = res.history
    assert len(h) > 0 and (np.diff(h.loss.to_numpy()) > 0).all()
    assert (h.flagged == 0).all() and r.detected(q, res.fmap) == 0.0
    with fl.inject(q, res.fmap):
        assert all(len(v) == 0 for v in r.flagged(q).values())
        assert len(r.recovery(q)) == 0  # nothing to zero: the attack stays in place
    assert res.fmap.extra == {"attack": "pbs-radar-known"} and len(res.fmap) <= res.flips
    plain = fl.bit_flip_attack(q, _data(), flips=10, target_accuracy=0.0)
    assert r.detected(q, plain.fmap) > 0  # the attack that ignores RADAR is caught


def test_guessed_secret_keeps_its_own_signatures_but_is_flagged_by_the_real_ones():
    q = _int8_mlp()
    r = fl.radar(q, group=4, seed=2)
    res = fl.radar_attack(q, _data(), r, secret="guessed", guess_seed=7, flips=12,
                          target_accuracy=0.0)
    own = fl.radar(q, group=4, seed=7)
    assert own.detected(q, res.fmap) == 0.0 < r.detected(q, res.fmap)
    assert res.history.flagged.iloc[-1] > 0
    assert all(torch.equal(a, b) for a, b in zip(q.parameters(), _int8_mlp().parameters()))


def test_bad_input_is_refused():
    q = _int8_mlp()
    r = fl.radar(q, group=4, seed=2)
    with pytest.raises(ValueError, match=r"secret of radar_attack must be one of"):
        fl.radar_attack(q, _data(), r, secret="half")
    with pytest.raises(ValueError, match=r"defence of radar_attack must be a faultlab.Radar"):
        fl.radar_attack(q, _data(), "radar")
    with pytest.raises(ValueError, match=r"guess_seed of radar_attack must be a seed whose "
                                         r"secret differs from the defender's, got 2"):
        fl.radar_attack(q, _data(), r, secret="guessed", guess_seed=2)
    other = fl.quantize_int8(nn.Sequential(nn.Linear(6, 4)).eval())
    with pytest.raises(ValueError, match=r"defence of radar_attack must be the RADAR "
                                         r"signatures of this model"):
        fl.radar_attack(other, _data(), r)
    with fl.inject(q, fl.random_flips(q, 40, seed=0)), pytest.raises(
            ValueError, match=r"model of radar_attack must be the known-good model the "
                              r"signatures were taken from"):
        fl.radar_attack(q, _data(), r)
