"""Bad input: a clear error in the one template, and the model untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faultlab as fl


@pytest.mark.parametrize("kw, match", [
    ({"rate": -0.1}, r"rate of BitFlip must be a per-bit probability in \[0, 1\], got -0.1"),
    ({"rate": float("nan")}, r"rate of BitFlip must be .* got nan"),
    ({"rate": 1.5}, r"rate of BitFlip must be .* got 1.5"),
    ({"rate": 1e-3, "count": 3}, r"rate and count of BitFlip must be exactly one of rate or count"),
    ({}, r"exactly one of rate or count .* got \{'rate': None, 'count': None\}"),
    ({"count": -1}, r"count of BitFlip must be an integer >= 0, got -1"),
    ({"rate": 0.1, "bits": [32]}, r"bits of BitFlip must be bit indices in \[0, 32\)"),
    ({"rate": 0.1, "bits": [1, 1]}, r"bits of BitFlip must be distinct bit indices"),
])
def test_fault_model_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        fl.BitFlip(**kw)


def test_stuck_value_error():
    with pytest.raises(ValueError, match=r"value of StuckAt must be 0 or 1, got 2"):
        fl.StuckAt(2, rate=0.1)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(model, snap):
    return all(torch.equal(v, snap[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("call, match", [
    (lambda m: fl.sample_faults(m, fl.BitFlip(rate=0.1), layers=["nope"]),
     r"layers of sample_faults must be module or parameter names .* got 'nope'"),
    (lambda m: fl.sample_faults(m, fl.BitFlip(count=10**6)),
     r"count of sample_faults must be at most the 6144 eligible bits .* got 1000000"),
    (lambda m: fl.sample_faults(m, fl.BitFlip(rate=0.1), seed=-1),
     r"seed of sample_faults must be an integer >= 0, got -1"),
    (lambda m: fl.sample_faults(m, "bitflip"), r"fault_model of sample_faults must be a BitFlip"),
    (lambda m: fl.sample_faults(m, fl.BitFlip(rate=0.1), layers=["2"]),
     r"model of sample_faults must be a model with parameters eligible for faults"),
    (lambda m: fl.inject(m, fl.BitFlip(rate=0.1), layers=["x"]).__enter__(),
     r"layers of inject must be module or parameter names"),
    (lambda m: fl.inject(m, 0.1).__enter__(),
     r"fault_model_or_map of inject must be a BitFlip, StuckAt or FaultMap, got 0.1"),
])
def test_bad_input_leaves_model_untouched(tiny, call, match):
    snap = _snapshot(tiny)
    with pytest.raises(ValueError, match=match):
        call(tiny)
    assert _same(tiny, snap)


def test_unsupported_dtype_names_the_parameter(tiny):
    tiny[3].double()
    match = r"bfloat16 or int8, got \"parameter '3.weight' of dtype float64\""
    with pytest.raises(ValueError, match=match):
        fl.sample_faults(tiny, fl.BitFlip(rate=0.1))


def test_bit_outside_the_word(tiny):
    q = fl.quantize_int8(tiny)
    with pytest.raises(ValueError, match=r"bits of sample_faults must be bit indices below the word"
                                         r" width 8 of parameter '0.weight' \(int8\), got \(9,\)"):
        fl.sample_faults(q, fl.BitFlip(rate=0.1, bits=[9]))
    h = tiny.half()
    with pytest.raises(ValueError, match=r"width 16 of parameter '0.weight' \(float16\)"):
        fl.sample_faults(h, fl.BitFlip(rate=0.1, bits=[31]))


def test_foreign_or_mismatched_map_is_refused_before_any_change(tiny):
    fmap = fl.sample_faults(tiny, fl.BitFlip(rate=0.05), seed=0)
    other = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    snap = _snapshot(other)
    with pytest.raises(ValueError, match=r"a map naming unknown parameter '3.weight'"):
        fl.inject(other, fmap).__enter__()
    assert _same(other, snap)
    bad = fl.FaultMap(fmap.names, fmap.dtypes, fmap.param, fmap.index,
                      np.full(len(fmap), 40, np.uint8), fmap.kind)
    snap = _snapshot(tiny)
    with pytest.raises(ValueError, match=r"bit indices below the word width 32"):
        fl.inject(tiny, bad).__enter__()
    assert _same(tiny, snap)
    with pytest.raises(ValueError, match=r"layers of inject must be None when a FaultMap is given"):
        fl.inject(tiny, fmap, layers=["0"]).__enter__()


def test_quantize_int8_needs_linear_or_conv():
    with pytest.raises(ValueError, match=r"model of quantize_int8 must be a model with nn.Linear"):
        fl.quantize_int8(torch.nn.Sequential(torch.nn.ReLU()))
