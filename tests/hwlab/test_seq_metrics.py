"""hwlab.metrics on B x T x V logits (one sample per position) and generation_metrics."""

import math

import pytest
import torch

from hwlab.errors import HwlabError
from hwlab.metrics import generation_metrics, metric_values


def test_token_metrics_against_a_per_position_loop():
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(3, 5, 7, generator=g)
    faulty = clean.clone()
    faulty[0, 2] = torch.randn(7, generator=g) * 5
    faulty[2, 4, 0] = 50.0
    y = torch.randint(0, 7, (3, 5), generator=g)
    v = metric_values(faulty, y, clean, ("accuracy", "sdc", "critical_sdc", "loss"))
    acc = sdc = crit = base = 0
    nll = 0.0
    for b in range(3):
        for t in range(5):
            p, c = int(faulty[b, t].argmax()), int(clean[b, t].argmax())
            acc += p == int(y[b, t])
            sdc += p != c
            base += c == int(y[b, t])
            crit += c == int(y[b, t]) and p != int(y[b, t])
            nll -= math.log(math.exp(faulty[b, t, y[b, t]]) / sum(math.exp(z) for z in faulty[b, t]))
    assert v["accuracy"] == pytest.approx(acc / 15) and v["sdc"] == pytest.approx(sdc / 15)
    assert v["critical_sdc"] == pytest.approx(crit / base) and sdc >= 1
    assert v["loss"] == pytest.approx(nll / 15, rel=1e-5)  # nats; bits/char = loss / ln 2


def test_generation_metrics():
    clean = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [5, 5, 5, 5]])
    tok = torch.tensor([[1, 2, 3, 4], [1, 9, 3, 4], [6, 5, 5, 5]])
    logits = torch.zeros(3, 4, 10)
    logits[2, 3, 1] = float("nan")
    m = generation_metrics(tok, clean, logits)
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert m["first_divergence"] == pytest.approx((4 + 1 + 0) / 3)
    assert m["diverged_by"] == pytest.approx(1 / 3)  # within the first L/4 = 1 token: row 2
    assert m["nonfinite"] == pytest.approx(1 / 3)
    assert math.isnan(generation_metrics(tok, clean)["nonfinite"])
    with pytest.raises(HwlabError, match=r"clean_tokens .*shape \(3, 4\)"):
        generation_metrics(tok, clean[:2])
    with pytest.raises(HwlabError, match=r"y of t must be a tensor of shape \(3, 4\)"):
        metric_values(logits, clean[:, :3], logits, ("accuracy",), caller="t")


def test_user_metric_sees_windows_and_builtins_keep_tokens():
    seen = []

    def windows(logits, y, clean):
        seen.append(tuple(logits.shape))
        return 1.0

    from hwlab.metrics import MetricAccumulator, resolve_metrics

    acc = MetricAccumulator(resolve_metrics(("accuracy", windows, "sdc"), "t"))
    logits = torch.zeros(2, 3, 4)
    acc.update(logits, torch.zeros(2, 3, dtype=torch.long), clean_logits=logits)
    assert seen == [(2, 3, 4)]
    assert acc.denominators() == {"accuracy": 6, "windows": 2, "sdc": 6}


def test_train_evaluate_scores_every_position_of_a_language_model():
    from hwlab.data import load
    from hwlab.models import char_gpt
    from hwlab.train import evaluate

    torch.manual_seed(0)
    net = char_gpt(vocab_size=103, block=16, n_layer=1, n_head=1, d=8).eval()
    val = load("pydoc", "val", block=16).subset(5)
    with torch.no_grad():
        ref = (net(val.x).argmax(-1) == val.y).double().mean()
    assert evaluate(net, val, batch_size=2) == pytest.approx(float(ref))
