"""FT-ClipAct's threshold search (Hoang et al., DATE 2020), as reimplemented in the ProAct authors'
reliable-ReLU toolbox, with fault-free prefix activations cached.

Per activation site, in forward order:

1. Candidates: ``candidates`` thresholds evenly spaced over ``[lo, hi]``, ends included; the first
   round searches ``[0, profiled max]``.
2. Score of a candidate: the area under the accuracy-vs-fault-rate curve with faults ONLY in the
   weight layers that feed the site (``feeding_layers``: its producers by data flow, e.g. the conv
   before it, or both branches' convs of a residual add; weights only, biases and BatchNorm
   excluded as in the paper's simulator). Accuracy is in percent,
   averaged over ``maps`` fault maps per rate, and the rates are placed at evenly spaced positions
   ``1/k, 2/k, ..., 1`` (the toolbox's axis for its five rates: 0.2 .. 1.0), integrated with the
   trapezoid rule. Unit: percent x unit axis; the maximum is ``100 (k - 1) / k`` (80 for 5 rates).
3. Narrowing: the next interval is ``[T[b-1], T[b+1]]`` around the best candidate ``b`` (clamped
   at the ends). After at least ``min_rounds`` rounds the search stops early when neighbouring
   candidate scores differ by at most ``tolerance`` (0.2 in the unit above); at most ``rounds``.

State while tuning (as in the toolbox): every site starts clipped at its profiled maximum; sites
already tuned keep their chosen threshold while later ones are tuned; after each site the later
sites are re-profiled on the updated model and restart from their new maxima.

Differences from the toolbox, on purpose: every candidate of a site is scored on the SAME fault maps
(common random numbers: seeds from ``(seed, site, rate, map)``), so a threshold that reappears in
the next round is not re-evaluated and differences between candidates are not sampling noise;
ties go to the LARGER threshold (it changes clean behaviour least; the toolbox takes the first);
the result is the best candidate of ALL rounds, not of the last one (with 4 evenly spaced
candidates on ``[T[b-1], T[b+1]]`` the previous best is not re-scored, and the toolbox's last-round
pick can be worse than an earlier candidate);
faults go only into the site's own producers (the toolbox's code injects into all layers while
scoring one site; the paper's analysis and this project's notes inject per layer); a site is an
activation CALL (a module called twice is two sites with two thresholds), on any model
``hwlab.graph`` can trace.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from torch import nn

from faultlab._campaign_data import CACHE_BYTES, CampaignData
from faultlab._evaluator import Evaluator
from faultlab._faults import BitFlip
from faultlab.clipact._modules import MODES, clip_graph, clip_sites, require_sites, trace
from faultlab.clipact._profile import profile_graph
from hwlab.data import as_xy, iter_batches
from hwlab.errors import (
    check,
    check_choice,
    check_int,
    check_number,
    check_positive_int,
    fail,
    is_number,
)
from hwlab.studies import derive_seed

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchConfig:
    """Options of the threshold search; the defaults are the paper's / toolbox's values."""

    rates: tuple[float, ...] = (1e-7, 1e-6, 3e-6, 1e-5, 3e-5)  # toolbox's AUC rate points
    maps: int = 20  # fault maps per rate point (project notes: about 20; the toolbox uses 5)
    rounds: int = 4  # most narrowing rounds (toolbox N = 4)
    min_rounds: int = 3  # rounds before the early stop may trigger (toolbox M = 3)
    candidates: int = 4  # evenly spaced thresholds per round, ends included (toolbox: 4)
    tolerance: float = 0.2  # early stop when neighbouring scores differ by <= this (toolbox 0.2)
    eval_size: int = 500  # samples of `data` scored per fault map (a modest subset, for speed)
    batch_size: int = 500  # evaluation batch size
    seed: int = 0  # fault-map seeds derive from (seed, site, rate, map)

    def __post_init__(self):
        caller = "protect"
        rates = self.rates
        ok = isinstance(rates, (tuple, list)) and len(rates) >= 2 and all(
            is_number(r, 0, 1) for r in rates)
        check(ok and list(rates) == sorted(set(rates)), "rates", caller,
              "at least two distinct increasing per-bit rates in [0, 1]", rates)
        object.__setattr__(self, "rates", tuple(float(r) for r in rates))
        for name in ("maps", "rounds", "eval_size", "batch_size"):
            check_positive_int(getattr(self, name), name, caller)
        check_positive_int(self.candidates, "candidates", caller, minimum=3)
        check_positive_int(self.min_rounds, "min_rounds", caller)
        check_number(self.tolerance, "tolerance", caller, 0)
        object.__setattr__(self, "seed", check_int(self.seed, "seed", caller, 0))


@dataclass
class ThresholdSearch:
    """Outcome of :func:`search_thresholds`: the chosen thresholds and every scored candidate."""

    thresholds: dict[str, float]  # site -> chosen threshold, forward order
    profiled: dict[str, float]  # site -> profiled maximum of the unprotected model
    feeders: dict[str, list[str]]  # site -> weight layers whose faults scored it (producers)
    mode: str
    config: SearchConfig
    history: list[dict] = field(default_factory=list)  # site, round, threshold, score, clean
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready summary (stored with a run)."""
        return {"mode": self.mode, "thresholds": self.thresholds, "profiled": self.profiled,
                "feeders": self.feeders, "config": asdict(self.config),
                "seconds": round(self.seconds, 3)}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.history)


def _bitflip(rate: float):
    return BitFlip(rate=rate)


def search_thresholds(model: nn.Module, data, mode: str = "zero", fault_model=None,
                      progress=None, leaf_modules=(), **options) -> ThresholdSearch:
    """Choose one clipping threshold per activation site by FT-ClipAct's interval search.

    ``data``: a :class:`hwlab.data.Split`, an ``(x, y)`` pair, a DataLoader or an iterable of
    ``(x, y)`` batches of training samples; all of it is profiled (read into memory once: it is
    profiled again after each site, so pass a subset), its first ``eval_size`` (stratified for a
    Split) samples score the candidates (a shuffling DataLoader makes the search irreproducible). ``fault_model``:
    a callable ``rate -> fault model`` (default ``faultlab.BitFlip(rate=rate)``, the paper's
    per-bit fault rate). ``options``: fields of :class:`SearchConfig` (``rates``, ``maps``,
    ``rounds``, ``min_rounds``, ``candidates``, ``tolerance``, ``eval_size``, ``batch_size``,
    ``seed``). ``progress(done, total, message)`` is called after each site. ``leaf_modules``:
    as in ``hwlab.graph.trace``. Reproducible: the same seed and inputs give the same thresholds.
    The input model is not modified.
    """
    check(isinstance(model, nn.Module), "model", "protect", "a torch.nn.Module",
          type(model).__name__)
    check_choice(mode, MODES, "mode", "protect")
    names = {f.name for f in fields(SearchConfig)}
    for key in options:
        if key not in names:
            raise fail("options", "protect", f"fields of SearchConfig ({', '.join(sorted(names))})",
                       key)
    config = SearchConfig(**options)
    check(fault_model is None or callable(fault_model), "fault_model", "protect",
          "None or a callable rate -> fault model", fault_model)
    x_prof, _ = as_xy(data, "protect")
    x_eval, y_eval = as_xy(data, "protect", limit=config.eval_size)
    return _search(model, x_prof, x_eval, y_eval, mode, fault_model or _bitflip, config, progress,
                   leaf_modules)


def protect(model: nn.Module, data, mode: str = "zero", fault_model=None, progress=None,
            leaf_modules=(), **options) -> nn.Module:
    """FT-ClipAct: a NEW model whose unbounded activation sites are clipped at searched thresholds.

    ``mode="zero"`` (the paper's) sets activations above the threshold to 0, ``"cap"`` caps them.
    Arguments as in :func:`search_thresholds`; read the chosen thresholds back with
    :func:`faultlab.clipact.thresholds`. The result is a ``GraphModule`` with the model's
    parameter names (see :func:`faultlab.clipact.clip`); the input model is untouched.
    """
    result = search_thresholds(model, data, mode=mode, fault_model=fault_model,
                               progress=progress, leaf_modules=leaf_modules, **options)
    return clip_graph(model, trace(model, "protect", leaf_modules), result.thresholds, mode,
                      "protect", leaf_modules)


def _search(model, x_prof, x_eval, y_eval, mode, make_fault, config, progress,
            leaf_modules) -> ThresholdSearch:
    t0 = time.perf_counter()
    bs = config.batch_size

    def batches():
        return iter_batches((x_prof, torch.zeros(len(x_prof), dtype=torch.long)), bs, "protect")

    graph = trace(model, "protect", leaf_modules)
    sites = clip_sites(graph)
    require_sites(graph, sites, "protect")
    profiled = profile_graph(graph, sites, batches())
    feeders = {name: list(graph.producers[s.name]) for name, s in sites.items()}
    # private working copy, every site clipped at its maximum; thresholds change in place
    work = clip_graph(model, graph, profiled, mode, "protect", leaf_modules).eval()
    wgraph = trace(work, "protect")
    wsites = clip_sites(wgraph)  # the same names (each ClippedReLU remembers its site)
    modules = {name: work.get_submodule(wsites[name].module) for name in sites}
    # the campaign engine's evaluator: the fault-free activation at the cut before a site's
    # producers is cached and only the rest of the network runs per fault map
    evaluator = Evaluator(work, CampaignData((x_eval, y_eval), bs, "protect", work), None, (),
                          True, CACHE_BYTES, graph=wgraph)
    chosen: dict[str, float] = {}
    history: list[dict] = []
    for n_done, site in enumerate(sites):
        module, hi = modules[site], float(modules[site].threshold)
        if not feeders[site] or hi <= 0:  # nothing to fault before it, or a dead activation
            chosen[site] = hi
        else:
            # the sites tuned so far changed what a cached prefix holds: refill at this cut
            evaluator.clear_activations()
            start = evaluator.cut_before([*feeders[site], wsites[site].module], "protect")
            evaluator.warm([start])
            chosen[site] = _tune_site(work, module, site, feeders[site], hi, evaluator, start,
                                      make_fault, config, history)
            logger.info("clipact: %s (faults in %s) threshold %.4g of max %.4g", site,
                        ", ".join(feeders[site]), chosen[site], profiled[site])
        module.set_threshold(chosen[site])
        later = list(sites)[n_done + 1:]
        if later:  # the toolbox re-profiles after each site: later maxima may have moved
            again = profile_graph(wgraph, wsites, batches())
            for s in later:
                modules[s].set_threshold(again[s])
        if progress is not None:
            progress(n_done + 1, len(sites), f"clipact {site}: threshold {chosen[site]:.4g}")
    return ThresholdSearch(chosen, profiled, feeders, mode, config, history,
                           time.perf_counter() - t0)


def _tune_site(work, module, site, feeders, hi, evaluator, start, make_fault, config,
               history) -> float:
    """Interval search for one site; appends every scored candidate to ``history``."""
    from faultlab import inject, sample_faults  # late-bound public API (tests spy on it)

    k = len(config.rates)
    axis = np.arange(1, k + 1) / k  # toolbox's rate axis: 0.2, 0.4, ..., 1.0 for five rates
    fmaps = [[sample_faults(work, make_fault(rate), seed=derive_seed(config.seed, f"{site}|{r}|{m}"),
                            layers=feeders) for m in range(config.maps)]
             for r, rate in enumerate(config.rates)]
    scores: dict[float, tuple[float, float]] = {}  # threshold -> (AUC, clean accuracy)
    y = torch.cat([labels for _, labels in evaluator.data.memory])  # N

    def accuracy() -> float:  # top-1 in [0, 1] (NaN logits count as whatever argmax picks)
        pred = evaluator.logits(start).argmax(dim=1)  # N
        return float((pred == y).float().mean())

    def score(t: float) -> tuple[float, float]:
        if t not in scores:
            module.set_threshold(t)
            clean = accuracy()
            acc = np.empty((k, config.maps))  # accuracy per rate and fault map
            for r in range(k):
                for m, fm in enumerate(fmaps[r]):
                    if len(fm) == 0:  # an empty map changes nothing: the clean accuracy
                        acc[r, m] = clean
                        continue
                    with inject(work, fm):
                        acc[r, m] = accuracy()
            scores[t] = (float(np.trapezoid(100.0 * acc.mean(axis=1), axis)), clean)
        return scores[t]

    lo = 0.0
    for rnd in range(config.rounds):
        # thresholds as the float32 buffer holds them, so the reported one is the one applied
        cands = np.linspace(lo, hi, config.candidates).astype(np.float32).tolist()
        aucs = np.array([score(t)[0] for t in cands])
        history.extend({"site": site, "feeders": ", ".join(feeders), "round": rnd, "threshold": t,
                        "score": scores[t][0], "clean_accuracy": scores[t][1]} for t in cands)
        b = int(len(aucs) - 1 - np.argmax(aucs[::-1]))  # ties go to the larger threshold
        lo, hi = cands[max(b - 1, 0)], cands[min(b + 1, len(cands) - 1)]
        if rnd + 1 >= config.min_rounds and np.abs(np.diff(aucs)).max() <= config.tolerance:
            break
    # The best of every candidate scored (same fault maps for all, so scores compare across
    # rounds); with 4 candidates a round's best is not itself a candidate of the next round.
    return max(scores, key=lambda t: (scores[t][0], t))
