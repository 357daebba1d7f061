"""Claims (#14): a campaign trial costs about one plain inference pass, and delayed start + fault
dropping run more trials per second than the full path.

Measured side by side in one run, one torch thread, serial, rows kept in memory (store=None):

1. ``floor_lenet5_digits``: LeNet-5 (8x8 input) on digits' test split (180 images), BitFlip at
   BER 1e-6, ``delayed_start=False``: campaign wall time per trial, all-in (fault-free pass,
   fingerprints, sampling, injection, evaluation, metrics, rows), over one plain inference pass
   (``model(x)`` plus top-1 accuracy, no grad; the ratio against ``hwlab.train.evaluate`` is
   printed beside it). Target <= 1.10.
2. ``floor_vgg_mnist5k``: the same for vgg-s on mnist5k's test split (500 images). Target <= 1.03.
3. ``delayed_1e-06`` / ``delayed_1e-05``: LeNet-5 (28x28) on mnist5k's test split: trials per
   second with delayed start + fault dropping (the default) over the full path, at BER 1e-6
   (target >= 3) and 1e-5 (target >= 1.5). The rows of both paths are checked to be identical.

The models are seeded, untrained networks (speed does not depend on the weights' values). Each
figure is the median over ``repeats`` alternating blocks (plain / campaign, or full / delayed),
so load on a shared machine hits both sides alike. ``--quick`` uses small sizes (a smoke run).
Writes benchmarks/results/faultlab_campaign_floor.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import faultlab as fl
from hwlab.data import load
from hwlab.models import create_model
from hwlab.seeds import seeded, torch_threads

RESULTS = Path(__file__).resolve().parent / "results" / "faultlab_campaign_floor.json"
TARGETS = {"floor_lenet5_digits": ("<=", 1.10), "floor_vgg_mnist5k": ("<=", 1.03),
           "delayed_1e-06": (">=", 3.0), "delayed_1e-05": (">=", 1.5)}
COMPARE = ["key", "accuracy", "fault_model", "fault_rate", "seed"]


def _model(name: str, in_shape) -> torch.nn.Module:
    with seeded(0):
        return create_model(name, in_shape=in_shape).eval()


def _plain(model, split, passes: int) -> float:
    """Seconds per plain inference pass (forward + top-1 accuracy)."""
    t = time.perf_counter()
    with torch.no_grad():
        for _ in range(passes):
            float((model(split.x).argmax(1) == split.y).float().mean())
    return (time.perf_counter() - t) / passes


def _campaign(model, split, rate: float, trials: int, delayed: bool, seed: int = 0):
    t = time.perf_counter()
    df = fl.campaign(model, split, [fl.BitFlip(rate=rate)], trials=trials, seed=seed,
                     clean=False, delayed_start=delayed, batch_size=512)
    return (time.perf_counter() - t) / trials, df


def _evaluate(model, split, passes: int) -> float:
    """Seconds per ``hwlab.train.evaluate`` call (the project's own plain evaluation)."""
    from hwlab.train import evaluate

    t = time.perf_counter()
    for _ in range(passes):
        evaluate(model, split, batch_size=512)
    return (time.perf_counter() - t) / passes


def floor(model, split, trials: int, repeats: int) -> dict:
    _campaign(model, split, 1e-6, 3, False)  # warm-up: numba kernels, caches
    _plain(model, split, 3)
    plain, trial, ev = [], [], []
    for r in range(repeats):
        plain.append(_plain(model, split, trials))
        trial.append(_campaign(model, split, 1e-6, trials, False, seed=r)[0])
        ev.append(_evaluate(model, split, max(3, trials // 4)))
    ratios = [c / p for c, p in zip(trial, plain)]
    return {"plain_ms": 1e3 * statistics.median(plain), "trial_ms": 1e3 * statistics.median(trial),
            "ratio": statistics.median(ratios), "ratios": ratios, "trials": trials,
            "images": len(split), "evaluate_ms": 1e3 * statistics.median(ev),
            "ratio_vs_evaluate": statistics.median([c / e for c, e in zip(trial, ev)])}


def delayed(model, split, rate: float, trials: int, repeats: int) -> dict:
    _campaign(model, split, rate, 3, True)  # warm-up (also traces the graph once)
    full, fast = [], []
    for r in range(repeats):
        t_full, df_full = _campaign(model, split, rate, trials, False, seed=r)
        t_fast, df_fast = _campaign(model, split, rate, trials, True, seed=r)
        if not df_full[COMPARE].equals(df_fast[COMPARE]):
            raise AssertionError(f"delayed start changed the rows at rate {rate}")
        full.append(t_full)
        fast.append(t_fast)
    ratios = [a / b for a, b in zip(full, fast)]
    return {"full_trials_per_s": 1 / statistics.median(full),
            "delayed_trials_per_s": 1 / statistics.median(fast),
            "ratio": statistics.median(ratios), "ratios": ratios, "trials": trials,
            "images": len(split), "rows_identical": True}


def main(quick: bool = False) -> dict:
    trials, repeats = (20, 1) if quick else (200, 5)
    digits = load("digits", "test")
    mnist = load("mnist5k", "test")
    if quick:
        mnist = mnist.subset(100)
    out = {"quick": quick}
    with torch_threads(1):
        out["floor_lenet5_digits"] = floor(_model("lenet5", (1, 8, 8)), digits, trials, repeats)
        out["floor_vgg_mnist5k"] = floor(_model("vgg-s", (1, 28, 28)), mnist,
                                         max(3, trials // 10), repeats)
        lenet = _model("lenet5", (1, 28, 28))
        for rate in (1e-6, 1e-5):
            out[f"delayed_{rate:.0e}"] = delayed(lenet, mnist, rate, trials, repeats)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    res = main(ap.parse_args().quick)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    for name, (op, target) in TARGETS.items():
        r = res[name]
        ok = r["ratio"] <= target if op == "<=" else r["ratio"] >= target
        detail = (f"plain {r['plain_ms']:.2f} ms, trial {r['trial_ms']:.2f} ms; "
                  f"vs hwlab.train.evaluate ({r['evaluate_ms']:.2f} ms) "
                  f"{r['ratio_vs_evaluate']:.2f}x"
                  if "plain_ms" in r else
                  f"full {r['full_trials_per_s']:.1f} /s, delayed {r['delayed_trials_per_s']:.1f} /s")
        print(f"{name:<22} {r['ratio']:6.2f}x  (target {op} {target})  "
              f"{'MET' if ok else 'NOT MET'}  [{detail}; {r['trials']} trials, "
              f"{r['images']} images]")
    print(f"wrote {RESULTS}{' (quick)' if res['quick'] else ''}")
