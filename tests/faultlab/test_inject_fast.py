"""inject's one-call path (draw + apply in one kernel) gives the maps and weights of the two-step
path, restores bit-exactly, and the cheaper staleness check of the model views still sees every
change that the full walk (_signature below, written independently) sees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faultlab as fl
from faultlab._faults import FaultMap
from faultlab._inject import apply_fault_map, restore
from faultlab._plain import _fault_map
from faultlab._words import model_views


def _signature(modules) -> list | None:
    """The reference staleness check: identities of every child module and parameter of the
    weakly referenced ``modules`` plus the parameters' data pointers (None once one is gone)."""
    mods = [r() for r in modules]
    if any(m is None for m in mods):
        return None
    return [id(m._modules.get(k)) for m in mods for k in m._modules] + \
        [p.data_ptr() if p is not None else id(p) for m in mods
         for p in m._parameters.values()] + \
        [id(p) for m in mods for p in m._parameters.values()]


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 6), torch.nn.LayerNorm(6))


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _same_bits(a, b):
    return all(torch.equal(a[n].view(torch.uint8), b[n].view(torch.uint8)) for n in a)


@pytest.mark.parametrize("fault", [fl.BitFlip(rate=0.01), fl.StuckAt(1, rate=0.02),
                                   fl.StuckAt(0, count=30), fl.BitFlip(count=5, bits=[0, 3, 7])])
@pytest.mark.parametrize("seed", [0, 7, 2**40, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 3 * 2**70,
                                  np.int64(5)])
@pytest.mark.parametrize("fmt", [None, "int8", "mxfp4"])
def test_one_call_path_equals_draw_then_apply(fault, seed, fmt):
    model = _model()
    if fmt == "int8":
        model = fl.quantize_int8(model)
    elif fmt == "mxfp4":
        model = fl.quantize(model, "mxfp4")
    kw = {"include_bias": True} if fault.count == 30 else {}
    before = _snapshot(model)
    expected_map = fl.sample_faults(model, fault, seed=seed, **kw)
    recs = apply_fault_map(model, expected_map)  # the two-step path
    expected = _snapshot(model)
    restore(recs)
    assert _same_bits(_snapshot(model), before)
    cm = fl.inject(model, fault, seed=seed, **kw)
    with cm as fmap:
        during = _snapshot(model)
        assert cm.drawn is not None and cm.touched is None  # the one-call path
    assert fmap == expected_map and fmap.fingerprint() == expected_map.fingerprint()
    assert fmap.seed == expected_map.seed and fmap.eligible_bits == expected_map.eligible_bits
    assert all(getattr(fmap, a).dtype == getattr(expected_map, a).dtype
               for a in ("param", "index", "bit", "kind"))
    assert _same_bits(during, expected)
    assert _same_bits(_snapshot(model), before)


def test_nested_and_exception_restore_on_the_one_call_path():
    model = _model()
    before = _snapshot(model)
    outer, inner = fl.inject(model, fl.BitFlip(rate=0.05), seed=1), \
        fl.inject(model, fl.StuckAt(1, rate=0.05), seed=2)
    with pytest.raises(KeyError), outer, inner:
        raise KeyError("x")
    assert _same_bits(_snapshot(model), before)


def test_the_context_is_entered_once_and_checks_lazily():
    model = _model()
    cm = fl.inject(model, fl.BitFlip(rate=0.01), seed=-1)  # nothing checked yet
    with pytest.raises(ValueError, match="seed"):
        cm.__enter__()
    cm = fl.inject(model, fl.BitFlip(rate=0.01), seed=3)
    with cm:
        pass
    with pytest.raises(ValueError):
        cm.__enter__()


def test_fast_fault_map_is_the_dataclass_one():
    a = np.arange(3, dtype=np.int32)
    fast = _fault_map(("w",), ("float32",), a, a.astype(np.int64), a.astype(np.uint8),
                      a.astype(np.int8), 96, 5)
    slow = FaultMap(names=("w",), dtypes=("float32",), param=a, index=a.astype(np.int64),
                    bit=a.astype(np.uint8), kind=a.astype(np.int8), eligible_bits=96, seed=5)
    assert type(fast) is FaultMap and fast == slow and fast.fingerprint() == slow.fingerprint()
    assert list(vars(fast)) == list(vars(slow)) and fast.extra is None
    with pytest.raises(AttributeError):
        fast.seed = 1  # still frozen


def _changes():
    def data(m):
        m[0].weight.data = torch.randn(16, 12)

    def param(m):
        m[2].weight = torch.nn.Parameter(torch.randn(6, 16))

    def module(m):
        m[0] = torch.nn.Linear(12, 16)

    def leaf_param(m):
        m[1].register_parameter("alpha", torch.nn.Parameter(torch.ones(3)))

    def leaf_child(m):
        m[1].add_module("inner", torch.nn.Linear(2, 2))

    def drop_param(m):
        m[3].bias = None

    def new_child(m):
        m.append(torch.nn.Linear(6, 2))

    def reorder(m):
        m._modules["0"], m._modules["2"] = m._modules["2"], m._modules["0"]

    return [data, param, module, leaf_param, leaf_child, drop_param, new_child, reorder]


@pytest.mark.parametrize("change", _changes(), ids=lambda f: f.__name__)
def test_views_are_rebuilt_on_every_change_the_full_walk_sees(change):
    model = _model()
    views = model_views(model)
    sig = _signature(views.modules)
    assert model_views(model) is views and views.current(model)
    with fl.inject(model, fl.BitFlip(rate=0.01), seed=1):
        pass
    change(model)
    assert _signature(views.modules) != sig  # the reference check sees it ...
    assert not views.current(model)  # ... and so does the fast one
    fresh = model_views(model)
    assert fresh is not views and fresh.current(model)
    before = _snapshot(model)
    fault = fl.BitFlip(rate=0.05)
    with fl.inject(model, fault, seed=4) as fmap:
        during = _snapshot(model)
    assert fmap == fl.sample_faults(model, fault, seed=4)  # the draw follows the new parameters
    recs = apply_fault_map(model, fmap)
    assert _same_bits(_snapshot(model), during)
    restore(recs)
    assert _same_bits(_snapshot(model), before)


def test_in_place_writes_keep_the_views():
    model = _model()
    views = model_views(model)
    with torch.no_grad():
        model[0].weight.mul_(2.0)
        model[2].weight.copy_(torch.randn(6, 16))
    assert model_views(model) is views  # same memory: the views stay valid
