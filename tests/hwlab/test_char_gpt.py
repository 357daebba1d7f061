"""char-gpt: nanoGPT's size, the KV cache against full recomputation, both attention branches."""

import math

import pytest
import torch

from hwlab.errors import HwlabError
from hwlab.models import KVCache, char_gpt


def test_default_size_is_nanogpt_cpu_recipe():
    torch.manual_seed(0)
    net = char_gpt()
    assert sum(p.numel() for p in net.parameters()) == 808_960  # tied head counted once
    assert net.lm_head.weight is net.wte.weight
    with torch.no_grad():  # initial loss ~ ln(vocab): the N(0, 0.02) init is near uniform
        logits = net(torch.randint(0, 103, (4, 64)))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 103),
                                             torch.randint(0, 103, (256,)))
    assert abs(float(loss) - math.log(103)) < 0.1


def test_cached_greedy_equals_full_recomputation_every_step():
    torch.manual_seed(1)
    net = char_gpt(vocab_size=103, block=64, n_layer=2, n_head=4, d=64).eval()
    with torch.no_grad():  # sharpen the random model so that greedy paths are not flat
        net.wte.weight.mul_(20)
    prompts = torch.randint(0, 103, (16, 16))  # 16 prompts of 16 characters
    tok_c, log_c = net.generate(prompts, 49)  # 16 + 49 - 1 = 64: every step that fits
    tok_f, log_f = net.generate(prompts, 49, use_cache=False)
    assert torch.equal(tok_c, tok_f)
    assert (log_c - log_f).abs().max() < 1e-4
    assert len(set(tok_c.flatten().tolist())) > 5  # not one repeated character
    # and the teacher-forced logits of the whole sequence agree with the cached steps
    full = net(torch.cat([prompts, tok_c[:, :-1]], 1))[:, 15:]  # B x 49 x V
    assert (full - log_c).abs().max() < 1e-4


def test_manual_branch_equals_sdpa():
    torch.manual_seed(2)
    a = char_gpt(vocab_size=11, block=16, n_layer=2, n_head=2, d=16).eval()
    b = char_gpt(vocab_size=11, block=16, n_layer=2, n_head=2, d=16, manual=False).eval()
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, 11, (3, 16))
    with torch.no_grad():
        assert (a(idx) - b(idx)).abs().max() < 1e-5


def test_cache_bounds_and_errors():
    torch.manual_seed(3)
    net = char_gpt(vocab_size=5, block=8, n_layer=1, n_head=1, d=4).eval()
    cache = net.new_cache(2)
    assert isinstance(cache, KVCache) and cache.keys[0].shape == (2, 1, 8, 4)
    with torch.no_grad():
        net.step(torch.zeros(2, 6, dtype=torch.long), cache)
        assert cache.get_seq_length() == 6
        with pytest.raises(HwlabError, match="block = 8"):
            net.step(torch.zeros(2, 3, dtype=torch.long), cache)
    with pytest.raises(HwlabError, match="prompt length \\+ steps - 1 <= block = 8"):
        net.generate(torch.zeros(1, 4, dtype=torch.long), 6)
    with pytest.raises(HwlabError, match="token ids"):
        net.generate(torch.zeros(1, 4), 2)
    with pytest.raises(HwlabError, match="multiple of n_head = 3"):
        char_gpt(d=8, n_head=3)


def test_lm_entry_trains_once_and_keys_on_the_text(tmp_path, monkeypatch):
    from hwlab.zoo import LMRecipe, lm_entry, lm_loss

    monkeypatch.setenv("HWLAB_HOME", str(tmp_path))
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. " * 200)
    tiny = LMRecipe(iters=30, batch_size=8, n_layer=1, n_head=1, d=16, block=16, warmup=5)
    a = lm_entry("char-gpt", f"text:{text}", seed=0, recipe=tiny)
    b = lm_entry("char-gpt", f"text:{text}", seed=0, recipe=tiny)  # loaded, not retrained
    assert a.path == b.path and a.meta == b.meta and a.val_loss < math.log(a.model.wte.num_embeddings)
    from hwlab.data import load

    val = load(f"text:{text}", "val", block=16)
    assert a.meta["text_sha256"] == val.sha256
    assert lm_loss(b.model, val) == pytest.approx(a.val_loss, abs=1e-9)
    text.write_text("the dog sat on the log. " * 200)  # another text: another entry
    assert lm_entry("char-gpt", f"text:{text}", seed=0, recipe=tiny).path != a.path
    assert tiny.lr_at(0) < tiny.lr_at(4) and tiny.lr_at(30) == pytest.approx(tiny.min_lr)
    with pytest.raises(HwlabError, match="pydoc or 'text:FILE'"):
        lm_entry("char-gpt", "mnist5k")
