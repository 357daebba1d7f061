# ruff: noqa: C408 -- dict(key=...) reads like the result rows the studies write
"""Seeded fake result rows in the shape every registered study writes (for tests and benchmarks).

These rows are *synthetic*: the curves have the right shape (accuracy falls with the fault rate,
protection holds it up, accuracy rises with time steps, local rules save memory) and the columns
and ``extra`` keys are those the studies write, so every page and figure can be exercised. No
number here is a measurement. Nothing in the dashboard itself calls this module; tests and
``benchmarks/app_render.py`` seed a temporary store with it through ``Store.add_results``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hwlab.errors import check, is_int

__all__ = ["OWN_MODEL", "fake_results", "seed_store"]

OWN_MODEL = "mylab.nets:make_resnet"  # a researcher's own model spec (module:callable)
N = 500  # test images per evaluation: accuracies are k / N, as the studies store them
_FAULTS = ("bitflip", "stuck0", "stuck1")
_LAYERS = ("conv1", "conv2", "fc1", "fc2", "fc3")


def _acc(rng, mean, sd=0.02):
    return round(float(np.clip(mean + rng.normal(0, sd), 0, 1)) * N) / N


def _campaign(rng, model, dataset, dtype, half, trials, rates=(1e-6, 1e-5, 1e-4, 1e-3),
              clean=0.978):
    rows = [dict(key="clean", module="faultlab", method="fault-injection", variant="baseline",
                 model=model, dataset=dataset, dtype=dtype, fault_model="none", fault_rate=0.0,
                 accuracy=clean, latency_ms=2.1, params=61706, extra={"n_samples": N})]
    for rate in rates:
        for t in range(trials):
            rows.append(dict(key=f"bitflip|{rate!r}|trial={t}", module="faultlab",
                             method="fault-injection", variant="baseline", model=model,
                             dataset=dataset, dtype=dtype, fault_model="bitflip", fault_rate=rate,
                             trial=t, accuracy=_acc(rng, clean / (1 + rate / half)),
                             latency_ms=float(rng.uniform(2, 3)), params=61706,
                             extra={"n_samples": N, "n_faults": int(rate * 2e6)}))
    return rows


def _clipact(rng):
    rows = []
    for v, half in (("unprotected", 4e-5), ("clipact-zero", 4e-4), ("clipact-cap", 2e-4),
                    ("ranger", 1.5e-4)):
        th = {layer: round(float(rng.uniform(1, 6)), 3) for layer in _LAYERS[:3]}
        rows.append(dict(key=f"clean|{v}", variant=v, fault_rate=0.0, accuracy=0.974,
                         latency_ms=0.03 * (1.1 if v != "unprotected" else 1), params=61706,
                         extra={"thresholds": th} if v != "unprotected" else {}))
        for fault in _FAULTS:
            for rate in (1e-6, 1e-5, 1e-4):
                for t in range(5):
                    mean = 0.974 / (1 + rate / half * (1.5 if fault == "bitflip" else 1))
                    rows.append(dict(key=f"{v}|{fault}|{rate!r}|{t}", variant=v,
                                     fault_model=fault, fault_rate=rate, trial=t,
                                     accuracy=_acc(rng, mean), extra={"n_faults": 3}))
    return [dict(r, module="faultlab", method="ft-clipact") for r in rows]


def _vulnerability(rng, model="lenet5", dataset="mnist5k"):
    rows = []
    for order, layer in enumerate(_LAYERS):
        for bit in range(32):
            drop = 0.9 if bit == 30 else (0.15 if 23 <= bit < 30 else 0.0)
            acc = _acc(rng, 0.978 - drop * (1 - order / 8), 0.01)
            rows.append(dict(key=f"{layer}|bit={bit}", module="faultlab",
                             method="vulnerability", variant="unprotected", dtype="float32",
                             model=model, dataset=dataset, fault_model="bitflip", accuracy=acc,
                             latency_ms=40.0, extra={
                                 "layer": layer, "order": order, "bit": bit,
                                 "field": "sign" if bit == 31 else "exponent" if bit > 22 else
                                 "mantissa", "ci_low": max(0, acc - 0.03),
                                 "ci_high": min(1, acc + 0.03), "trials": 3, "n_samples": N}))
    return rows


_PROTECTIONS = {"unprotected": 2e-5, "parity-zero": 1e-4, "secded72_64": 6e-4}


def _memory(rng):
    rows = []
    for p, half in _PROTECTIONS.items():
        bits = 64 if p == "unprotected" else 72
        rows.append(dict(key=f"clean|{p}", variant=p, fault_rate=0.0, trial=0, accuracy=0.974,
                         memory_bytes=245880 * bits // 64,
                         extra={"code_overhead": (bits - 64) / 64}))
        for fault in ("bitflip", "burst", "row", "asym"):
            for rate in (1e-5, 1e-4, 1e-3):
                for t in range(3):
                    words = int(rate * 2e6)
                    rows.append(dict(
                        key=f"{p}|{fault}|{rate!r}|trial={t}", variant=p, fault_model=fault,
                        fault_rate=rate, trial=t, accuracy=_acc(rng, 0.974 / (1 + rate / half)),
                        memory_bytes=245880 * bits // 64, extra={
                            "code_overhead": (bits - 64) / 64, "faulty_bits": words,
                            "corrected_words": words if p == "secded72_64" else 0,
                            "detected_words": words // 10 if p != "unprotected" else 0,
                            "miscorrected_words": words // 100 if p == "secded72_64" else 0,
                            "silent_words": words if p == "unprotected" else words // 50}))
        for volt, ber, energy in ((0.9, 1e-6, 1.0), (0.8, 1e-5, 0.79), (0.7, 1e-4, 0.6),
                                  (0.6, 1e-3, 0.44)):
            for t in range(3):
                rows.append(dict(key=f"{p}|bitflip|v={volt}|trial={t}", variant=p,
                                 fault_model="bitflip", fault_rate=ber, trial=t,
                                 accuracy=_acc(rng, 0.974 / (1 + ber / half)),
                                 memory_bytes=245880 * bits // 64,
                                 extra={"voltage": volt, "ber": ber, "relative_energy": energy,
                                        "code_overhead": (bits - 64) / 64}))
    return [dict(r, module="faultlab", method="memory-protection") for r in rows]


_MITIGATIONS = {"unprotected": (0.0, 0.02), "rquant": (0.0, 0.03), "clipact-zero": (0.03, 0.06),
                "ranger": (0.03, 0.05), "randbet": (0.0, 0.08), "secded": (12.5, 0.12),
                "harden": (4.0, 0.1)}


def _mitigation(rng):
    rows = []
    for v, (overhead, half) in _MITIGATIONS.items():
        rows.append(dict(key=f"clean|{v}", variant=v, fault_rate=0.0, accuracy=0.972,
                         latency_ms=0.03, params=61706, memory_bytes=62434,
                         extra={"dtype": "int8", "memory_overhead": overhead / 100,
                                "latency_overhead": 1.0, "train_seconds": 3.0}))
        for rate in (0.01, 0.02, 0.05, 0.1):
            fm = "bitflip@secded72_64" if v == "secded" else "bitflip"
            for t in range(3):
                rows.append(dict(key=f"{v}|{rate!r}|trial={t}", variant=v, fault_model=fm,
                                 fault_rate=rate, trial=t,
                                 accuracy=_acc(rng, 0.972 / (1 + (rate / half) ** 2)),
                                 extra={"n_faults": int(rate * 5e5), "sdc": rate}))
    return [dict(r, module="faultlab", method="mitigation", seed=0) for r in rows]


def _systolic(rng):
    rows = [dict(key="lenet5|clean", variant="clean", fault_model="none", fault_rate=0.0,
                 trial=0, accuracy=0.978, extra={"clean": True})]
    for df in ("weight-stationary", "output-stationary"):
        for frac in (1e-3, 1e-2, 0.25):
            for mit, keep in (("unmitigated", 0.0), ("fap", 0.9), ("fap-t", 0.97)):
                if mit == "unmitigated" and frac > 0.01:
                    continue
                rows.append(dict(key=f"lenet5|{df}|{frac!r}|trial=0|{mit}", variant=mit,
                                 fault_model="pe-stuck1-output", fault_rate=frac, trial=0,
                                 accuracy=_acc(rng, 0.1 + (keep - frac) * 0.88),
                                 extra={"dataflow": df, "faulty_pes": int(frac * 4096)}))
    return [dict(r, module="faultlab", method="systolic", model="lenet5") for r in rows]


def _spiking(rng):
    rows, thresholds = [], np.round(np.linspace(0.5, 0.99, 12), 3)
    for method, speed in (("converted", 3.0), ("direct", 2.0)):
        def curve(t, speed=speed):
            return round(0.97 * (1 - np.exp(-t / speed)) * N) / N

        def steps(h):
            return float(1 + 14 * (h - 0.5) / 0.49)

        for t in range(1, 33):
            rows.append(dict(key=f"{method}|fixed-T{t}", method=method, variant=f"fixed-T{t}",
                             timesteps=float(t), accuracy=curve(t), latency_ms=0.01 * t))
        pareto = [[float(h), curve(steps(h)), round(steps(h), 3)] for h in thresholds]
        for v, s in (("dynamic-confidence", steps(0.72)), ("entropy", 7.0), ("margin", 6.8),
                     ("oracle-any", 2.1), ("oracle-stay", 3.4)):
            extra = {"t_star": 12} if v.startswith("oracle") else {
                "threshold": 0.72, "t_star": 12, "test_pareto": pareto}
            rows.append(dict(key=f"{method}|{v}", method=method, variant=v, timesteps=s,
                             accuracy=curve(s) + (0.02 if v.startswith("oracle") else 0),
                             latency_ms=None if v.startswith("oracle") else 0.01 * s,
                             extra=extra))
        for rate in (1e-6, 1e-5):
            for k in range(3):
                for v, s in (("fixed-T12", 12.0), ("dynamic-confidence", steps(0.72))):
                    rows.append(dict(key=f"{method}|bitflip|{rate:g}|trial={k}|{v}",
                                     method=method, variant=v, fault_model="bitflip",
                                     fault_rate=rate, trial=k, timesteps=s,
                                     accuracy=_acc(rng, curve(s) - rate * 2e4, 0.01)))
    return [dict(r, module="spiking", model="mlp") for r in rows]


def _spiking_faults(rng):
    rows = []
    for v, s in (("fixed-T*", 12.0), ("fixed-T32", 32.0), ("dynamic-confidence", 6.0),
                 ("entropy", 7.0), ("oracle-any", 2.0)):
        rows.append(dict(key=f"converted|clean|{v}", variant=v, fault_model="none",
                         fault_rate=0.0, timesteps=s, accuracy=0.95))
        for fault in ("dead", "saturated"):
            for rate in (0.01, 0.05, 0.2):
                for t in range(2):
                    rows.append(dict(key=f"converted|{fault}|{rate:g}|trial={t}|{v}", variant=v,
                                     fault_model=fault, fault_rate=rate, trial=t, timesteps=s,
                                     accuracy=_acc(rng, 0.95 - rate * (2 if fault == "saturated"
                                                                       else 0.8))))
    return [dict(r, module="spiking", method="converted", model="mlp") for r in rows]


def _quantum(rng):
    rows = []
    for dataset, base in (("digits", 0.95), ("mnist5k", 0.86)):
        for level, (params, lat) in enumerate(((5210, 0.02), (5120, 0.6), (4630, 18.0))):
            accs = []
            for seed in range(2):
                acc = _acc(rng, base + 0.01 * level, 0.01)
                accs.append(acc)
                rows.append(dict(key=f"{dataset}|level-{level}|{seed}", method="creep",
                                 dataset=dataset, variant=f"level-{level}", seed=seed,
                                 params=params, accuracy=acc, latency_ms=lat,
                                 memory_bytes=4 * params,
                                 extra={"train_seconds": 5.0 * 8 ** level, "level": level}))
            rows.append(dict(key=f"mean|{dataset}|level-{level}", method="creep-mean",
                             dataset=dataset, variant=f"level-{level}",
                             accuracy=float(np.mean(accs)), params=params, latency_ms=lat))
        for level in (0, 2):
            for rate in (1e-5, 1e-4):
                for t in range(2):
                    rows.append(dict(key=f"faults|{dataset}|level-{level}|{rate:g}|{t}",
                                     method="creep-faults", dataset=dataset,
                                     variant=f"level-{level}", trial=t, fault_model="bitflip",
                                     fault_rate=rate, accuracy=_acc(rng, base - rate * 1e3),
                                     extra={"target": "quantum" if level else "classical"}))
    return [dict(r, module="quantum", model="creep-cnn") for r in rows]


_RULES = {"e2e": 1.0, "dgl": 0.42, "infopro": 0.47, "man": 0.50, "auglocal": 0.55}


def _localtrain(rng):
    rows = []
    for rule, ratio in _RULES.items():
        for k in ((1,) if rule == "e2e" else (2, 4, 8)):
            mem = int(48e6 * (ratio if k > 1 else 1.0) * (1 + 2 / (k + 1)) / 1.5)
            acc = _acc(rng, 0.95 - (0.0 if rule == "e2e" else 0.01 * k), 0.003)
            rows.append(dict(key=f"resnet20|{rule}|K={k}", method=rule, variant=f"K={k}",
                             memory_bytes=mem, params=int(470e3 * (1 + .1 * k)), accuracy=acc,
                             latency_ms=float(rng.uniform(30, 40)), dtype="float32",
                             extra={"saved_peak_bytes": mem // 2}))
    rows.append(dict(key="vit-tiny|dgl|K=4", method="dgl", variant="K=4", model="vit-tiny",
                     memory_bytes=9_000_000, accuracy=0.1, latency_ms=20.0))  # at chance
    return [dict({"model": "resnet20"}, **r, module="localtrain") for r in rows]


def _zoo():
    return [dict(key=f"{m}|{d}|s0", module="hwlab", method="zoo", variant="fp32", model=m,
                 dataset=d, dtype="float32", accuracy=a, latency_ms=lat, params=p,
                 memory_bytes=4 * p, extra={"train_seconds": 5.0})
            for m, d, a, lat, p in (("lenet5", "mnist5k", 0.978, 0.004, 61706),
                                    ("mlp", "mnist5k", 0.95, 0.001, 109386),
                                    ("vgg-s", "mnist5k", 0.985, 0.03, 1_200_000),
                                    ("lenet5", "digits", 0.97, 0.004, 61706),
                                    (OWN_MODEL, "mnist5k", 0.981, 0.02, 272_000))]


def fake_runs(seed: int = 0, trials: int = 5) -> list[tuple[str, dict, list[dict]]]:
    """``[(study, config, rows)]``: one run per study (two campaigns: float32 and float16, plus
    one on a researcher's own model), every row with model and dataset."""
    rng = np.random.default_rng(seed)
    base = {"dataset": "mnist5k", "model": "lenet5"}
    return [
        ("hwlab.zoo", {"models": "several"}, _zoo()),
        ("faultlab.campaign", {**base, "dtype": "float32", "trials": trials},
         _campaign(rng, "lenet5", "mnist5k", "float32", 4e-5, trials)),
        ("faultlab.campaign", {**base, "dtype": "float16", "trials": trials},
         _campaign(rng, "lenet5", "mnist5k", "float16", 1.5e-5, trials, clean=0.976)),
        ("faultlab.campaign", {"model": OWN_MODEL, "dataset": "mnist5k", "dtype": "float32"},
         _campaign(rng, OWN_MODEL, "mnist5k", "float32", 6e-5, 3)),
        ("faultlab.clipact", base, [dict(r, **base) for r in _clipact(rng)]),
        ("faultlab.vulnerability", base, _vulnerability(rng)),
        ("faultlab.memory", base, [dict(r, **base) for r in _memory(rng)]),
        ("faultlab.mitigation", {**base, "dtype": "int8"},
         [dict(r, **base) for r in _mitigation(rng)]),
        ("faultlab.systolic", {"dataset": "mnist5k"}, [dict(r, dataset="mnist5k")
                                                       for r in _systolic(rng)]),
        ("spiking.dynamic-confidence", {"dataset": "digits"},
         [dict(r, dataset="digits") for r in _spiking(rng)]),
        ("spiking.faults", {"dataset": "digits"},
         [dict(r, dataset="digits") for r in _spiking_faults(rng)]),
        ("quantum.creep", {"datasets": ["digits", "mnist5k"]}, _quantum(rng)),
        ("localtrain.compare", {"dataset": "mnist5k"},
         [dict(r, dataset="mnist5k") for r in _localtrain(rng)]),
    ]


def fake_results(n_rows: int | None = None, seed: int = 0, trials: int = 5) -> pd.DataFrame:
    """The rows of :func:`fake_runs` as one DataFrame (with ``study`` and ``run`` columns); with
    ``n_rows`` the float32 campaign gets more trials until the table has about that many."""
    check(n_rows is None or is_int(n_rows, 1), "n_rows", "fake_results",
          "a positive int or None", n_rows)
    frames = []
    for i, (study, _config, rows) in enumerate(fake_runs(seed, trials)):
        frames.append(pd.DataFrame(rows).assign(study=study, run=i))
    df = pd.concat(frames, ignore_index=True)
    if n_rows is not None and len(df) < n_rows:
        rng = np.random.default_rng(seed + 1)
        extra_trials = (n_rows - len(df)) // 4 + 1
        bulk = pd.DataFrame(_campaign(rng, "lenet5", "mnist5k", "float32", 4e-5, extra_trials))
        bulk = bulk.iloc[1:]  # the clean row is there already
        bulk["key"] = "bulk|" + bulk["key"]
        df = pd.concat([df, bulk.assign(study="faultlab.campaign", run=1)], ignore_index=True)
        df = df.head(n_rows)
    return df


def seed_store(store, n_rows: int | None = None, seed: int = 0, trials: int = 5) -> list[str]:
    """Write :func:`fake_results` into ``store`` (one run per entry of :func:`fake_runs`,
    through ``Store.add_results``); returns the run ids."""
    from hwlab._figure_data import study_kinds

    df = fake_results(n_rows, seed, trials)
    configs = [c for _, c, _ in fake_runs(seed, trials)]
    latency, memory = study_kinds(df["study"].unique())  # as each study records them when run
    for study in df["study"].unique():
        store.set_study_kinds(study, latency.get(study), memory.get(study))
    run_ids = []
    for i, part in df.groupby("run", sort=True):
        study = part["study"].iloc[0]
        run_id = store.open_run(study, {**configs[i], "fake": True, "seed": seed,
                                        "n_rows": n_rows})
        records = part.drop(columns=["study", "run"]).to_dict("records")
        rows = [{k: v for k, v in r.items() if not _missing(v)} for r in records]
        store.add_results(run_id, rows)
        store.finish_run(run_id)
        run_ids.append(run_id)
    return run_ids


def _missing(value) -> bool:
    if isinstance(value, (dict, list)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
