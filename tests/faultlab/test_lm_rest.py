"""The rest of faultlab on a language model: memory error models and ECC, Ranger-style caps at
the GELU sites, int8, and assert_resilient on a token metric."""

import pytest
import torch

import faultlab as fl
from faultlab import clipact
from faultlab.memory import ECC, Burst
from hwlab.data import load
from hwlab.models import char_gpt


@pytest.fixture(scope="module")
def net_val():
    torch.manual_seed(0)
    net = char_gpt(n_layer=1, n_head=2, d=32, block=16).eval()
    return net, load("pydoc", "val", block=16).subset(8)


def test_memory_models_and_ecc(net_val):
    net, val = net_val
    raw, ecc = fl.BitFlip(rate=3e-4), ECC("secded72_64", fl.BitFlip(rate=3e-4))
    rows = fl.campaign(net, val, [raw, ecc, Burst(rate=1e-5, length=4)], trials=4,
                       metrics=("accuracy", "sdc", "loss"), batch_size=8)
    by = rows.groupby("fault_model").sdc.mean()
    assert by["bitflip"] > 0.5 and by["bitflip@secded72_64"] == 0  # single errors corrected
    assert rows.fault_model.str.startswith("burst").sum() == 4


def test_ranger_caps_at_gelu_sites_bound_the_damage(net_val):
    net, val = net_val
    bounds = clipact.profile(net, val)
    assert list(bounds) == ["blocks.0.mlp.gelu"] and bounds["blocks.0.mlp.gelu"] > 0
    capped = clipact.clip(net, bounds, mode="cap")
    with torch.no_grad():  # fault-free: the profiled maxima cap nothing
        assert torch.equal(capped(val.x), net(val.x))
    fm = fl.BitFlip(count=2, bits=(30,))
    kw = {"trials": 6, "metrics": ("sdc",), "batch_size": 8, "layers": ["blocks.0.mlp.up.weight"]}
    plain = fl.campaign(net, val, [fm], **kw)
    safe = fl.campaign(capped, val, [fm], **kw)
    assert safe.sdc[1:].mean() < plain.sdc[1:].mean()


def test_int8_campaign_and_assert_resilient_on_sdc(net_val):
    net, val = net_val
    q = fl.quantize_int8(net)
    rows = fl.campaign(q, val, [fl.BitFlip(rate=1e-3)], trials=2, metrics=("sdc", "loss"),
                       batch_size=8)
    assert rows.sdc.iloc[0] == 0 and rows.sdc.iloc[1:].gt(0).any()
    res = fl.assert_resilient(net, val, fl.BitFlip(rate=1e-4, bits=tuple(range(16))), trials=5,
                              metric="sdc", max_value=0.2, batch_size=8)
    assert res.passed and res.ci_high < 0.2
    with pytest.raises(AssertionError, match="sdc"):
        fl.assert_resilient(net, val, fl.BitFlip(count=3, bits=(30,)), trials=3, metric="sdc",
                            max_value=0.01, batch_size=8)


def test_storage_formats_and_a_bfloat16_kv_cache(net_val):
    from faultlab import lm

    net, val = net_val
    rows = fl.campaign(fl.quantize(net, "mxfp4"), val, [fl.BitFlip(rate=1e-3)], trials=2,
                       metrics=lm.LM_METRICS, batch_size=8)
    assert rows.sdc.iloc[0] == 0 and rows.sdc.iloc[1:].gt(0).all()
    import copy

    b = copy.deepcopy(net).to(torch.bfloat16)
    assert b.new_cache(1).keys[0].dtype == torch.bfloat16
    p = val.x[:3, :6]
    _, clean = b.generate(p, 8)
    with lm.kv_faults(b, [lm.KVFault(0, 8, 1, 2, 14)]):  # bf16 exponent MSB of position 8
        _, f = b.generate(p, 8)
    step = (f != clean).flatten(2).any(2).any(0)  # step s decodes position 5 + s
    assert not step[:3].any() and step[3:].all()
    assert torch.equal(b.generate(p, 8)[1], clean)
