"""``char-gpt``: a character-level decoder-only transformer with a KV cache (nanoGPT's model).

>>> from hwlab.models import char_gpt, KVCache
>>> net = char_gpt(vocab_size=103)                 # 4 layers, 4 heads, d = 128, block 64: 808,960
>>> logits = net(idx)                                # idx B x T int64 -> B x T x vocab
>>> cache = net.new_cache(B); net.step(prompt, cache); net.step(next_ids, cache)
>>> tokens, step_logits = net.generate(prompt, 32)  # greedy, through the KV cache

Karpathy's nanoGPT ``model.py`` (MIT) with its CPU recipe's size: token + learned position
embeddings, ``n_layer`` pre-LayerNorm blocks [LN -> causal self-attention -> residual, LN -> MLP
(d -> 4d, GELU, 4d -> d) -> residual], final LN, an output head TIED to the token embedding (one
fault in ``wte.weight`` hits both), no biases, dropout 0, init N(0, 0.02) and
N(0, 0.02 / sqrt(2 n_layer)) for the two residual projections. Where we differ: q, k, v are three
``nn.Linear`` (nanoGPT fuses them in ``c_attn``; same parameters, but each projection is a
fault-site and int8 layer of its own) and attention is the explicit (manual) branch by default, so
the attention logits and probabilities pass through the ``nn.Identity`` sites ``attn.logits`` and
``attn.probs`` where forward hooks can fault them (``manual=False`` uses the fused
``F.scaled_dot_product_attention``; the two agree to 1e-5, tested).

The KV cache (:class:`KVCache`) stores K and V per layer (B x heads x block x head_dim) as they
are computed; ``update(k, v, layer)`` has the signature of Hugging Face's ``Cache.update``, so
one KV-fault injector serves both (:mod:`faultlab.lm`). Prompt + generated length must fit in
``block`` (learned absolute positions: beyond it the cache would be invalid).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hwlab.errors import check, check_bool, check_positive_int

__all__ = ["CharGPT", "KVCache", "char_gpt"]


class KVCache:
    """K and V of every layer: preallocated ``batch x heads x block x head_dim`` tensors."""

    def __init__(self, n_layer: int, batch: int, n_head: int, block: int, head_dim: int,
                 dtype=torch.float32, device=None):
        shape = (batch, n_head, block, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.seen = [0] * n_layer  # positions written per layer
        self.block = block

    def get_seq_length(self, layer: int = 0) -> int:
        return self.seen[layer]

    def update(self, k: torch.Tensor, v: torch.Tensor, layer: int, cache_kwargs=None):
        """Store ``k``, ``v`` (B x H x T x hd) after the positions seen so far; return the cached
        K, V of all positions (views of the stored tensors)."""
        start, t = self.seen[layer], k.shape[2]
        check(start + t <= self.block, "tokens", "KVCache.update",
              f"prompt + generated length <= block = {self.block}", start + t)
        self.keys[layer][:, :, start:start + t] = k
        self.values[layer][:, :, start:start + t] = v
        self.seen[layer] = start + t
        return self.keys[layer][:, :, :start + t], self.values[layer][:, :, :start + t]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate q, k, v, o projections and fault sites."""

    def __init__(self, d: int, n_head: int, block: int, manual: bool = True):
        super().__init__()
        self.n_head, self.manual = n_head, manual
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.logits = nn.Identity()  # site: q k^T / sqrt(hd), masked with -inf, B x H x T x S
        self.probs = nn.Identity()  # site: softmax of the logits, B x H x T x S
        self.register_buffer("mask", torch.ones(block, block, dtype=torch.bool).tril(),
                             persistent=False)

    def forward(self, x: torch.Tensor, cache=None, layer: int = 0) -> torch.Tensor:
        b, t, c = x.shape
        hd = c // self.n_head
        q = self.q(x).view(b, t, self.n_head, hd).transpose(1, 2)  # B x H x T x hd
        k = self.k(x).view(b, t, self.n_head, hd).transpose(1, 2)
        v = self.v(x).view(b, t, self.n_head, hd).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v, layer)  # B x H x S x hd, S = positions so far
        s = k.shape[2]
        # T x S: query i (position s - t + i) sees keys <= it (torch.narrow: fx-traceable)
        mask = torch.narrow(torch.narrow(self.mask, 0, s - t, t), 1, 0, s)
        if self.manual:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))  # B x H x T x S
            att = self.logits(att.masked_fill(~mask, float("-inf")))
            att = self.probs(F.softmax(att, dim=-1))
            y = att @ v  # B x H x T x hd
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o(y.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    """d -> 4d, GELU (the ``gelu`` module: an activation fault site), 4d -> d."""

    def __init__(self, d: int):
        super().__init__()
        self.up, self.gelu, self.down = nn.Linear(d, 4 * d, bias=False), nn.GELU(), \
            nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, d: int, n_head: int, block: int, manual: bool):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.attn, self.mlp = CausalSelfAttention(d, n_head, block, manual), MLP(d)

    def forward(self, x: torch.Tensor, cache=None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class CharGPT(nn.Module):
    """nanoGPT's decoder (see the module docstring); ``forward(idx, cache=None)`` -> logits."""

    def __init__(self, vocab_size: int, block: int, n_layer: int, n_head: int, d: int,
                 manual: bool = True):
        super().__init__()
        self.block, self.n_layer, self.n_head, self.d = block, n_layer, n_head, d
        self.wte, self.wpe = nn.Embedding(vocab_size, d), nn.Embedding(block, d)
        self.blocks = nn.ModuleList(Block(d, n_head, block, manual) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d, bias=False)
        self.lm_head = nn.Linear(d, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied (nanoGPT, Press & Wolf 2017)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("o.weight", "down.weight")) \
                    else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B x T x vocab) of every position of ``idx`` (B x T ids, T <= block)."""
        return self._run(idx, None, 0)

    def step(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits of the new positions ``idx`` (B x T) after those already in ``cache`` (which
        is updated): prefill with the prompt, then one token per decode step."""
        start, t = cache.get_seq_length(), idx.shape[1]
        check(start + t <= self.block, "tokens", "CharGPT.step", "cached + new positions <= "
              f"block = {self.block} (learned positions)", start + t)
        return self._run(idx, cache, start)

    def _run(self, idx, cache, start: int) -> torch.Tensor:
        pos = torch.arange(start, start + idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)  # B x T x d
        for i, blk in enumerate(self.blocks):
            x = blk(x, cache, i)
        return self.lm_head(self.ln_f(x))  # B x T x vocab

    def new_cache(self, batch: int) -> KVCache:
        """An empty :class:`KVCache` for ``batch`` sequences, on the model's device and dtype."""
        p = self.wte.weight
        return KVCache(self.n_layer, batch, self.n_head, self.block, self.d // self.n_head,
                       p.dtype, p.device)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, steps: int, use_cache: bool = True,
                 cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy continuation: ``(tokens B x steps, logits B x steps x vocab)``.

        With the cache: one prefill pass over the prompt, then one position per step (a given
        ``cache`` is used instead of a new one). Without it every step recomputes the whole
        context (nanoGPT's ``generate``, argmax instead of sampling). A NaN row's argmax is
        whatever torch returns: count non-finite logits before trusting the tokens.
        """
        check(isinstance(prompt, torch.Tensor) and prompt.dim() == 2 and not
              prompt.is_floating_point(), "prompt", "CharGPT.generate",
              "a B x P tensor of token ids", getattr(prompt, "shape", type(prompt).__name__))
        steps = check_positive_int(steps, "steps", "CharGPT.generate")
        use_cache = check_bool(use_cache, "use_cache", "CharGPT.generate")
        check(prompt.shape[1] + steps - 1 <= self.block, "steps", "CharGPT.generate",
              f"prompt length + steps - 1 <= block = {self.block} (prompt {prompt.shape[1]})",
              steps)
        if use_cache and cache is None:
            cache = self.new_cache(prompt.shape[0])
        out, logits, inp, ctx = [], [], prompt, prompt
        for _ in range(steps):
            step = (self.step(inp, cache) if use_cache else self(ctx))[:, -1]  # B x vocab
            nxt = step.argmax(dim=-1, keepdim=True)  # B x 1
            out.append(nxt)
            logits.append(step)
            inp, ctx = nxt, torch.cat([ctx, nxt], dim=1)
        return torch.cat(out, dim=1), torch.stack(logits, dim=1)


def char_gpt(vocab_size: int = 103, block: int = 64, n_layer: int = 4, n_head: int = 4,
             d: int = 128, manual: bool = True) -> CharGPT:
    """A fresh ``char-gpt`` (weights from the global torch RNG; seed it to reproduce).

    Defaults: nanoGPT's CPU recipe (4 layers, 4 heads, d = 128, block 64) and pydoc's 103
    characters: 808,960 parameters (the tied head counted once).
    """
    c = "char_gpt"
    vocab_size = check_positive_int(vocab_size, "vocab_size", c, minimum=2)
    block = check_positive_int(block, "block", c)
    n_layer = check_positive_int(n_layer, "n_layer", c)
    n_head = check_positive_int(n_head, "n_head", c)
    d = check_positive_int(d, "d", c)
    check(d % n_head == 0, "d", c, f"a multiple of n_head = {n_head}", d)
    return CharGPT(vocab_size, block, n_layer, n_head, d, check_bool(manual, "manual", c))
