"""Swish, Hardswish and Mish as activation sites in every form a model writes them (EfficientNet's
``x * x.sigmoid()``, Llama's ``F.silu``), on a model written here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hwlab.graph as hg
from faultlab import clipact


class _Swishy(nn.Module):
    """An MBConv-like net that writes its activations in seven ways."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.act = nn.SiLU()
        self.hs = nn.Hardswish()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        x = self.c1(x)
        x = x * x.sigmoid()  # EfficientNet's swish
        x = torch.sigmoid(self.c2(x)) * self.c2(x)  # two different operands: not a swish
        h = self.c2(x)
        x = torch.sigmoid(h) * h  # swish, the gate first
        x = self.act(x).mean((2, 3))
        x = F.silu(self.fc1(x))  # Llama's MLP
        x = self.fc2(x)
        x = x * torch.tanh(F.softplus(x))  # Mish written out
        return self.fc3(self.hs(x) + F.hardswish(x) + torch.mul(x, x.sigmoid()))


def _model():
    torch.manual_seed(0)
    return _Swishy().eval()


def test_every_written_form_is_one_site():
    g = hg.trace(_model())
    assert [(s.name, s.op) for s in g.sites] == [
        ("silu()", "silu"), ("silu()@2", "silu"), ("act", "silu"), ("silu()@3", "silu"),
        ("mish()", "mish"), ("hs", "hardswish"), ("hardswish()", "hardswish"),
        ("silu()@4", "silu")]
    assert g.producers["silu()@2"] == ["c2"] and g.producers["mish()"] == ["fc2"]


def test_clipping_a_written_out_swish_at_its_maximum_keeps_the_function():
    m = _model()
    x = torch.rand(16, 1, 6, 6)
    sites = clipact.activation_sites(m)
    assert sites == ["silu()", "silu()@2", "act", "silu()@3", "mish()", "hs", "hardswish()",
                     "silu()@4"]
    clipped = clipact.clip(m, {s: 1e30 for s in sites}, mode="cap")
    with torch.no_grad():
        torch.testing.assert_close(clipped(x), m(x), rtol=1e-5, atol=1e-6)
    ops = [n.target for n in clipped.graph.nodes if n.op == "call_function"]
    assert ops.count(torch.sigmoid) == 1  # only the non-swish product keeps its sigmoid
    tight = clipact.clip(m, {"silu()": 0.05}, mode="zero")
    with torch.no_grad():
        h = m.c1(x)
        s = h * h.sigmoid()
        ref = torch.where(s <= 0.05, s, torch.zeros(()))
        got = {}
        tight.get_submodule("silu_fn1").register_forward_hook(lambda *a: got.update(y=a[2]))
        tight(x)
    torch.testing.assert_close(got["y"], ref)


def test_a_model_without_any_site_is_refused_with_the_right_reason():
    m = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"model of profile must be a model with unbounded "
                                         r"activation call sites .*got .Sequential without any "
                                         r"activation call site"):
        clipact.profile(m, (torch.rand(4, 4), torch.zeros(4, dtype=torch.long)))
    m = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU6(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"got .Sequential with only bounded sites \(relu6\)"):
        clipact.profile(m, (torch.rand(4, 4), torch.zeros(4, dtype=torch.long)))
