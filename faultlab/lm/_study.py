"""The ``faultlab.lm`` study: a character-level GPT under faults, per fault site and stage.

char-gpt is trained once with nanoGPT's CPU recipe (:func:`hwlab.zoo.lm_entry`, cached) on the
text (``pydoc`` by default). Each trial measures ``windows`` validation windows of ``block``
characters (see :mod:`faultlab.lm._measure`): teacher-forced through the KV cache (the first
``prompt`` characters are the prefill pass, the rest one decode step each) and free-running
greedy from the same prompts, both against the fault-free model. Sites (``variant``):

* ``weights``: BitFlip at the per-bit rate over every float32 weight (norms excluded, as in
  ``faultlab.campaign``), for both passes (``fl.inject``, restored bit-exactly);
* ``kv-prefill`` / ``kv-decode``: flips at the rate per stored K / V bit of the prompt's
  positions or of the generated ones (:func:`faultlab.lm.draw_kv_faults`, :func:`kv_faults`);
* ``act-prefill`` / ``act-decode``: transient flips at the rate per bit of the attention
  logits, attention probabilities and GELU outputs of every layer, in the prefill pass (call 0)
  or at decode step ``act_step`` (:func:`faultlab.lm.act_faults`).

Rows: one fault-free row (``fault_model`` none) and one per (site, rate, trial) with accuracy
(next-character top-1), sdc (share of positions whose top-1 changes), critical_sdc, loss
(nats/char) and in ``extra``: bpc, first_divergence (teacher-forced), nonfinite, gen_exact_match,
gen_first_divergence, gen_diverged_by, gen_nonfinite, n_faults and text_sha256 (the corpus hash:
two CPython releases' pydoc never mix). With ``pvf_trials`` > 0 the component x bit-field PVF
table is added (:mod:`faultlab.lm._pvf`, ``variant`` = ``pvf``).
"""

from __future__ import annotations

import time
import types
from dataclasses import dataclass
from functools import lru_cache

from hwlab import figures
from hwlab.studies import Study, StudyConfig, derive_seed, param, run_items

__all__ = ["LM_STUDY", "SITES", "LMConfig", "LMStudy"]

SITES = ("weights", "kv-prefill", "kv-decode", "act-prefill", "act-decode")


@dataclass(frozen=True)
class LMConfig(StudyConfig):
    dataset: str = param(  # the stdlib's own prose: offline, hashed (hwlab.data)
        "pydoc", "text: pydoc or 'text:FILE' (UTF-8)", kind="dataset")
    iters: int = param(  # nanoGPT's CPU recipe: val loss 1.48 nats/char on pydoc (measured)
        2000, "training iterations of char-gpt (trained once, cached in the zoo)",
        range=(1, None))
    n_layer: int = param(4, "transformer blocks (nanoGPT CPU recipe: 4)", range=(1, None))
    d: int = param(128, "model width (nanoGPT CPU recipe: 128; 4 heads)", range=(4, None))
    sites: tuple[str, ...] = param(  # every site kind and stage of the issue
        SITES, "fault sites and stages", choices=SITES, nonempty=True)
    rates: tuple[float, ...] = param(  # from nothing to frequent on a 0.8M-weight model
        (1e-7, 1e-6, 1e-5, 1e-4), "per-bit fault rates", range=(0, 1), inclusive=(False, True),
        nonempty=True)
    trials: int = param(10, "fault draws per (site, rate)", range=(1, None))
    windows: int = param(  # 16 prompts, the generation setting
        16, "validation windows (prompts) per trial", range=(1, None))
    prompt: int = param(16, "prompt characters (the prefill stage)", range=(1, 63))
    act_step: int = param(  # LLMFI: the first generated token is the most vulnerable stage
        1, "decode step the act-decode faults hit", range=(1, 47))
    pvf_trials: int = param(  # 0 keeps the sweep short; docs use 100
        0, "single-bit flips per component x bit-field cell of the PVF table (0: none)",
        range=(0, None))
    seed: int = param(0, "training seed and fault draws", range=(0, None))


@dataclass(frozen=True)
class _Item:
    setup: tuple  # (dataset, seed, iters, n_layer, d, windows, prompt)
    site: str
    rate: float
    trial: int
    seed: int  # this trial's derived seed
    act_step: int


@lru_cache(maxsize=4)
def _setup(dataset: str, seed: int, iters: int, n_layer: int, d: int, windows: int, prompt: int):
    """The trained model, the windows and the fault-free pass (once per process)."""
    from faultlab.lm._measure import Clean, measure
    from hwlab.data import load
    from hwlab.zoo import LMRecipe, lm_entry

    recipe = LMRecipe(iters=iters, n_layer=n_layer, d=d, warmup=min(100, iters // 10))
    entry = lm_entry("char-gpt", dataset, seed=seed, recipe=recipe)
    val = load(dataset, "val", block=recipe.block)
    val = val.subset(windows) if windows < len(val) else val
    model = entry.model.eval()
    values, logits, tokens = measure(model, val.x, val.y, prompt)
    return model, val, Clean(logits, tokens, values), entry


def _context(model, item: _Item, prompt: int, box: dict):
    """A factory of the item's fault context (entered once per pass); ``box["n"]``: the number
    of faults (weights: set on entry; activation faults are drawn per output: -1)."""
    from contextlib import contextmanager

    import faultlab as fl
    from faultlab import lm

    site, rate, seed = item.site, item.rate, item.seed
    if site == "weights":
        @contextmanager
        def weights():
            with fl.inject(model, fl.BitFlip(rate=rate), seed=seed) as fmap:  # same map per pass
                box["n"] = len(fmap)
                yield

        return weights
    if site.startswith("kv-"):
        span = (0, prompt) if site == "kv-prefill" else (prompt, model.block)
        faults = lm.draw_kv_faults(rate, model, batch=_setup_windows(item), seed=seed,
                                   positions=span)
        box["n"] = len(faults)
        return lambda: lm.kv_faults(model, faults)
    step = 0 if site == "act-prefill" else item.act_step
    faults = [lm.ActFault(s, step, rate=rate, seed=derive_seed(seed, s))
              for s in lm.lm_sites(model)]
    box["n"] = -1
    return lambda: lm.act_faults(model, faults)


def _setup_windows(item: _Item) -> int:
    return len(_setup(*item.setup)[1])


def _row(item: _Item) -> dict:
    from faultlab.lm._measure import measure

    model, val, clean, entry = _setup(*item.setup)
    prompt = item.setup[-1]
    extra = {"text_sha256": val.sha256, "val_loss": entry.val_loss}
    if item.site == "none":
        values, n, ms = dict(clean.values), 0, 0.0
    else:
        box = {}
        ctx = _context(model, item, prompt, box)
        t0 = time.perf_counter()
        values, _, _ = measure(model, val.x, val.y, prompt, ctx, clean)
        ms, n = 1e3 * (time.perf_counter() - t0), box["n"]
    for k in ("bpc", "first_divergence", "nonfinite", "gen_exact_match", "gen_first_divergence",
              "gen_diverged_by", "gen_nonfinite"):
        extra[k] = values.pop(k)
    extra.update(n_faults=n, n_samples=len(val), stage=_stage(item.site))
    return {"variant": "fault-free" if item.site == "none" else item.site,
            "fault_model": "none" if item.site == "none" else "bitflip",
            "fault_rate": 0.0 if item.site == "none" else item.rate, "trial": item.trial,
            "seed": item.seed, "latency_ms": ms, **values, "extra": extra}


def _stage(site: str) -> str:
    return site.split("-", 1)[1] if "-" in site else ("both" if site == "weights" else "none")


class LMStudy(Study):
    name = "faultlab.lm"
    module = "faultlab"
    description = ("char-gpt (nanoGPT on pydoc) under faults: weights, KV cache and attention / "
                   "MLP activations, prefill vs decode; token metrics and generation divergence.")
    Config = LMConfig
    figure = figures.lm_sweep  # SDC vs BER, a series per site and stage
    figure_title = "share of next-character predictions changed (SDC) vs BER per site and stage"
    latency_kind = "trial_ms"  # teacher-forced + generation pass of one trial
    page = "lm"
    quick_seconds = 20  # measured once: 19.6 s (2 cores under load, char-gpt 2 x 64 trained)
    quick = types.MappingProxyType(
        {"iters": 200, "n_layer": 2, "d": 64, "rates": (1e-5, 1e-3), "trials": 2,
         "windows": 8})

    def run(self, config: LMConfig, store, progress=None, executor=None) -> str:
        from hwlab.errors import check

        c = config
        check(c.act_step < 64 - c.prompt or "act-decode" not in c.sites, "act_step",
              f"study {self.name}", f"a decode step below 64 - prompt = {64 - c.prompt} (the "
              "generation's last decode step)", c.act_step)
        setup = (c.dataset, c.seed, c.iters, c.n_layer, c.d, c.windows, c.prompt)
        items = {"clean": _Item(setup, "none", 0.0, 0, c.seed, c.act_step)}
        for site in c.sites:
            for rate in c.rates:
                for t in range(c.trials):
                    key = f"{site}|{rate!r}|trial={t}"
                    items[key] = _Item(setup, site, rate, t, derive_seed(c.seed, key),
                                       c.act_step)
        defaults = {"module": "faultlab", "method": "lm", "model": "char-gpt",
                    "dataset": c.dataset}
        with self.open_run(store, config) as run_id:
            run_items(store, run_id, items, _row, executor, progress, defaults)
            if c.pvf_trials:
                from faultlab.lm._pvf import pvf_rows

                model, val, _, _ = _setup(*setup)
                rows = pvf_rows(model, val, c.prompt, c.pvf_trials, c.seed)
                run_items(store, run_id, rows, _identity, None, progress, defaults)
        return run_id


def _identity(row: dict) -> dict:
    return row


LM_STUDY = LMStudy()
