"""Hugging Face causal LMs from a small config (random weights, nothing downloaded): weight
faults, KV-cache faults through their DynamicCache, token and generation metrics."""

import pytest
import torch

import faultlab as fl
from faultlab import lm
from hwlab.metrics import generation_metrics, metric_values

transformers = pytest.importorskip("transformers")


def _model(kind):
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=40, n_positions=32, n_embd=32, n_layer=2,
                                      n_head=2, bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(cfg).eval(), "transformer.h.0.attn.c_attn.weight"
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=32,
                                   bos_token_id=0, eos_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval(), "model.layers.0.self_attn.q_proj.weight"


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_kv_fault_through_the_hf_cache_object(kind):
    m, _ = _model(kind)
    prompt = torch.randint(0, 40, (3, 8), generator=torch.Generator().manual_seed(1))
    tok, clean = lm.greedy(m, prompt, 12)
    with torch.no_grad():
        full = m(input_ids=torch.cat([prompt, tok[:, :-1]], 1)).logits[:, 7:]
    assert (full - clean).abs().max() < 1e-4  # the cached greedy path = full recomputation
    cache = transformers.DynamicCache(config=m.config)
    with lm.kv_faults(cache, [lm.KVFault(layer=0, pos=11, head=1, elem=3, bit=29)]):
        _, faulty = lm.greedy(m, prompt, 12, cache=cache)
    step = (faulty != clean).flatten(2).any(2).any(0)  # step s decodes position 7 + s
    assert not step[:4].any() and step[4] and step[5:].sum() >= 4
    again = lm.greedy(m, prompt, 12)
    assert torch.equal(again[0], tok) and torch.equal(again[1], clean)
    shape = lm.draw_kv_faults(1e-3, m, batch=3, seed=0)
    assert all(f.pos < 32 and f.head < 2 for f in shape)  # the config's KV heads and positions


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_weight_faults_and_token_metrics(kind, tmp_path):
    m, name = _model(kind)
    net = lm.logits_only(m)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 40, (4, 16), generator=g)
    y = torch.roll(x, -1, 1)
    prompt = x[:, :6]
    tok, tlog = lm.greedy(m, prompt, 10)
    before = m.get_parameter(name).clone()
    with torch.no_grad():
        clean = net(x)
    with fl.inject(net, fl.BitFlip(count=2, bits=(30,)), seed=0, layers=["model." + name]):
        with torch.no_grad():
            faulty = net(x)
        ftok, flog = lm.greedy(m, prompt, 10)
    v = metric_values(faulty, y, clean, ("sdc", "loss"))
    gen = generation_metrics(ftok, tok, flog)
    assert v["sdc"] > 0 or gen["nonfinite"] > 0
    assert not torch.equal(flog, tlog) and 0 <= gen["first_divergence"] <= 10
    assert torch.equal(m.get_parameter(name), before)  # restored bit-exactly
    rows = fl.campaign(net, (x, y), [fl.BitFlip(rate=1e-4)], trials=2, batch_size=2,
                       metrics=lm.LM_METRICS, layers=["model." + name])
    assert rows[rows.fault_model == "none"].sdc.iloc[0] == 0 and len(rows) == 3
    m.save_pretrained(tmp_path / "ckpt")  # a user's own checkpoint in a local folder
    again = lm.load_hf(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(lm.logits_only(again)(x), clean)
