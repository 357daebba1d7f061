"""Vulnerability tables and selective hardening on faultlab.quantize models: element codes and
scale codes are separate entries, each bit labelled with its field in that format."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
from torch import nn

import faultlab as fl
from faultlab._format_fields import code_fields, stored_bit_field
from faultlab._formats import storage


class Net(nn.Module):  # a model of the test's own: two Linear layers, 64 inputs (2 MX blocks)
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 32)
        self.b = nn.Linear(32, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 64, generator=g)
    torch.manual_seed(0)
    net = Net().eval()
    return net, (x, net(x).argmax(1))


def _fp8_field(code: int, bit: int, dtype) -> str:
    """Reference: which field a bit is, from ml_dtypes' decoding of the two codes."""
    a = np.array([code], np.uint8).view(dtype).astype(np.float32)[0]
    b = np.array([code ^ (1 << bit)], np.uint8).view(dtype).astype(np.float32)[0]
    if np.sign(a) != np.sign(b) and abs(a) == abs(b):
        return "sign"
    if not np.isfinite(b):  # 1.0 -> inf / NaN: only the exponent field reaches it
        return "exponent"
    ratio = np.log2(abs(b / a))  # an exponent flip scales by a power of two >= 2
    return "exponent" if ratio == round(ratio) and abs(ratio) >= 1 else "mantissa"


@pytest.mark.parametrize(("fmt", "dtype"), [("fp8_e4m3", ml_dtypes.float8_e4m3fn),
                                            ("fp8_e5m2", ml_dtypes.float8_e5m2)])
def test_fp8_bit_fields_match_ml_dtypes(data, fmt, dtype):
    q = fl.quantize(data[0], fmt)
    info = storage(q)["a.weight"]
    code = 0x38 if fmt == "fp8_e4m3" else 0x3C  # 1.0 in both formats
    for bit in range(8):
        assert stored_bit_field(info, bit) == _fp8_field(code, bit, dtype), bit


def test_packed_and_scale_fields(data):
    q = fl.quantize(data[0], "mxfp4")
    el, sc = storage(q)["a.weight"], storage(q)["a.weight_scale"]
    # E2M1 codes two per byte: sign = bits 3 and 7, exponent 1-2 and 5-6, mantissa 0 and 4
    assert [stored_bit_field(el, b) for b in range(8)] == [
        "mantissa", "exponent", "exponent", "sign"] * 2
    assert code_fields(el) == {"sign": (3, 7), "sign+exponent": (1, 2, 3, 5, 6, 7),
                               "word": tuple(range(8))}
    assert {stored_bit_field(sc, b) for b in range(8)} == {"scale exponent"}  # E8M0
    assert code_fields(sc) == {"word": tuple(range(8))}
    six = storage(fl.quantize(data[0], "mxfp6_e2m3"))["a.weight"]
    assert stored_bit_field(six, 0) == "mixed" and code_fields(six) == {"word": tuple(range(8))}


def test_vulnerability_and_hardening_split_element_and_scale_words(data):
    net, xy = data
    q = fl.quantize(net, "mxfp4").eval()
    table = fl.vulnerability(q, xy, trials=3, prefix=False)
    assert list(table["layer"].unique()) == ["a.weight", "a.weight_scale", "b.weight",
                                             "b.weight_scale"]
    scale = table[table["layer"] == "a.weight_scale"]
    assert set(scale["field"]) == {"scale exponent"} and (scale["n_faults"] == 1).all()
    # a flip of a high E8M0 bit scales 32 weights by 2^(+-2^k): far worse than a mantissa flip
    top = scale[scale["bit"] == 7]["accuracy_drop"].iloc[0]
    mant = table[(table["layer"] == "a.weight") & (table["field"] == "mantissa")]
    assert top > mant["accuracy_drop"].max() + 0.05
    plans = fl.plan_hardening(q, table, rate=1e-3)
    protected = {p for plan in plans for p, _, _, _ in plan.protect}
    assert {"a.weight_scale", "b.weight_scale"} <= protected
    cheapest = next(p for p in plans if p.protect)
    words = {n: t.numel() for n, t in q.named_parameters()}
    total = 8 * sum(words[n] for n in ("a.weight", "a.weight_scale", "b.weight",
                                       "b.weight_scale"))
    ((name, bits, scheme, _field),) = cheapest.protect
    extra = {"secded": 8 / 64, "tmr": 2.0}[scheme]  # check bits per protected bit
    assert cheapest.overhead == pytest.approx(words[name] * len(bits) * extra / total)
