"""Rules: gradient isolation, K=1 equivalence, MAN's EMA, AugLocal's layers and depths, errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import localtrain as lt
from hwlab.models import create_model
from hwlab.train import ClassificationTask

SHAPE = (1, 8, 8)
LOCAL = ("dgl", "infopro", "man", "auglocal", "featrecon")


def _model(name="resnet20", seed=0):
    torch.manual_seed(seed)
    return create_model(name, SHAPE, 10)


def _batch(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)


def _module_params(rule, k):
    return list(rule.modules_[k].parameters())


@pytest.mark.parametrize("model_name", ["resnet20", "vit-tiny"])
@pytest.mark.parametrize("name", LOCAL)
def test_local_loss_never_reaches_other_modules(name, model_name):
    rule = lt.make_rule(name, _model(model_name), K=3, in_shape=SHAPE)
    x, y = _batch()
    k = 1
    h = x
    for j in range(k):
        h = rule.modules_[j](h).detach()
    out = rule.modules_[k](h)
    loss, _ = rule.local_loss(k, out, h, x, y)
    loss.backward()
    assert all(p.grad is None for p in _module_params(rule, 0))
    assert all(p.grad is None for p in _module_params(rule, 2))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in _module_params(rule, 1))
    aux_other = [p for j in (0,) for p in rule.net["aux"][j].parameters()]
    assert all(p.grad is None for p in aux_other)


def test_without_detach_the_check_would_fail():
    # The isolation test above can fail: chaining without detach leaks into module 0.
    rule = lt.make_rule("dgl", _model(), K=3, in_shape=SHAPE)
    x, y = _batch()
    out = rule.modules_[1](rule.modules_[0](x))
    rule.local_loss(1, out, None, x, y)[0].backward()
    assert any(p.grad is not None for p in _module_params(rule, 0))


def _grads(task, x, y):
    task.backward(x, y)
    return [p.grad.clone() for p in task.model.parameters()]


@pytest.mark.parametrize("name", ("e2e", *LOCAL))
def test_k1_is_end_to_end(name):
    base = _model()
    x, y = _batch()
    ref = _grads(ClassificationTask(copy.deepcopy(base)), x, y)
    rule = lt.make_rule(name, copy.deepcopy(base), K=1, in_shape=SHAPE)
    got = _grads(rule, x, y)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ref, got))


def test_last_module_gets_ordinary_cross_entropy():
    rule = lt.make_rule("dgl", _model(), K=2, in_shape=SHAPE)
    x, y = _batch()
    losses = rule.backward(x, y)
    with torch.no_grad():
        h = rule.modules_[0](x)
        ce = F.cross_entropy(rule.modules_[1](h), y)
    assert losses["loss"] == pytest.approx(float(ce), rel=1e-5)
    assert set(losses) == {"local0", "loss"}


def test_infopro_weights_interpolate_published_values():
    rule = lt.make_rule("infopro", _model(), K=4, in_shape=SHAPE)
    assert [rule.weights(k) for k in range(3)] == [(6.0, 0.0), (3.5, 1.0), (1.0, 2.0)]
    assert lt.infopro_lambdas(2) == ((5.0, 0.0), (1.0, 0.0))
    assert lt.interpolate_weight(0, 2, (5.0, 0.0)) == 5.0
    rule = lt.make_rule("featrecon", _model("vit-tiny"), K=3, in_shape=SHAPE,
                        lambda_rec=(2.0, 0.0), lambda_ce=(0.0, 1.0))
    assert [rule.weights(k) for k in range(2)] == [(2.0, 0.0), (0.0, 1.0)]


def test_featrecon_reconstructs_the_module_input():
    rule = lt.make_rule("featrecon", _model("vit-tiny"), K=3, in_shape=SHAPE)
    x, _ = _batch()
    h0 = rule.modules_[0](x)
    assert torch.equal(rule.target(1, h0, x), h0.detach())
    assert rule.net["aux"][0]["decoder"].image and not rule.net["aux"][1]["decoder"].image


def test_ema_update_math_and_buffers_untouched():
    torch.manual_seed(0)
    src = nn.Sequential(nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2))
    ema = copy.deepcopy(src)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
        src[1].running_mean.fill_(5.0)
    before = [p.clone() for p in ema.parameters()]
    lt.ema_update(ema, src, 0.995)
    for b, e, s in zip(before, ema.parameters(), src.parameters()):
        assert torch.allclose(e, 0.995 * b + 0.005 * s, atol=1e-7)
    assert torch.equal(ema[1].running_mean, torch.zeros(2))  # statistics are not averaged


def test_man_ema_follows_the_next_block_after_each_step():
    rule = lt.make_rule("man", _model(), K=3, in_shape=SHAPE)
    assert rule.momentum == 0.995
    ema, block = rule.net["aux"][0]["ema"], rule.next_block(0)
    assert all(not p.requires_grad for p in ema.parameters())
    trainable = {id(p) for p in rule.parameters()}
    assert not any(id(p) in trainable for p in ema.parameters())
    assert all(id(p) in trainable for p in rule.net["aux"][0]["lb"].parameters())
    ema_before = [p.clone() for p in ema.parameters()]
    x, y = _batch()
    rule.step(x, y)
    for b, e, s in zip(ema_before, ema.parameters(), block.parameters()):
        assert torch.allclose(e, 0.995 * b + 0.005 * s, atol=1e-6)


def test_man_head_sees_next_block_output_shape():
    rule = lt.make_rule("man", _model(), K=4, in_shape=SHAPE, balance="layers")
    # resnet20 units: stem, stage 1 = 1-3, stage 2 = 4-6, stage 3 = 7-9 (7 downsamples).
    # K=4 modules: units 0-1, 2-4, 5-6, 7-9 -> next blocks 2, 5, 7.
    assert [u for u, _ in rule.partition.unit_bounds[1:]] == [2, 5, 7]
    assert rule.aux_input_shape(1) == (32, 4, 4) and rule.out_shapes[1] == (32, 4, 4)
    assert rule.aux_input_shape(2) == (64, 2, 2) and rule.out_shapes[2] == (32, 4, 4)
    assert rule.aux_features(2, torch.rand(4, 32, 4, 4)).shape == (4, 64, 2, 2)


def test_auglocal_indices_and_depths_follow_the_formula():
    # round(l + (L - l - 1) / d * i), i = 1..d; Python rounds half to even like the official code
    assert lt.auglocal_layer_indices(0, 16, 3) == [5, 10, 15]
    assert lt.auglocal_layer_indices(3, 16, 3) == [7, 11, 15]
    assert lt.auglocal_layer_indices(1, 16, 4) == [4, 8, 12, 15]  # 4.5 -> 4, 11.5 -> 12
    assert lt.auglocal_layer_indices(13, 16, 3) == [14, 15]  # d >= L-1-l: all later layers
    # max(1, round(d (1 - k tau/(K-2)) + k tau/(K-2))), tau = 0.5
    assert lt.auglocal_depths(4, 3) == [3, 2, 2]  # 2.5 rounds to 2
    d16 = lt.auglocal_depths(16, 5)
    assert (d16[0], d16[7], d16[14]) == (5, 4, 3) and len(d16) == 15
    assert lt.auglocal_depths(2, 3) == [3]
    assert lt.auglocal_depths(16, 1) == [1] * 15


def test_auglocal_aux_nets_on_resnet32():
    torch.manual_seed(0)
    model = create_model("resnet32", SHAPE, 10)
    rule = lt.make_rule("auglocal", model, K=4, in_shape=SHAPE, balance="layers")
    assert rule.depths == [3, 2, 2]
    assert rule.layer_indices == [[7, 11, 15], [11, 15], [13, 15]]
    for k, idx in enumerate(rule.layer_indices):
        aux = rule.net["aux"][k]
        assert len(aux) == len(idx) + 1  # the selected layers + pool/linear classifier
    # fresh weights: a copied block does not share or equal the original's weights
    copied = rule.net["aux"][2][0]  # unit 13, same shape as module 2's output
    orig = rule.unit_children(13)[0]
    assert copied[0].conv1.weight.shape == orig.conv1.weight.shape
    assert not torch.equal(copied[0].conv1.weight, orig.conv1.weight)
    model_ids = {id(p) for p in model.parameters()}
    assert not any(id(p) in model_ids for p in rule.net["aux"].parameters())


def test_aux_parameters_are_trained_and_counted():
    for name in LOCAL:
        rule = lt.make_rule(name, _model(), K=3, in_shape=SHAPE)
        ids = {id(p) for p in rule.parameters()}
        aux = [p for p in rule.net["aux"].parameters() if p.requires_grad]  # MAN's EMA is frozen
        assert aux and all(id(p) in ids for p in aux)
        assert all(id(p) in ids for p in rule.model.parameters())
        assert len(ids) == len(rule.parameters())


def test_make_rule_errors():
    model = _model()
    with pytest.raises(ValueError, match="name of make_rule must be one of e2e, checkpoint, dgl, infopro"):
        lt.make_rule("backprop", model)
    with pytest.raises(ValueError, match=r"option of make_rule\('dgl'\) must be one of"):
        lt.make_rule("dgl", model, momentum=0.9)
    with pytest.raises(ValueError, match=r"momentum of make_rule\('man'\) must be a number in"):
        lt.make_rule("man", model, momentum=1.5)
    with pytest.raises(ValueError, match=r"lambda_rec of make_rule\('infopro'\) must be a pair"):
        lt.make_rule("infopro", model, lambda_rec=(1.0, float("nan")))
    with pytest.raises(ValueError, match=r"depth of make_rule\('auglocal'\) must be an integer"):
        lt.make_rule("auglocal", model, depth=0)
    with pytest.raises(ValueError, match=r"in_shape of make_rule\('dgl'\) must be a \(C, H, W\)"):
        lt.make_rule("dgl", model, in_shape=(8, 8))
    with pytest.raises(ValueError, match=r"K of split must be an integer in \[1, 10\]"):
        lt.make_rule("man", model, K=12, in_shape=SHAPE)
