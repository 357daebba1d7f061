"""KV-cache and activation faults: persistence, transience, stages, exact restoration."""

import pytest
import torch
from torch import nn

from faultlab import lm
from hwlab.errors import HwlabError
from hwlab.models import KVCache, char_gpt


def _net():
    torch.manual_seed(0)
    net = char_gpt(vocab_size=23, block=32, n_layer=2, n_head=2, d=16).eval()
    with torch.no_grad():
        net.wte.weight.mul_(10)
    return net


@torch.no_grad()
def _teacher_forced(net, seq, prompt):
    """Logits of every position: prefill ``prompt`` tokens, then one golden token per step."""
    cache = net.new_cache(seq.shape[0])
    out = [net.step(seq[:, :prompt], cache)]
    for t in range(prompt, seq.shape[1]):
        out.append(net.step(seq[:, t:t + 1], cache))
    return torch.cat(out, 1)  # B x L x V


@pytest.mark.parametrize("pos", [8, 20])  # a prompt entry (prefill) and a generated one (decode)
def test_one_cached_k_exponent_flip_persists_from_its_position(pos):
    net = _net()
    seq = torch.randint(0, 23, (3, 30), generator=torch.Generator().manual_seed(1))
    clean = _teacher_forced(net, seq, 12)
    with lm.kv_faults(net, [lm.KVFault(layer=0, pos=pos, head=1, elem=2, bit=29)]):
        faulty = _teacher_forced(net, seq, 12)
    assert torch.equal(faulty[:, :pos], clean[:, :pos])  # nothing before the entry changes
    changed = (faulty != clean).flatten(2).any(2).any(0)  # per position, any sequence
    assert changed[pos] and changed[pos + 1:].sum() >= 5  # and every later reader may see it
    assert torch.equal(_teacher_forced(net, seq, 12), clean)  # after the block: bit-identical
    tok, logits = net.generate(seq[:, :12], 19)
    with lm.kv_faults(net, [lm.KVFault(layer=0, pos=pos, head=1, elem=2, bit=29)]):
        net.generate(seq[:, :12], 19)
    again = net.generate(seq[:, :12], 19)
    assert torch.equal(again[0], tok) and torch.equal(again[1], logits)


def test_a_kept_cache_is_restored_bit_exactly():
    net = _net()
    seq = torch.randint(0, 23, (2, 10), generator=torch.Generator().manual_seed(2))
    clean = net.new_cache(2)
    with torch.no_grad():
        net.step(seq, clean)
    cache = net.new_cache(2)
    faults = [lm.KVFault(1, 3, 0, 1, 31, "v", batch=1), lm.KVFault(0, 9, 1, 0, 30),
              lm.KVFault(0, 9, 1, 0, 4)]  # two bits of one word
    with lm.kv_faults(cache, faults), torch.no_grad():
        net.step(seq, cache)
        v, k = cache.values[1], cache.keys[0]
        assert v[1, 0, 3, 1] == -clean.values[1][1, 0, 3, 1] and v[0, 0, 3, 1] == clean.values[1][
            0, 0, 3, 1]  # sign flip in sequence 1 only
        diff = k.view(torch.int32)[:, 1, 9, 0] ^ clean.keys[0].view(torch.int32)[:, 1, 9, 0]
        assert diff.tolist() == [(1 << 30) | (1 << 4)] * 2
    for a, b in zip(cache.keys[:1] + cache.values[:1], clean.keys[:1] + clean.values[:1]):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))  # the faulty words restored
    for a, b in zip(cache.keys[1:] + cache.values[1:], clean.keys[1:] + clean.values[1:]):
        ai, bi = a.view(torch.int32), b.view(torch.int32)
        assert torch.equal(ai[:, :, :9], bi[:, :, :9])  # layer 1 before the layer-0 fault: clean
        assert not torch.equal(ai[:, :, 9:10], bi[:, :, 9:10])  # computed from the faulty read
    assert "update" not in vars(cache)


def test_users_own_model_through_the_cache_interface():
    class Tiny(nn.Module):  # the user's LM: one attention layer that calls cache.update
        def __init__(self):
            super().__init__()
            self.emb, self.k, self.v, self.out = nn.Embedding(7, 4), nn.Linear(4, 4), \
                nn.Linear(4, 4), nn.Linear(4, 7)

        def forward(self, idx, cache):
            x = self.emb(idx)  # B x T x 4
            k, v = cache.update(self.k(x)[:, None], self.v(x)[:, None], 0)  # B x 1 x S x 4
            att = (x[:, None] @ k.transpose(-1, -2)).softmax(-1)  # (causal mask omitted)
            return self.out((att @ v)[:, 0])

    torch.manual_seed(3)
    net, idx = Tiny().eval(), torch.randint(0, 7, (2, 6))
    with torch.no_grad():
        clean = net(idx, KVCache(1, 2, 1, 8, 4))
        cache = KVCache(1, 2, 1, 8, 4)
        with lm.kv_faults(cache, [lm.KVFault(0, 2, 0, 1, 30, "v")]):
            faulty = net(idx, cache)
        assert not torch.equal(faulty, clean)
        assert torch.equal(net(idx, KVCache(1, 2, 1, 8, 4)), clean)


def test_draw_kv_faults_is_replayable_and_at_rate():
    net = _net()
    a = lm.draw_kv_faults(1e-4, net, batch=4, seed=7)
    assert a == lm.draw_kv_faults(1e-4, net, batch=4, seed=7)
    total = 2 * 2 * 4 * 2 * 32 * 8 * 32  # layers x (k, v) x batch x heads x block x hd x bits
    assert abs(len(a) - 1e-4 * total) < 4 * (1e-4 * total) ** 0.5
    dec = lm.draw_kv_faults(1e-3, net, batch=4, seed=7, positions=(12, 32))
    assert dec and all(12 <= f.pos < 32 for f in dec)
    assert lm.draw_kv_faults(0.0, net, batch=4) == []
    with pytest.raises(HwlabError, match="block = 32"):
        lm.draw_kv_faults(1e-3, net, batch=1, positions=(0, 40))
    with pytest.raises(HwlabError, match="which of KVFault"):
        lm.KVFault(0, 1, which="q")


def test_activation_faults_are_transient_and_reach_through_the_cache():
    net = _net()
    prompt = torch.randint(0, 23, (2, 10), generator=torch.Generator().manual_seed(4))
    _, clean = net.generate(prompt, 8)
    assert lm.lm_sites(net)[:3] == ["blocks.0.attn.logits", "blocks.0.attn.probs",
                                    "blocks.0.mlp.gelu"]
    last = lm.ActFault("blocks.1.attn.logits", step=3, index=(0, -1, 1), bit=30)
    with lm.act_faults(net, [last]):  # the last layer at decode step 3: only that step's logits
        _, f = net.generate(prompt, 8)
    hit = (f != clean).flatten(2).any(2).any(0)
    assert hit.tolist() == [False, False, False, True, False, False, False, False]
    # layer 0 in the prefill (step 0): position 5 of the prompt, every later step reads its K/V
    first = lm.ActFault("blocks.0.mlp.gelu", step=0, index=(5, 3), bit=30)
    with lm.act_faults(net, [first]):
        _, g = net.generate(prompt, 8)
    assert (g != clean).flatten(2).any(2).all()
    assert torch.equal(net.generate(prompt, 8)[1], clean)  # hooks gone: bit-identical
    with lm.act_faults(net, [lm.ActFault("blocks.0.attn.probs", 1, rate=0.0)]):
        assert torch.equal(net.generate(prompt, 8)[1], clean)
    with pytest.raises(HwlabError, match="sites among the model's modules"), \
            lm.act_faults(net, [lm.ActFault("blocks.9.mlp.gelu", 0, (0,))]):
        pass


def test_faults_outside_the_model_are_refused():
    net = _net()
    prompt = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(HwlabError, match="layer < 2, pos < 32, head < 2, elem < 8"), \
            lm.kv_faults(net, [lm.KVFault(layer=2, pos=1)]):
        pass
    with pytest.raises(HwlabError, match=r"last dims of \(1, 4, 64\) \(output of blocks.0.mlp"), \
            lm.act_faults(net, [lm.ActFault("blocks.0.mlp.gelu", 0, (9, 0))]):
        net.generate(prompt, 2)
    from hwlab.zoo import LMRecipe, lm_entry

    with pytest.raises(HwlabError, match="iters of LMRecipe must be an integer >= 1, got 0"):
        lm_entry(recipe=LMRecipe(iters=0))
    with pytest.raises(HwlabError, match="beta2 of LMRecipe"):
        lm_entry(recipe=LMRecipe(beta2=1.0))
