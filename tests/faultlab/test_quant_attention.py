"""quantize_int8 stores attention projections as int8: nn.MultiheadAttention and hand-written."""

import pytest
import torch
from torch import nn

import faultlab as fl
from faultlab._quant import Int8Linear, Int8MultiheadAttention
from hwlab.models import char_gpt


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_becomes_int8(batch_first):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(8, 16))  # a user's model holding torch's attention
        net.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first)
        odd = nn.MultiheadAttention(16, 2, kdim=6, vdim=5, batch_first=True)
    q = fl.quantize_int8(net)
    assert isinstance(q.attn, Int8MultiheadAttention) and isinstance(q.attn.out_proj, Int8Linear)
    ints = {n for n, p in q.named_parameters() if p.dtype == torch.int8}
    assert ints == {"0.weight", "attn.in_proj_weight", "attn.out_proj.weight"}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 16, generator=g) if batch_first else torch.randn(5, 2, 16, generator=g)
    ref, got = net.attn(x, x, x)[0], q.attn(x, x, x)[0]
    assert (got - ref).abs().max() < 0.02  # int8 rounding of two projections
    deq = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()  # torch on the same words
    with torch.no_grad():
        w = q.attn.in_proj_weight.float() * q.attn.in_proj_weight_scale
        deq.in_proj_weight.copy_(w)
        deq.in_proj_bias.copy_(net.attn.in_proj_bias)
        deq.out_proj.weight.copy_(q.attn.out_proj.dequantized(torch.float32))
        deq.out_proj.bias.copy_(net.attn.out_proj.bias)
    assert torch.allclose(deq(x, x, x)[0], got, atol=1e-6)
    before = q.attn.in_proj_weight.clone()
    with fl.inject(q.attn, fl.BitFlip(count=3, bits=(6,)), seed=0):  # int8 words take the faults
        changed = not torch.equal(q.attn(x, x, x)[0], got)
    assert changed and torch.equal(q.attn.in_proj_weight, before)
    qo = fl.quantize_int8(odd, scheme="asymmetric")
    assert [n for n, p in qo.named_parameters() if p.dtype == torch.int8] == [
        "q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"]
    k, v = torch.randn(2, 7, 6, generator=g), torch.randn(2, 7, 5, generator=g)
    xb = x if batch_first else x.transpose(0, 1)
    assert (qo(xb, k, v)[0] - odd(xb, k, v)[0]).abs().max() < 0.05


def test_char_gpt_int8_leaves_only_embeddings_and_norms_float():
    torch.manual_seed(0)
    net = char_gpt(vocab_size=11, block=8, n_layer=2, n_head=2, d=16).eval()
    q = fl.quantize_int8(net)
    linear = [n for n, m in q.named_modules() if isinstance(m, Int8Linear)]
    assert len(linear) == 2 * 6 + 1  # q, k, v, o, up, down per block + the head
    assert not any(type(m) is nn.Linear for m in q.modules())
    floats = sorted(n for n, p in q.named_parameters() if p.dtype != torch.int8)
    assert floats == ["blocks.0.ln_1.weight", "blocks.0.ln_2.weight", "blocks.1.ln_1.weight",
                      "blocks.1.ln_2.weight", "ln_f.weight", "wpe.weight", "wte.weight"]
    idx = torch.randint(0, 11, (3, 8))
    with torch.no_grad():
        assert (q(idx) - net(idx)).abs().max() < 0.05
        tok, _ = q.generate(idx[:, :4], 5)  # the int8 model decodes through its KV cache
        assert torch.equal(tok, q.generate(idx[:, :4], 5, use_cache=False)[0])
