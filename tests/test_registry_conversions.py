"""Registry test (timm habit): every package's conversion over every zoo model, on digits 1x8x8.

For each model of ``hwlab.models.list_models()``: FT-ClipAct ``protect`` (tiny search),
``vulnerability`` with and without prefix caching (identical numbers), ``spiking.with_qcfs`` +
``convert``, ``localtrain.split`` + one InfoPro step, ``quantum.swap(layers=[first weight layer])``.
Models are untrained (fresh, seeded): the checks are structural and exact, not accuracies.
What a package cannot do on a model is pinned as an error (ViT: no spiking conversion).
"""

from __future__ import annotations

import pytest
import torch

import faultlab
import hwlab.graph as hg
import localtrain as lt
import quantum as q
import spiking as sp
from faultlab import clipact
from hwlab.data import load
from hwlab.models import create_model, list_models

MODELS = list_models()
SHAPE = (1, 8, 8)
RELU_LIKE = ("relu", "relu6", "clamp")
NOT_SPIKING = {"vit-tiny": "LayerNorm"}  # no spiking counterpart of LayerNorm, GELU, attention
UNBOUNDED = ("relu", "gelu")  # FT-ClipAct clips unbounded activations; ReLU6 is bounded already


@pytest.fixture(scope="module")
def batch():
    d = load("digits", "val", seed=0)
    return d.x[:48].clone(), d.y[:48].clone()


def _model(name: str):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_model(name, SHAPE, 10).eval()


@pytest.mark.parametrize("name", MODELS)
def test_protect_clips_every_activation_call_site(name, batch):
    model = _model(name)
    sites = [s.name for s in hg.trace(model).sites if s.op in UNBOUNDED]
    kw = {"rates": (1e-4, 1e-3), "maps": 1, "rounds": 1, "min_rounds": 1, "candidates": 3,
          "eval_size": 16, "batch_size": 48, "seed": 0}  # a tiny search
    if not sites:  # mobilenetv2: only ReLU6 (bounded) sites
        with pytest.raises(ValueError, match=r"model of protect must be a model with unbounded "
                                             r"activation call sites .*got 'MobileNetV2 with only "
                                             r"bounded sites \(relu6\)'"):
            clipact.protect(model, batch, **kw)
        return
    prot = clipact.protect(model, batch, **kw)
    th = clipact.thresholds(prot)
    assert list(th) == sites and all(v >= 0 for v in th.values())
    assert prot(batch[0][:4]).shape == (4, 10)


@pytest.mark.parametrize("name", MODELS)
def test_vulnerability_identical_with_and_without_prefix(name, batch):
    model = _model(name)
    head = hg.trace(model).weight_layers[-2:]
    kw = {"fault": 2, "layers": head, "bits": [30, 22], "trials": 2, "eval_size": 32, "seed": 0}
    with_prefix = faultlab.vulnerability(model, batch, prefix=True, **kw)
    full = faultlab.vulnerability(model, batch, prefix=False, **kw)
    assert with_prefix.attrs["prefix_cached"] is True
    cols = ["layer", "bit", "accuracy", "std", "n_faults", "clean_accuracy"]
    assert with_prefix[cols].equals(full[cols]) and len(full) == 4


@pytest.mark.parametrize("name", MODELS)
def test_with_qcfs_and_convert(name, batch):
    model = _model(name)
    n_sites = sum(s.op in RELU_LIKE for s in hg.trace(model).sites)
    ann = sp.with_qcfs(model, levels=4).eval()
    assert sum(s.op == "qcfs" for s in hg.trace(ann).sites) == n_sites
    if name in NOT_SPIKING:
        with pytest.raises(ValueError, match=rf"of convert must be .*got '{NOT_SPIKING[name]}"):
            sp.convert(ann)
        return
    net = sp.convert(ann)
    assert len(net.neurons) == n_sites
    out = net(batch[0][:4], 16)  # N x T x classes
    assert out.shape == (4, 16, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_split_and_one_infopro_step(name, batch):
    model = _model(name).train()
    x, y = batch[0][:16], batch[1][:16]
    mods = lt.split(model, 2)
    assert len(mods) == 2
    with torch.no_grad():
        model.eval()
        ref = model(x)
        assert torch.allclose(mods[1](mods[0](x)), ref, atol=1e-6)
        model.train()
    rule = lt.make_rule("featrecon" if name.startswith("vit") else "infopro", model, K=2,
                        sample=x)
    before = [p.detach().clone() for p in model.parameters()]
    losses = rule.step(x, y)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize("name", MODELS)
def test_swap_first_weight_layer_by_name(name, batch):
    model = _model(name)
    layers = hg.trace(model).weight_layers
    convs = [n for n in layers if isinstance(model.get_submodule(n), torch.nn.Conv2d)]
    first = convs[0] if convs else layers[-1]  # mlp: the 10-way classifier (at most 128 outputs)
    new = q.swap(model, layers=[first], reps=1)
    swapped = [n for n, m in new.named_modules()
               if isinstance(m, (q.QuantumConv2d, q.QuantumLinear))]
    assert swapped == [first]
    assert isinstance(model.get_submodule(first), (torch.nn.Conv2d, torch.nn.Linear))
    assert new(batch[0][:2]).shape == (2, 10)
