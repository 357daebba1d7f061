"""SGR: lam = 0 is DGL, isolation, the reconciliation term and its gradient against finite
differences on a user model (float64 references)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import localtrain as lt
from hwlab.errors import HwlabError
from hwlab.models import create_model


def _user_mlp(seed=0):
    """A user's model (not from the zoo): three hidden Linear units and a classifier."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(),
                         nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))


def _batch(n=5, shape=(1, 2, 2), classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def _grads(rule):
    return [None if p.grad is None else p.grad.clone() for p in rule.parameters()]


def test_sgr_with_zero_weight_is_dgl_bit_for_bit():
    torch.set_num_threads(1)
    x, y = _batch(8, (1, 8, 8), 10)
    torch.manual_seed(0)
    model = create_model("resnet20", (1, 8, 8), 10)
    torch.manual_seed(3)
    dgl = lt.make_rule("dgl", copy.deepcopy(model), K=3, sample=x)
    torch.manual_seed(3)
    sgr = lt.make_rule("sgr", copy.deepcopy(model), K=3, sample=x, lam=0.0)
    a, b = dgl.backward(x, y), sgr.backward(x, y)
    assert a == b
    for p, q in zip(_grads(dgl), _grads(sgr)):
        assert torch.equal(p, q)


def test_reconciliation_changes_later_modules_only():
    x, y = _batch(8, (1, 8, 8), 10)
    torch.manual_seed(0)
    model = create_model("resnet20", (1, 8, 8), 10)
    rules = {}
    for lam in (0.0, 50.0):
        torch.manual_seed(3)
        rules[lam] = lt.make_rule("sgr", copy.deepcopy(model), K=3, sample=x, lam=lam)
        losses = rules[lam].backward(x, y)
    assert set(losses) >= {"sgr1", "sgr2", "cos1", "cos2"} and losses["sgr1"] > 0
    mods = {lam: [list(r.modules_[k].parameters()) for k in range(3)] for lam, r in rules.items()}
    for p, q in zip(mods[0.0][0], mods[50.0][0]):  # module 0 (and its head) never sees the term
        assert torch.equal(p.grad, q.grad)
    for p, q in zip(rules[0.0].net["aux"][0].parameters(), rules[50.0].net["aux"][0].parameters()):
        assert torch.equal(p.grad, q.grad)
    for k in (1, 2):
        assert any(not torch.allclose(p.grad, q.grad) for p, q in zip(mods[0.0][k], mods[50.0][k]))


def _fd_grad(fn, t, eps=1e-6):
    """Central finite differences of the scalar ``fn()`` w.r.t. every element of ``t``."""
    g = torch.zeros_like(t)
    flat, gflat = t.view(-1), g.view(-1)
    for i in range(flat.numel()):
        old = float(flat[i])
        flat[i] = old + eps
        up = float(fn())
        flat[i] = old - eps
        down = float(fn())
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


def test_reconciliation_term_and_its_gradient_match_finite_differences():
    x, y = _batch()
    rule = lt.make_rule("sgr", _user_mlp(), K=2, sample=x, balance="layers", lam=0.7)
    m0, m1 = (copy.deepcopy(m).double() for m in rule.modules_)
    head = copy.deepcopy(rule.net["aux"][0]).double()
    xd = x.double()
    with torch.no_grad():
        h = m0(xd).clone()
    with torch.no_grad():  # g_out: module 0's head loss w.r.t. its output h
        g_out = _fd_grad(lambda: F.cross_entropy(head(h), y), h)
        g_in = _fd_grad(lambda: F.cross_entropy(m1(h), y), h)  # last module's loss w.r.t. input
    want = len(x) * float((g_in - g_out).pow(2).sum())
    losses = rule.backward(x, y)
    assert losses["sgr1"] == pytest.approx(want, rel=1e-4)
    assert losses["cos1"] == pytest.approx(float(F.cosine_similarity(
        g_in.flatten(), g_out.flatten(), dim=0)), rel=1e-4, abs=1e-6)

    # gradient of L_1 + lam * D w.r.t. module 1's last bias: finite differences of the objective
    bias = m1[-1].bias

    def objective():
        with torch.enable_grad():
            hh = h.clone().requires_grad_(True)
            loss = F.cross_entropy(m1(hh), y)
            gi, = torch.autograd.grad(loss, hh)
        return loss + 0.7 * len(x) * (gi - g_out).pow(2).sum()

    with torch.no_grad():
        fd = _fd_grad(objective, bias.data)
    got = rule.modules_[1][-1].bias.grad.double()
    torch.testing.assert_close(got, fd, rtol=1e-4, atol=1e-6)


def test_sgr_with_one_module_is_e2e():
    x, y = _batch()
    a, b = lt.make_rule("e2e", _user_mlp(), sample=x), lt.make_rule("sgr", _user_mlp(), K=1,
                                                                      sample=x)
    a.backward(x, y)
    b.backward(x, y)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_sgr_bad_weight_is_an_error():
    with pytest.raises(HwlabError, match=r"lam of make_rule\('sgr'\) must be .*got -1"):
        lt.make_rule("sgr", _user_mlp(), K=2, in_shape=(1, 2, 2), lam=-1)
