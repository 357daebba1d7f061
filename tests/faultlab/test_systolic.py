"""faultlab.systolic: the PE mapping, PE fault maps and injection, checked against an
independent element-by-element mapping and a cycle-by-cycle reference simulation written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import faultlab as fl
from faultlab.systolic import PEFault, PEFaultMap, SystolicArray, inject, sample_pe_faults

WS, OS = "weight-stationary", "output-stationary"


def _snapshot(model):
    return {k: v.detach().clone().view(torch.uint8) if v.is_floating_point() else v.clone()
            for k, v in model.state_dict().items()}


def _same(model, snap):
    now = _snapshot(model)
    return now.keys() == snap.keys() and all(torch.equal(now[k], snap[k]) for k in snap)


def _small_conv(groups=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=groups)
    with torch.no_grad():
        conv.weight.copy_(0.1 * torch.randn(conv.weight.shape, generator=g))
        conv.bias.copy_(0.1 * torch.randn(6, generator=g))
    x = 0.1 * torch.rand(3, 4, 5, 5, generator=g)
    return conv.eval(), x


def _owned_conv(out_shape, conv, array, pe):
    """Independent mapping: which output elements PE ``pe`` produces (explicit loops)."""
    n, c_out, h, w = out_shape
    mg = c_out // conv.groups
    owned = torch.zeros(out_shape, dtype=torch.bool)
    for b in range(n):
        for m in range(c_out):
            for ho in range(h):
                for wo in range(w):
                    col = (m % mg) % array.cols
                    if array.dataflow == WS:  # partial sum of column col passes every row
                        owned[b, m, ho, wo] = col == pe[1]
                    else:  # output-stationary: PE (p % R, m % C) accumulates Y[p, m]
                        owned[b, m, ho, wo] = ((ho * w + wo) % array.rows == pe[0]
                                               and col == pe[1])
    return owned


@pytest.mark.parametrize("dataflow", [WS, OS])
@pytest.mark.parametrize("groups", [1, 2])
def test_stuck1_bit30_one_pe_changes_exactly_its_outputs(dataflow, groups):
    conv, x = _small_conv(groups)
    array = SystolicArray(4, 2, dataflow)
    clean = conv(x)
    snap = _snapshot(conv)
    for pe in [(1, 1), (3, 0), (0, 1)]:
        fault = PEFault("stuck1", "output", pes=(pe,), bits=(30,), array=array)
        with torch.no_grad(), inject(conv, fault) as pemap:
            faulty = conv(x)
        assert len(pemap) == 1 and pemap.bit.tolist() == [30]
        owned = _owned_conv(tuple(clean.shape), conv, array, pe)
        assert owned.any()
        changed = faulty.view(torch.int32) != clean.view(torch.int32)
        assert torch.equal(changed, owned), (pe, (changed ^ owned).nonzero()[:5])
        assert _same(conv, snap)
        assert not conv._forward_hooks
    assert torch.equal(conv(x), clean)


@pytest.mark.parametrize("dataflow", [WS, OS])
def test_linear_mapping_and_tokens(dataflow):
    g = torch.Generator().manual_seed(1)
    lin = nn.Linear(7, 5)
    with torch.no_grad():
        lin.weight.copy_(0.1 * torch.randn(5, 7, generator=g))
    x = 0.1 * torch.rand(2, 3, 7, generator=g)  # N x L tokens x K
    array = SystolicArray(2, 2, dataflow)
    clean = lin(x)
    with torch.no_grad(), inject(lin, PEFault("stuck1", pes=((1, 0),), bits=(30,),
                                              array=array)):
        faulty = lin(x)
    owned = torch.zeros_like(clean, dtype=torch.bool)
    for b in range(2):
        for t in range(3):
            for m in range(5):
                owned[b, t, m] = m % 2 == 0 and (dataflow == WS or t % 2 == 1)
    assert torch.equal(faulty.view(torch.int32) != clean.view(torch.int32), owned)


# ---------------------------------------------------------------------------------------------
# Cycle-by-cycle reference (plain Python loops over one sample's product, float32 steps).

def _op(v, faults):
    u = np.array([v], dtype=np.float32).view(np.uint32)
    for kind, bit in faults:
        m = np.uint32(1) << np.uint32(bit)
        u = u ^ m if kind == "flip" else (u | m if kind == "stuck1" else u & ~m)
    return np.float32(u.view(np.float32)[0])


def _reference(xr, w, bias, array, faults):
    """xr: L x K, w: K x M (one group); faults: {(row, col, target): [(kind, bit), ...]}."""
    R, C = array.rows, array.cols
    L, K = xr.shape
    M = w.shape[1]
    y = np.zeros((L, M), dtype=np.float32)
    for p in range(L):
        for m in range(M):
            j = m % C
            if array.dataflow == WS:
                total = np.float32(0)
                for kt in range(-(-K // R)):
                    v = np.float32(0)
                    for i in range(R):
                        k = kt * R + i
                        if k < K:
                            wk = w[k, m]
                            if (i, j, "weight") in faults:
                                wk = _op(wk, faults[(i, j, "weight")])
                            v = np.float32(v + xr[p, k] * wk)
                        if (i, j, "output") in faults:
                            v = _op(v, faults[(i, j, "output")])
                    total = np.float32(total + v)
            else:
                i = p % R
                total = np.float32(0)
                for k in range(K):
                    wk = w[k, m]
                    for r in range(i + 1):  # the weight passed rows 0..i of column j
                        if (r, j, "weight") in faults:
                            wk = _op(wk, faults[(r, j, "weight")])
                    total = np.float32(total + xr[p, k] * wk)
                if (i, j, "output") in faults:
                    total = _op(total, faults[(i, j, "output")])
            y[p, m] = total + bias[m]
    return y


def _merge(*maps):
    return PEFaultMap(maps[0].array, *(np.concatenate([getattr(m, a) for m in maps])
                                       for a in ("row", "col", "bit", "kind", "target")))


@pytest.mark.parametrize("dataflow", [WS, OS])
def test_values_match_cycle_reference(dataflow):
    conv, x = _small_conv(1, seed=3)
    array = SystolicArray(4, 4, dataflow)  # K = 36: 9 K tiles of 4 rows; M = 6: 2 column tiles
    spec = [("stuck1", "output", (1, 1), 28), ("stuck0", "output", (3, 1), 29),
            ("flip", "output", (2, 0), 31), ("stuck1", "weight", (0, 2), 26),
            ("flip", "weight", (2, 2), 31), ("stuck1", "output", (0, 3), 3)]
    maps = [sample_pe_faults(PEFault(k, t, pes=(pe,), bits=(b,), array=array))
            for k, t, pe, b in spec]
    fmap = _merge(*maps)
    faults = {}
    for k, t, pe, b in spec:
        faults.setdefault((*pe, t), []).append((k, b))
    with torch.no_grad(), inject(conv, fmap):
        ours = conv(x)  # N x M x H x W
    cols = F.unfold(x, 3, padding=1).transpose(1, 2).numpy()  # N x L x K
    w = conv.weight.detach().reshape(6, -1).t().numpy()
    for n in range(x.shape[0]):
        ref = _reference(cols[n], w, conv.bias.detach().numpy(), array, faults)  # L x M
        got = ours[n].reshape(6, -1).t().numpy()
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-6)
    clean = conv(x)
    assert (ours != clean).any()


def test_no_effect_keeps_output_bits():
    conv, x = _small_conv()
    # bit 31 stuck at 0 on positive accumulators changes nothing; a PE beyond the used columns
    # (M = 6 < 8 with cols = 8) changes nothing either
    clean = conv(x)
    with torch.no_grad(), inject(conv, PEFault("stuck0", pes=((0, 7),), bits=(31,),
                                               array=SystolicArray(4, 8, OS))):
        assert torch.equal(conv(x).view(torch.int32), clean.view(torch.int32))


# ---------------------------------------------------------------------------------------------
# Maps: replayable, nested, exact counts, statistics, errors.

def test_maps_replayable_nested_and_counted():
    array = SystolicArray(64, 64)
    a = sample_pe_faults(PEFault(rate=0.01, array=array), seed=5)
    assert a == sample_pe_faults(PEFault(rate=0.01, array=array), seed=5)
    assert a != sample_pe_faults(PEFault(rate=0.01, array=array), seed=6)
    b = sample_pe_faults(PEFault(rate=0.05, array=array), seed=5)
    small = {tuple(p) for p in a.pes}
    big = {(r, c): bit for r, c, bit in zip(b.row, b.col, b.bit)}
    assert small <= set(big) and all(big[(r, c)] == bit for r, c, bit in zip(a.row, a.col, a.bit))
    c = sample_pe_faults(PEFault("flip", "weight", count=37, bits=(30, 29), array=array), seed=1)
    assert len(c) == 37 and len(c.pes) == 37 and set(c.bit.tolist()) <= {29, 30}
    assert set(c.to_frame()["target"]) == {"weight"} and set(c.to_frame()["kind"]) == {"flip"}
    # the number of faulty PEs at a rate is Binomial(4096, 0.1): mean 409.6, sd 19.2
    counts = np.array([len(sample_pe_faults(PEFault(rate=0.1, array=array), seed=s))
                       for s in range(40)])
    assert abs(counts.mean() - 409.6) < 4 * 19.2 / np.sqrt(40)
    assert 10 < counts.std() < 30
    bits = sample_pe_faults(PEFault(rate=1.0, array=array), seed=0).bit
    hist = np.bincount(bits, minlength=32)
    expected = 4096 / 32
    assert ((hist - expected) ** 2 / expected).sum() < 61.1  # chi2(31) at p = 0.001


def test_errors_are_pinned():
    with pytest.raises(ValueError, match="rate, count and pes of PEFault must be exactly one"):
        PEFault(rate=0.1, count=3)
    with pytest.raises(ValueError, match=r"pes of PEFault must be \(row, col\) pairs inside the "
                                         r"4 x 4 array"):
        PEFault(pes=((4, 0),), array=SystolicArray(4, 4))
    with pytest.raises(ValueError, match="dataflow of SystolicArray must be one of"):
        SystolicArray(4, 4, "row-stationary")
    with pytest.raises(ValueError, match="kind of PEFault must be one of"):
        PEFault("stuck2", rate=0.1)
    with pytest.raises(ValueError, match="fault_or_map of faultlab.systolic.inject must be a "
                                         "PEFault or PEFaultMap"), \
            inject(nn.Linear(2, 2), fl.BitFlip(rate=0.1)):
        pass
    with pytest.raises(ValueError, match="model of faultlab.systolic.inject must be a model with "
                                         "float32 Conv2d / Linear layers .* got \"int8 layer '0'\""), \
            inject(fl.quantize_int8(nn.Sequential(nn.Linear(2, 2))), PEFault(rate=0.1)):
        pass
    with pytest.raises(ValueError, match="model of faultlab.systolic.inject must be a model with "
                                         "float32 Conv2d / Linear weights"), \
            inject(nn.Linear(2, 2).half(), PEFault(rate=0.1)):
        pass


def test_restored_after_exception():
    conv, x = _small_conv()
    snap = _snapshot(conv)
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad(), \
            inject(conv, PEFault(rate=0.5, array=SystolicArray(4, 4))):
        conv(x)
        raise RuntimeError("boom")
    assert not conv._forward_hooks and _same(conv, snap)


# ---------------------------------------------------------------------------------------------
# A user model the zoo does not have: residual add, F.relu, x.relu(), an inplace ReLU called
# twice, BatchNorm, a Linear nested in a submodule, never nn.Sequential.

class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, h):
        return self.fc(h.flatten(1))


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.head = _Head()

    def forward(self, x):
        h = self.act(self.bn(self.stem(x)))
        h = F.relu(self.conv(h)) + h  # residual add
        h = self.act(h).relu()  # the inplace ReLU again, then x.relu()
        return self.head(h)


def test_residual_user_model_every_layer_mapped():
    torch.manual_seed(0)
    model = _Residual().eval()
    x = torch.rand(2, 1, 4, 4)
    clean_out = {}
    names = [n for n, _ in fl.systolic.mapped_layers(model)]
    assert names == ["stem", "conv", "head.fc"]

    def capture(store, name):
        def hook(mod, args, out):
            store[name] = out.detach().clone()
        return hook

    handles = [m.register_forward_hook(capture(clean_out, n)) for n, m in model.named_modules()
               if n in names]
    clean = model(x)
    for h in handles:
        h.remove()
    snap = _snapshot(model)
    faulty_out = {}
    fault = PEFault("stuck1", pes=((0, 1),), bits=(30,), array=SystolicArray(4, 4, WS))
    with torch.no_grad(), inject(model, fault):
        handles = [m.register_forward_hook(capture(faulty_out, n))
                   for n, m in model.named_modules() if n in names]
        faulty = model(x)
        for h in handles:
            h.remove()
    # every layer's output channels m % 4 == 1 are corrupted (from its own fault and from
    # upstream), and the first layer's other channels are untouched
    stem_changed = (faulty_out["stem"] != clean_out["stem"]).any(dim=(0, 2, 3))
    assert stem_changed.tolist() == [m % 4 == 1 for m in range(8)]
    assert (faulty_out["conv"][:, 1::4] != clean_out["conv"][:, 1::4]).all()
    assert (faulty_out["head.fc"][:, 1] != clean_out["head.fc"][:, 1]).all()
    assert not torch.equal(faulty, clean) and _same(model, snap)
    assert torch.equal(model(x), clean)
