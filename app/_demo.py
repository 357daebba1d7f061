"""Seeded fake result rows in the shape every module's study writes (for tests and benchmarks).

These rows are *synthetic*: the curves have the right shape (accuracy falls with the fault rate,
FT-ClipAct holds it up, accuracy rises with time steps, local rules save memory) so that the pages
and their charts can be exercised, but no number here is a measurement. Nothing in the dashboard
itself calls this module; tests and ``benchmarks/app_render.py`` seed a temporary store with it.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from hwlab.errors import check

__all__ = ["fake_results", "seed_store"]

_RATES = (1e-7, 3e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4)
_VARIANTS = {"unprotected": 4.0e-5, "clipact-zero": 4.0e-4, "clipact-cap": 2.0e-4, "ranger": 1.5e-4}
_FAULTS = ("bitflip", "stuck0", "stuck1")
_LAYERS = ("0.weight", "3.weight", "7.weight", "9.weight")
_RULES = {"e2e": 1.0, "dgl": 0.42, "infopro": 0.47, "man": 0.50, "auglocal": 0.55}


def _row(**fields):
    return fields


def _faults(rng, trials):
    """faultlab.campaign / faultlab.clipact rows: accuracy vs fault rate per variant."""
    rows = []
    for variant, half in _VARIANTS.items():
        thresholds = {layer: round(float(rng.uniform(1, 6)), 3) for layer in _LAYERS[:3]}
        method = "clipact" if variant != "unprotected" else "campaign"
        for fault in _FAULTS:
            for rate in _RATES:
                mean = 0.98 / (1.0 + rate / half * (1.5 if fault == "bitflip" else 1.0))
                for trial in range(trials):
                    acc = float(np.clip(mean + rng.normal(0, 0.02), 0.05, 0.99))
                    extra = {"n_faults": int(rng.poisson(rate * 1.9e6)), "dtype": "float32"}
                    if variant.startswith("clipact"):
                        extra["thresholds"] = thresholds
                    rows.append(_row(
                        key=f"{variant}|{fault}|{rate:g}|{trial}", module="faultlab",
                        method=method, variant=variant, fault_model=fault, fault_rate=rate,
                        trial=trial, accuracy=acc, latency_ms=float(rng.uniform(2, 3)),
                        extra=extra))
    for dtype, scale in (("float16", 0.5), ("bfloat16", 0.3), ("int8", 3.0)):
        for rate in _RATES:
            for trial in range(trials):
                mean = 0.98 / (1 + rate / (4e-5 * scale))
                acc = float(np.clip(mean + rng.normal(0, 0.02), 0, 1))
                rows.append(_row(key=f"fmt|{dtype}|{rate:g}|{trial}", module="faultlab",
                                 method="campaign", variant="unprotected", fault_model="bitflip",
                                 fault_rate=rate, trial=trial, accuracy=acc,
                                 extra={"dtype": dtype}))
    for layer in _LAYERS:
        for bit in range(32):
            drop = 0.9 if bit == 30 else (0.2 if 23 <= bit < 30 else 0.0)
            acc = float(np.clip(0.98 - drop * rng.uniform(0.6, 1.0), 0, 1))
            rows.append(_row(key=f"vuln|{layer}|{bit}", module="faultlab",
                             method="vulnerability", variant="unprotected", fault_model="bitflip",
                             fault_rate=1e-5, accuracy=acc, extra={"layer": layer, "bit": bit}))
    return rows


def _spiking(rng):
    """spiking.dynamic-confidence rows: fixed T curve, stopping rules, oracles, threshold curves.

    Like the real study, each rule row of ``converted`` carries its test accuracy-vs-steps curve
    over thresholds in ``extra["test_pareto"]`` ([threshold, accuracy, mean steps] triples); the
    ``direct`` rows store the same kind of curve as one row per threshold instead.
    """
    rows = []
    thresholds = np.round(np.linspace(0.5, 0.99, 12), 3)
    for method, speed in (("converted", 3.0), ("direct", 2.0)):
        def curve(t, speed=speed):
            return float(0.97 * (1 - np.exp(-t / speed)))

        def steps_at(thr):
            return float(1 + 14 * (thr - 0.5) / 0.49)

        for t in range(1, 17):
            rows.append(_row(key=f"{method}|fixed-T{t}", module="spiking", method=method,
                             variant=f"fixed-T{t}", timesteps=float(t), accuracy=curve(t),
                             latency_ms=0.05 * t))
        pareto = [[float(h), round(curve(steps_at(h)), 4), round(steps_at(h), 3)]
                  for h in thresholds]
        if method == "direct":
            for h in thresholds:
                rows.append(_row(key=f"{method}|dc-sweep|{h}", module="spiking", method=method,
                                 variant="dynamic-confidence-sweep", timesteps=steps_at(h),
                                 accuracy=curve(steps_at(h)), extra={"threshold": float(h)}))
        for variant, steps in (("dynamic-confidence", steps_at(0.7)), ("entropy", 7.0),
                               ("margin", 6.8), ("oracle-any", 2.1), ("oracle-stay", 3.4)):
            oracle = variant.startswith("oracle")
            extra = {"t_star": 12} if oracle else {"threshold": 0.7, "t_star": 12}
            if variant == "dynamic-confidence" and method == "converted":
                extra["test_pareto"] = pareto
            rows.append(_row(key=f"{method}|{variant}", module="spiking", method=method,
                             variant=variant, timesteps=steps,
                             accuracy=curve(steps) + (0.02 if oracle else 0.0),
                             latency_ms=None if oracle else 0.05 * steps, extra=extra))
        for rate in (1e-6, 1e-5):
            for k in range(3):
                for variant, steps, drop in (("fixed-T12", 12.0, 0.0), ("dynamic-confidence",
                                                                      steps_at(0.7), 0.01)):
                    rows.append(_row(key=f"{method}|bitflip|{rate:g}|trial={k}|{variant}",
                                     module="spiking", method=method, variant=variant,
                                     fault_model="bitflip", fault_rate=rate, trial=k,
                                     timesteps=steps, extra={"threshold": 0.7},
                                     accuracy=curve(steps) - rate * 2e4 - drop
                                     + float(rng.normal(0, 0.01))))
    return rows


def _quantum(rng, seeds):
    rows = []
    for level, (acc, params) in enumerate(((0.90, 5210), (0.905, 5120), (0.93, 4630))):
        for seed in range(seeds):
            rows.append(_row(key=f"level-{level}|{seed}", module="quantum", method="creep",
                             variant=f"level-{level}", seed=seed, params=params,
                             accuracy=float(acc + rng.normal(0, 0.005)),
                             latency_ms=float(0.02 * 30 ** level),
                             extra={"train_seconds": float(5 * 8 ** level)}))
    return rows


def _localtrain(rng):
    rows = []
    for rule, ratio in _RULES.items():
        for k in ((1,) if rule == "e2e" else (2, 4, 8)):
            mem = int(48e6 * (ratio if k > 1 else 1.0) * (1 + 2 / (k + 1)) / 1.5)
            acc = 0.95 - (0.0 if rule == "e2e" else 0.01 * k) + rng.normal(0, 0.003)
            rows.append(_row(key=f"{rule}|K={k}", module="localtrain", method=rule,
                             variant=f"K={k}", memory_bytes=mem, params=int(470e3 * (1 + .1 * k)),
                             accuracy=float(acc), latency_ms=float(rng.uniform(30, 40))))
    return rows


def _zoo():
    return [_row(key=f"{m}|mnist5k", module="hwlab", method="zoo", variant="clean", model=m,
                 accuracy=a, latency_ms=lat, params=p, memory_bytes=4 * p)
            for m, a, lat, p in (("lenet5", 0.975, 0.4, 61706), ("mlp", 0.95, 0.1, 109386),
                                 ("vgg-s", 0.985, 3.1, 1_200_000))]


def fake_results(n_rows=None, seed=0, trials=5):
    """Synthetic result rows (a DataFrame with the store's columns minus ``run_id``).

    Returns one block of rows per module (faultlab, spiking, quantum, localtrain, plus zoo rows),
    each with a ``study`` column naming the study that would write it. With ``n_rows`` the
    faultlab campaign block is repeated with more trials until the table has that many rows.
    """
    check(n_rows is None or (isinstance(n_rows, int) and n_rows > 0), "n_rows", "fake_results",
          "a positive int or None", n_rows)
    rng = np.random.default_rng(seed)
    blocks = {
        "faultlab.campaign": _faults(rng, trials),
        "spiking.dynamic-confidence": _spiking(rng),
        "quantum.creep": _quantum(rng, seeds=3),
        "localtrain.compare": _localtrain(rng),
        "hwlab.zoo": _zoo(),
    }
    frames = []
    for study, rows in blocks.items():
        df = pd.DataFrame(rows)
        df["study"] = study
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    if n_rows is not None and len(df) < n_rows:
        per_trial = 4 * 3 * len(_RATES) + 3 * len(_RATES)  # campaign + format rows per trial
        extra_rows = _faults(rng, trials=(n_rows - len(df)) // per_trial + 1)
        more = pd.DataFrame(extra_rows)
        more["key"] = "bulk|" + more["key"]
        more["study"] = "faultlab.campaign"
        df = pd.concat([df, more.iloc[: n_rows - len(df)]], ignore_index=True)
    df = df.head(n_rows) if n_rows is not None else df
    df["model"] = df["model"].fillna("lenet5") if "model" in df else "lenet5"
    df["dataset"] = "mnist5k"
    df["seed"] = df["seed"].fillna(0) if "seed" in df else 0
    df["extra"] = [json.dumps(e) if isinstance(e, dict) else None for e in df.get("extra")]
    return df


def seed_store(store, n_rows=None, seed=0, trials=5):
    """Write :func:`fake_results` into ``store``, one run per study; returns the run ids."""
    df = fake_results(n_rows=n_rows, seed=seed, trials=trials)
    run_ids = []
    for study, part in df.groupby("study", sort=False):
        config = {"fake": True, "seed": seed, "n_rows": n_rows, "dtype": "float32",
                  "model": "lenet5", "trials": trials if study == "faultlab.campaign" else None}
        run_id = store.open_run(study, config)
        records = part.drop(columns="study").to_dict("records")
        rows = [{k: (None if _missing(v) else v) for k, v in r.items()} for r in records]
        store.add_results(run_id, rows)
        store.finish_run(run_id)
        run_ids.append(run_id)
    return run_ids


def _missing(value):
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
