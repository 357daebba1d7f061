"""KV-cache faults: bit flips in stored K / V entries, persistent for every later reader.

>>> f = KVFault(layer=0, pos=20, head=1, elem=3, bit=30)     # exact: one bit of one entry
>>> faults = draw_kv_faults(1e-6, net, batch=16, seed=0)       # rate-based: a replayable list
>>> with kv_faults(net, faults):                               # caches made in the block
...     tokens, logits = net.generate(prompts, 32)

Semantics (KV-cache study, arXiv 2604.17249): the entry of (layer, position) is corrupted the
moment it is stored (in the prefill pass for prompt positions, at the decode step that processes
the position otherwise) and every later read sees the corrupted word: the query of the same step,
every later step, until the cache is dropped. Nothing before the position changes.

``kv_faults(target, faults)`` accepts a ``hwlab.models.CharGPT`` (every cache ``new_cache``
makes inside the block is faulted), or any cache object with Hugging Face's
``update(key_states, value_states, layer_idx, cache_kwargs=None)`` (``hwlab.models.KVCache``,
``transformers.DynamicCache``): its ``update`` is wrapped for the block. At exit the wrapper is
removed and every corrupted word still held by a cache is written back to its stored value, so
every decoding after the block is bit-identical to fault-free. (Entries that later layers of a
kept cache computed from a faulty read keep what the faulty pass wrote: that is the fault's
propagation, not its storage; drop the cache to forget it.)
"""

from __future__ import annotations

from bisect import bisect_left
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from hwlab.errors import check, check_choice, check_int, check_rate, fail

__all__ = ["KVFault", "draw_kv_faults", "kv_faults"]

_INT = {4: torch.int32, 2: torch.int16}  # the integer view of a stored float word, by size


@dataclass(frozen=True)
class KVFault:
    """One bit flip of one stored K or V word (``batch=None``: in every sequence of the batch,
    like a shared prefix-cache block)."""

    layer: int
    pos: int  # the token position whose entry is corrupted
    head: int = 0
    elem: int = 0  # index within the head dimension
    bit: int = 30  # bit of the stored word (fp32: 0-22 mantissa, 23-30 exponent, 31 sign)
    which: str = "k"  # "k" or "v"
    batch: int | None = None  # the sequence; None: every sequence

    def __post_init__(self):
        c = "KVFault"
        for name in ("layer", "pos", "head", "elem", "bit"):
            check_int(getattr(self, name), name, c, 0)
        check_choice(self.which, ("k", "v"), "which", c)
        check(self.batch is None or isinstance(self.batch, int) and self.batch >= 0, "batch", c,
              "None or an integer >= 0", self.batch)


def draw_kv_faults(rate: float, model, batch: int, seed: int = 0, bits: int = 32,
                   positions: tuple[int, int] | None = None) -> list[KVFault]:
    """Independent bit flips at ``rate`` per stored bit of every K / V word of ``model``'s cache
    (``n_layer x 2 x batch x n_head x block x head_dim`` words of ``bits``), drawn once from
    ``seed``: the list replays exactly. ``positions=(lo, hi)`` limits the positions (a stage:
    the prompt's for prefill, the generated ones for decode)."""
    rate = check_rate(rate, "rate", "draw_kv_faults")
    batch = check_int(batch, "batch", "draw_kv_faults", 1)
    seed = check_int(seed, "seed", "draw_kv_faults")
    shape = _cache_shape(model)
    lo, hi = (0, shape[3]) if positions is None else positions
    check(0 <= lo < hi <= shape[3], "positions", "draw_kv_faults",
          f"(lo, hi) with 0 <= lo < hi <= block = {shape[3]}", positions)
    n_layer, n_head, _, hd = shape[0], shape[2], shape[3], shape[4]
    dims = (n_layer, 2, batch, n_head, hi - lo, hd, bits)
    total = 1
    for d in dims:
        total *= d
    g = torch.Generator().manual_seed(seed)
    count = int(torch.binomial(torch.tensor(float(total)), torch.tensor(rate), generator=g))
    flat = torch.randint(total, (count,), generator=g) if count else torch.zeros(0, dtype=torch.long)
    out = []
    for i in torch.unique(flat).tolist():  # a bit drawn twice is one flip (p ~ rate^2)
        idx = []
        for d in reversed(dims):
            idx.append(i % d)
            i //= d
        bit, e, p, h, b, w, layer = idx
        out.append(KVFault(layer, lo + p, h, e, bit, "kv"[w], b))
    return out


def _cache_shape(model) -> tuple[int, int, int, int, int]:
    """(n_layer, batch placeholder, n_head, block, head_dim) of a CharGPT or a HF config."""
    if hasattr(model, "new_cache") and hasattr(model, "n_layer"):
        return model.n_layer, 1, model.n_head, model.block, model.d // model.n_head
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "num_hidden_layers"):
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cfg.num_hidden_layers, 1, heads, cfg.max_position_embeddings, hd
    raise fail("model", "draw_kv_faults", "a hwlab CharGPT or a Hugging Face model with a config",
               type(model).__name__)


class _Injector:
    """Wraps caches' ``update``: corrupts each faulty entry when it is stored, restores at exit."""

    def __init__(self, faults):
        self.faults = list(faults)
        self.caches = []  # (cache, {(layer, which): last stored tensor}, applied records)
        # (layer, which) -> (sorted positions, faults in that order): an update finds the
        # faults of its new positions by bisection, not by scanning every fault
        buckets: dict = {}
        for f in self.faults:
            buckets.setdefault((f.layer, f.which), []).append(f)
        self.buckets = {k: ([f.pos for f in v], v) for k, v in
                        ((k, sorted(v, key=lambda f: f.pos)) for k, v in buckets.items())}

    def wrap(self, cache):
        check(callable(getattr(cache, "update", None)), "target", "kv_faults",
              "a CharGPT or a cache with update(k, v, layer_idx)", type(cache).__name__)
        orig, last, applied = cache.update, {}, []
        self.caches.append((cache, last, applied))
        injector = self

        def update(k, v, layer_idx, *args, **kw):
            start = _seen(cache, layer_idx)
            keys, values = orig(k, v, layer_idx, *args, **kw)
            stop = keys.shape[2]
            for which, t in (("k", keys), ("v", values)):
                last[(layer_idx, which)] = t
                injector._apply(t, layer_idx, which, start, stop, applied)
            return keys, values

        cache.update = update
        return cache

    def _apply(self, t, layer, which, start, stop, applied):
        bucket = self.buckets.get((layer, which))
        if bucket is None:
            return
        positions, faults = bucket
        hits = faults[bisect_left(positions, start):bisect_left(positions, stop)]
        if not hits:
            return
        words = t.view(_INT[t.element_size()])  # the stored bits, in the cache's own storage
        nbits = 8 * t.element_size()
        for f in hits:  # a handful per stored position: plain views, no index tensors
            check(f.head < t.shape[1] and f.elem < t.shape[3] and
                  (f.batch is None or f.batch < t.shape[0]), "faults", "kv_faults",
                  f"entries inside the cache (B x H x S x hd = {tuple(t.shape)})", f)
            check(f.bit < nbits, "faults", "kv_faults", f"bits below {nbits} for a {t.dtype} "
                  "cache", f.bit)
            mask = 1 << f.bit
            mask = mask - (1 << nbits) if mask >= 1 << (nbits - 1) else mask  # two's complement
            idx = (slice(None) if f.batch is None else f.batch, f.head, f.pos, f.elem)
            applied.append((layer, which, idx, words[idx].clone()))
            words[idx] ^= mask  # the same bit twice flips back, as in memory

    def restore(self):
        for cache, last, applied in reversed(self.caches):
            del cache.update  # the class's method again
            for layer, which, idx, old in reversed(applied):
                t = last.get((layer, which))
                if t is not None and idx[2] < t.shape[2]:
                    t.view(_INT[t.element_size()])[idx] = old


def _seen(cache, layer: int) -> int:
    if hasattr(cache, "seen"):
        return cache.seen[layer]
    try:
        return int(cache.get_seq_length(layer))
    except (IndexError, KeyError):
        return 0


@contextmanager
def kv_faults(target, faults):
    """Corrupt KV-cache entries while the block runs (see the module docstring); yields the
    list of faults. ``target``: a CharGPT (caches it makes) or a cache object."""
    faults = list(faults)
    check(all(isinstance(f, KVFault) for f in faults), "faults", "kv_faults",
          "a list of KVFault", faults[:3])
    inj = _Injector(faults)
    patched = None
    if hasattr(target, "n_layer") and hasattr(target, "block"):  # a CharGPT: check up front
        bad = [f for f in faults if f.layer >= target.n_layer or f.pos >= target.block
               or f.head >= target.n_head or f.elem >= target.d // target.n_head]
        check(not bad, "faults", "kv_faults", f"entries of the model's cache (layer < "
              f"{target.n_layer}, pos < {target.block}, head < {target.n_head}, elem < "
              f"{target.d // target.n_head})", bad[:3])
    if hasattr(target, "new_cache") and not hasattr(target, "update"):
        make = target.new_cache

        def new_cache(*a, **kw):
            return inj.wrap(make(*a, **kw))

        target.new_cache = patched = new_cache
    else:
        inj.wrap(target)
    try:
        yield faults
    finally:
        if patched is not None:
            del target.new_cache
        inj.restore()
