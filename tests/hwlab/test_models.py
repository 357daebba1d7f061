"""hwlab.models: every registered model builds, runs forward+backward on every shipped shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hwlab.models import create_model, list_models, register_model

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]  # digits / mnist, mnist5k / mnist-idx, cifar10
REQUIRED = {"mlp", "lenet5", "alexnet-s", "vgg-s", "resnet20", "resnet32", "vit-tiny"}
RESEARCHER = {"resnet18", "mobilenetv2", "densenet"}  # written like researchers' code, not Sequential
SEQUENTIAL = [n for n in list_models() if n not in RESEARCHER]


def test_required_models_registered():
    assert REQUIRED | RESEARCHER <= set(list_models())


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_backward_every_shape(name, shape):
    torch.manual_seed(0)
    model = create_model(name, in_shape=shape, num_classes=7)
    assert isinstance(model, nn.Sequential) == (name not in RESEARCHER) and model.training
    x = torch.rand(2, *shape)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if name in RESEARCHER:
        return
    # top-level children run in order: chaining them reproduces the forward pass
    model.eval()  # dropout off: compare two deterministic passes
    out = model(x)
    h = x
    for child in model:
        h = child(h)
    assert torch.allclose(h, out)


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_activation_modules_not_functional(name):
    model = create_model(name, in_shape=(1, 28, 28))
    acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.GELU))]
    kind = nn.GELU if name.startswith("vit") else nn.ReLU
    assert acts and all(isinstance(a, kind) for a in acts)
    assert not any(getattr(a, "inplace", False) for a in acts)
    # swapping every activation by module replacement changes the output
    x = torch.rand(2, 1, 28, 28)
    model.eval()
    before = model(x)
    for parent in model.modules():
        for n, c in parent.named_children():
            if isinstance(c, kind):
                setattr(parent, n, nn.Tanh())
    assert not torch.allclose(model(x), before)


def test_known_sizes():
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(create_model("lenet5", in_shape=(1, 28, 28))) == 61706  # classic LeNet-5
    # He et al. 2016 table 6: ResNet-20 0.27 M, ResNet-32 0.46 M parameters
    assert round(count(create_model("resnet20", in_shape=(3, 32, 32))) / 1e6, 2) == 0.27
    assert round(count(create_model("resnet32", in_shape=(3, 32, 32))) / 1e6, 2) == 0.46
    resnet = create_model("resnet20", in_shape=(3, 32, 32))
    assert sum(type(c).__name__ == "BasicBlock" for c in resnet) == 9  # one child per block
    vit = create_model("vit-tiny", in_shape=(1, 28, 28))
    assert sum(type(c).__name__ == "Block" for c in vit) == 4


def test_researcher_models_as_written():
    import hwlab.graph as hg

    count = lambda m: sum(p.numel() for p in m.parameters())
    assert round(count(create_model("resnet18", (3, 32, 32), width=64)) / 1e6, 1) == 11.2  # kuangliu
    sites = {n: hg.trace(create_model(n, (1, 8, 8))).sites for n in sorted(RESEARCHER)}
    assert [(len(s), {x.op for x in s}) for s in sites.values()] == [
        (15, {"relu"}), (15, {"relu6"}), (17, {"relu"})]  # densenet, mobilenetv2, resnet18
    assert all(x.module is None for x in sites["resnet18"])  # functional F.relu, 2 per block
    assert all(x.inplace for x in sites["mobilenetv2"])  # ReLU6(inplace=True) modules


def test_errors():
    with pytest.raises(ValueError, match=r"name of create_model must be one of alexnet-s, "
                       r"densenet, .*got 'resnet1000'"):
        create_model("resnet1000")
    with pytest.raises(ValueError, match=r"in_shape of create_model must be a \(C, H, W\) tuple "
                       r"of positive integers, got \(28, 28\)"):
        create_model("mlp", in_shape=(28, 28))
    with pytest.raises(ValueError, match=r"num_classes of create_model must be an integer >= 2"):
        create_model("mlp", num_classes=1)
    with pytest.raises(ValueError, match=r"name of register_model must be a name not registered"):
        register_model("mlp")(lambda in_shape, num_classes: nn.Sequential())
    with pytest.raises(ValueError, match=r"keyword arguments of create_model must be options of "
                       r"lenet5 \(none\), got \['width'\]"):
        create_model("lenet5", width=3)
    with pytest.raises(ValueError, match=r"dim of vit-tiny must be a multiple of heads=4"):
        create_model("vit-tiny", dim=30)
