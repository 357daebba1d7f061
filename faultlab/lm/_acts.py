"""Transient activation faults at a chosen step: attention logits / probabilities, MLP activations.

>>> f = ActFault("blocks.3.attn.logits", step=5, index=(0, -1, 2), bit=30)
>>> with act_faults(net, [f]):           # the 6th call of that module (decode step 5) only
...     tokens, logits = net.generate(prompts, 32)

A site is any submodule of the model, named as in ``named_modules()``; its OUTPUT is faulted on
its ``step``-th call (0-based) in the block: with the KV cache, call 0 is the prefill pass over
the prompt and call s the s-th decode step (the stage follows from the step). In char-gpt the
sites are ``blocks.<l>.attn.logits`` (q k^T / sqrt(hd), masked, B x H x T x S),
``blocks.<l>.attn.probs`` (softmax output) and ``blocks.<l>.mlp.gelu`` (B x T x 4d); in a
Hugging Face model e.g. ``model.layers.<l>.mlp.act_fn`` (Llama) or ``transformer.h.<l>.mlp.act``
(GPT-2). ``index`` addresses one element of the output from the last dimensions (leading ones
omitted = every batch row and head); ``rate`` instead flips every bit of the output with that
probability (drawn from ``seed``, replayable). The fault is transient (a modified copy of that
one output), but a prefill fault changes the residual stream, hence the K / V of later layers
that the cache keeps. Removing the hooks restores the model exactly (no weight is touched).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from hwlab.errors import check, check_int, is_number

__all__ = ["ActFault", "act_faults", "lm_sites"]

_INT = {4: torch.int32, 2: torch.int16}


@dataclass(frozen=True)
class ActFault:
    """A bit flip in the output of module ``site`` on its ``step``-th call."""

    site: str
    step: int = 0
    index: tuple[int, ...] = ()  # from the last dims; () with rate
    bit: int = 30
    rate: float | None = None  # per-bit flip probability over the whole output instead
    seed: int = 0

    def __post_init__(self):
        c = "ActFault"
        check(isinstance(self.site, str) and self.site != "", "site", c, "a module name",
              self.site)
        check_int(self.step, "step", c, 0)
        check_int(self.bit, "bit", c, 0, 31)
        check(isinstance(self.index, tuple) and all(isinstance(i, int) for i in self.index),
              "index", c, "a tuple of ints", self.index)
        check(self.rate is None or is_number(self.rate, 0, 1), "rate", c,
              "None or a probability in [0, 1]", self.rate)
        check(self.rate is not None or len(self.index) > 0, "index", c,
              "a non-empty index (or give rate)", self.index)


def lm_sites(model: torch.nn.Module) -> list[str]:
    """Module names of the activation sites of a language model: char-gpt's attention logits,
    probabilities and GELU outputs, or the MLP activation modules of a Hugging Face model."""
    ends = (".attn.logits", ".attn.probs", ".mlp.gelu", ".mlp.act_fn", ".mlp.act")
    return [n for n, _ in model.named_modules() if n.endswith(ends)]


def _flip(out: torch.Tensor, faults, counter: int) -> torch.Tensor:
    out = out.clone()  # transient: the module's own result (maybe saved elsewhere) is kept
    words = out.view(_INT[out.element_size()])
    nbits = 8 * out.element_size()
    for f in faults:
        if f.rate is not None:  # n ~ Binomial(bits, rate) distinct-or-not bits, drawn at once
            g = torch.Generator().manual_seed((f.seed * 1_000_003 + counter) % 2**63)
            total = out.numel() * nbits
            n = int(torch.binomial(torch.tensor(float(total)), torch.tensor(float(f.rate)),
                                   generator=g))
            if n:
                pair = torch.unique(torch.randint(total, (n,), generator=g))
                word, bit = pair // nbits, pair % nbits
                mask = torch.zeros(out.numel(), dtype=torch.int64).index_add_(
                    0, word, torch.bitwise_left_shift(torch.ones_like(bit), bit))
                mask = torch.where(mask >= 2 ** (nbits - 1), mask - 2 ** nbits, mask)
                words ^= mask.to(words.dtype).view(out.shape)
            continue
        dims = out.shape[out.dim() - len(f.index):] if len(f.index) <= out.dim() else ()
        ok = len(dims) == len(f.index) and all(-d <= i < d for i, d in zip(f.index, dims))
        check(ok and f.bit < nbits, "faults", "act_faults", f"an index into the last dims of "
              f"{tuple(out.shape)} (output of {f.site}) and a bit below {nbits}", f)
        idx = (Ellipsis, *f.index)
        m = 1 << f.bit
        m = m - 2 ** nbits if m >= 2 ** (nbits - 1) else m
        words[idx] ^= torch.tensor(m, dtype=words.dtype)
    return out


@contextmanager
def act_faults(model: torch.nn.Module, faults):
    """Fault the outputs of the named sites on the given calls while the block runs."""
    faults = list(faults)
    check(all(isinstance(f, ActFault) for f in faults), "faults", "act_faults",
          "a list of ActFault", faults[:3])
    mods = dict(model.named_modules())
    handles, calls = [], {}
    try:
        for site in sorted({f.site for f in faults}):
            check(site in mods, "faults", "act_faults", "sites among the model's modules (e.g. "
                  f"{', '.join(lm_sites(model)[:3]) or 'see named_modules()'})", site)
            mine = [f for f in faults if f.site == site]
            calls[site] = 0

            def hook(module, args, out, site=site, mine=mine):
                k = calls[site]
                calls[site] = k + 1
                now = [f for f in mine if f.step == k]
                return _flip(out, now, k) if now and isinstance(out, torch.Tensor) else None

            handles.append(mods[site].register_forward_hook(hook))
        yield calls
    finally:
        for h in handles:
            h.remove()
