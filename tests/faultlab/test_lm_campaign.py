"""Weight-fault campaigns on language models: token metrics per position, first divergence."""

import math

import pytest
import torch
from torch import nn

import faultlab as fl
from faultlab import lm
from hwlab.data import load
from hwlab.models import char_gpt

COLS = ["fault_model", "fault_rate", "trial", "accuracy", "sdc", "loss", "first_divergence",
        "nonfinite"]


def test_char_gpt_campaign_rows_and_delayed_start(tmp_path):
    from hwlab.store import Store

    torch.manual_seed(0)
    net = char_gpt(n_layer=2, n_head=2, d=32, block=16).eval()
    val = load("pydoc", "val", block=16).subset(8)
    points = [fl.BitFlip(count=1, bits=(30,)), fl.BitFlip(rate=3e-5)]
    store = Store(tmp_path / "c.sqlite")
    rows = fl.campaign(net, val, points, trials=3, metrics=lm.LM_METRICS, batch_size=4,
                       store=store)
    stored = store.results(study="faultlab.campaign").set_index("key")
    assert len(stored) == 7  # the store keeps the user metrics' columns too
    for col in ("sdc", "loss", "first_divergence", "nonfinite"):
        got = stored.loc[rows.key, col].to_numpy()
        assert ((got == rows[col].to_numpy()) | (rows[col].isna().to_numpy())).all(), col
    full = fl.campaign(net, val, points, trials=3, metrics=lm.LM_METRICS, batch_size=4,
                       delayed_start=False)
    assert rows[COLS].equals(full[COLS])  # the prefix cache changes nothing but latency
    clean = rows[rows.fault_model == "none"].iloc[0]
    assert clean.sdc == 0 and clean.first_divergence == 16 and clean.nonfinite == 0
    with torch.no_grad():  # independent: the mean token NLL of the fault-free model
        logits = net(val.x)
        ref = -logits.log_softmax(-1).gather(-1, val.y[..., None]).mean()
    assert clean.loss == pytest.approx(float(ref), rel=1e-5)
    assert rows.dataset.eq(f"pydoc/val@{val.sha256[:12]}").all()
    msb = rows[rows.fault_model == "bitflip"].head(3)
    assert ((msb.sdc > 0) | (msb.nonfinite > 0)).all()  # an exponent-MSB flip is never silent
    assert (msb.first_divergence < 16).all()


def test_campaign_on_a_users_own_language_model():
    class Bigram(nn.Module):  # the user's model: embedding -> linear, B x T -> B x T x V
        def __init__(self, v):
            super().__init__()
            self.emb, self.out = nn.Embedding(v, 8), nn.Linear(8, v)

        def forward(self, idx):
            return self.out(torch.tanh(self.emb(idx)))

    torch.manual_seed(1)
    val = load("pydoc", "val", block=8).subset(6)
    net = Bigram(val.num_classes).eval()
    rows = fl.campaign(net, val, [fl.BitFlip(count=4, bits=(30,))], trials=2,
                       metrics=lm.LM_METRICS, batch_size=3)
    faulty = rows[rows.fault_model == "bitflip"]
    assert len(faulty) == 2 and ((faulty.sdc > 0) | (faulty.nonfinite > 0)).all()
    assert math.isclose(rows[rows.fault_model == "none"].sdc.iloc[0], 0.0)


def test_lm_metrics_need_sequence_logits():
    from hwlab.errors import HwlabError

    with pytest.raises(HwlabError, match="B x T x vocab"):
        lm.first_divergence(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, 3))
