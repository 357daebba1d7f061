"""Claims (#24): a weight-fault campaign trial on char-gpt costs about one clean evaluation, and
greedy decoding under KV-cache faults costs about fault-free decoding.

Measured side by side in one run, one torch thread, serial, rows in memory (store=None):

1. ``trial_char_gpt``: char-gpt (4 x 4 x 128, block 64, seeded untrained weights: speed does not
   depend on their values) on the first ``windows`` 64-character windows of pydoc's val split,
   BitFlip at BER 1e-6, ``delayed_start=False``, metrics accuracy / sdc / loss: campaign wall time
   per trial, all-in (sampling, injection, evaluation, metrics, rows), over one clean evaluation
   (forward over the same batches + the same metrics, no grad). Target <= 1.10.
2. ``kv_decode``: 16 prompts of 16 characters, 48 greedy steps through the KV cache: decoding
   inside ``faultlab.lm.kv_faults`` with faults drawn at 1e-6 per stored bit (a fresh list per
   repeat) over fault-free decoding. Target <= 1.20.

Each figure is the median over ``repeats`` alternating blocks, so load on a shared machine hits
both sides alike. ``--quick``: small sizes (a smoke run). Writes
benchmarks/results/faultlab_lm.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import faultlab as fl
from faultlab import lm
from hwlab.data import load
from hwlab.metrics import MetricAccumulator, resolve_metrics
from hwlab.models import char_gpt
from hwlab.seeds import seeded, torch_threads

RESULTS = Path(__file__).resolve().parent / "results" / "faultlab_lm.json"
TARGETS = {"trial_char_gpt": 1.10, "kv_decode": 1.20}
METRICS = ("accuracy", "sdc", "loss")


def _clean_eval(net, split, batch: int, passes: int) -> float:
    metrics = resolve_metrics(METRICS, "bench")
    t = time.perf_counter()
    with torch.no_grad():
        for _ in range(passes):
            acc = MetricAccumulator(metrics)
            for i in range(0, len(split), batch):
                x, y = split.x[i:i + batch], split.y[i:i + batch]
                logits = net(x)
                acc.update(logits, y, clean_logits=logits)
            acc.result()
    return (time.perf_counter() - t) / passes


def _trial(net, split, batch: int, trials: int, seed: int) -> float:
    t = time.perf_counter()
    fl.campaign(net, split, [fl.BitFlip(rate=1e-6)], trials=trials, seed=seed, clean=False,
                delayed_start=False, metrics=METRICS, batch_size=batch)
    return (time.perf_counter() - t) / trials


def trial_floor(net, split, trials: int, repeats: int, batch: int = 64) -> dict:
    _trial(net, split, batch, 2, 99)  # warm-up
    plain, trial = [], []
    for r in range(repeats):
        plain.append(_clean_eval(net, split, batch, max(2, trials // 2)))
        trial.append(_trial(net, split, batch, trials, r))
    ratios = [t / p for t, p in zip(trial, plain)]
    return {"ratio": statistics.median(ratios), "ratios": ratios,
            "base_ms": 1e3 * statistics.median(plain), "test_ms": 1e3 * statistics.median(trial),
            "trials": trials, "windows": len(split)}


def _decode(net, prompts, steps: int, faults) -> float:
    t = time.perf_counter()
    if faults is None:
        net.generate(prompts, steps)
    else:
        with lm.kv_faults(net, faults):
            net.generate(prompts, steps)
    return time.perf_counter() - t


def kv_decode(net, prompts, steps: int, passes: int, repeats: int) -> dict:
    _decode(net, prompts, steps, None)
    clean, faulty, n_faults = [], [], []
    for r in range(repeats):
        faults = lm.draw_kv_faults(1e-6, net, batch=len(prompts), seed=r)
        n_faults.append(len(faults))
        clean.append(sum(_decode(net, prompts, steps, None) for _ in range(passes)) / passes)
        faulty.append(sum(_decode(net, prompts, steps, faults) for _ in range(passes)) / passes)
    ratios = [f / c for f, c in zip(faulty, clean)]
    return {"ratio": statistics.median(ratios), "ratios": ratios,
            "base_ms": 1e3 * statistics.median(clean), "test_ms": 1e3 * statistics.median(faulty),
            "faults_per_decode": statistics.median(n_faults), "steps": steps}


def main(quick: bool = False) -> dict:
    trials, repeats, windows, passes = (4, 1, 8, 1) if quick else (40, 5, 256, 5)
    with seeded(0):
        net = char_gpt().eval()
    val = load("pydoc", "val").subset(windows)
    prompts = val.x[:16, :16]
    out = {"quick": quick, "text_sha256": val.sha256}
    with torch_threads(1):
        out["trial_char_gpt"] = trial_floor(net, val, trials, repeats)
        out["kv_decode"] = kv_decode(net, prompts, 48, passes, repeats)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    res = main(ap.parse_args().quick)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    for name, target in TARGETS.items():
        r = res[name]
        print(f"{name:<16} {r['ratio']:6.2f}x  (target <= {target})  "
              f"{'MET' if r['ratio'] <= target else 'NOT MET'}  "
              f"[base {r['base_ms']:.1f} ms, under faults {r['test_ms']:.1f} ms]")
    print(f"wrote {RESULTS}{' (quick)' if res['quick'] else ''}")
