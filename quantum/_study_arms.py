"""The control arm, the paired verdict and the device-noise sweep of the ``quantum.creep`` study.

Arms of one (dataset, level, seed): ``hybrid`` (variant ``level-K``: the first K layer groups
quantum), ``control`` (``control-K``: every quantum layer of the hybrid replaced by its
parameter-matched classical control, :func:`quantum.control`; same seed, data order and
recipe), ``noisy`` (``noisy-K``: the hybrid trained under depolarizing noise, one and two qubit,
p = ``noise_aware``; only on ``noise_dataset``, for the sweep). Level 0 is classical in every
arm, so only its hybrid is trained.

Rows added to the study's:
* ``method="creep-paired-mean"`` per (dataset, level > 0): ``accuracy`` = hybrid mean; ``extra``
  the control mean, the paired differences hybrid - control and hybrid - level 0 per seed with
  their mean and Student-t 95 % interval (:func:`hwlab.stats.mean_ci`; paired over seeds: the
  seed fixes initialisation of the shared layers and the data order), and the ``verdict``;
* ``method="creep-noise"`` per (arm, level > 0, seed, noise kind, noise level) on
  ``noise_dataset``: the trained model evaluated under :class:`quantum.Noise` with
  ``fault_model`` = the kind and ``fault_rate`` = its probability (``1/shots`` for ``shots``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from hwlab.seeds import derive_seed, seeded, torch_threads
from hwlab.stats import mean_ci

__all__ = ["ARMS", "NOISE_KINDS", "NoiseItem", "noise_items", "paired_rows", "verdict"]

log = logging.getLogger(__name__)

ARMS = ("hybrid", "control", "noisy")
NOISE_KINDS = ("depolarizing", "depolarizing2", "damping", "readout", "shots")
_PREFIX = {"hybrid": "level", "control": "control", "noisy": "noisy"}


def variant(arm: str, level: int) -> str:
    return f"{_PREFIX[arm]}-{level}"


def arms(config) -> tuple[str, ...]:
    """The arms the config trains (hybrid always)."""
    return ("hybrid",) + (("control",) if config.controls else ()) + (
        ("noisy",) if config.noise_aware > 0 else ())


def training_noise(arm: str, budget: dict):
    """The :class:`quantum.Noise` an arm trains under (None: noiseless)."""
    from quantum._noise import Noise

    if arm != "noisy":
        return None
    p = budget["noise_aware"]
    return Noise(depolarizing=p, depolarizing2=p)


def _accs(df, dataset: str, name: str) -> dict[int, float]:
    part = df[(df["dataset"] == dataset) & (df["variant"] == name)]
    return {int(s): float(a) for s, a in zip(part["seed"], part["accuracy"])}


def _paired(a: dict, b: dict) -> dict:
    seeds = sorted(set(a) & set(b))
    diffs = [100 * (a[s] - b[s]) for s in seeds]  # points
    mean, lo, hi = mean_ci(diffs) if diffs else (math.nan,) * 3
    return {"diffs": diffs, "mean": mean, "lo": lo, "hi": hi, "n": len(seeds),
            "higher": sum(d > 0 for d in diffs)}  # seeds where the hybrid is ahead


def paired_rows(store, run_id: str, config) -> list[dict]:
    """One ``creep-paired-mean`` row per (dataset, level > 0) with the arms' differences."""
    df = store.results(run_id=run_id)
    df = df[df["method"] == "creep"]
    rows = []
    for dataset in config.datasets:
        base = _accs(df, dataset, "level-0")
        for level in (lv for lv in config.levels if lv > 0):
            hyb, ctl = _accs(df, dataset, f"level-{level}"), _accs(df, dataset,
                                                                   f"control-{level}")
            if not hyb:
                continue
            vs_control, vs_level0 = _paired(hyb, ctl), _paired(hyb, base)
            rows.append({
                "key": f"paired|{dataset}|level-{level}", "module": "quantum",
                "method": "creep-paired-mean", "model": "creep-cnn", "dataset": dataset,
                "variant": f"level-{level}", "accuracy": sum(hyb.values()) / len(hyb),
                "extra": {"level": level, "hybrid": hyb, "control": ctl, "level0": base,
                          "control_mean": sum(ctl.values()) / len(ctl) if ctl else None,
                          "hybrid_minus_control": vs_control,
                          "hybrid_minus_level0": vs_level0, "unit": "accuracy points",
                          "interval": "Student-t 95% over seeds, paired"}})
    for dataset in config.datasets:
        mine = [r for r in rows if r["dataset"] == dataset]
        text = verdict(mine)
        for r in mine:
            r["extra"]["verdict"] = text
        if text:
            log.info("quantum.creep verdict: %s", text)
    return rows


def _judged(d: dict) -> bool:
    return d["n"] >= 2 and not math.isnan(d["lo"])


def _word(d: dict, up: str, down: str, same: str) -> str:
    return up if d["lo"] > 0 else down if d["hi"] < 0 else same


def _fmt(d: dict) -> str:
    seeds = f"{d['n']} seed" + ("s" if d["n"] != 1 else "")
    ci = f"95% CI [{d['lo']:+.2f}, {d['hi']:+.2f}], " if _judged(d) else ""
    ahead = f", hybrid ahead in {d['higher']}" if "higher" in d else ""
    return f"{d['mean']:+.2f} points, {ci}{seeds}{ahead}"


def verdict(rows: list[dict]) -> str:
    """The plain sentence for one dataset's ``creep-paired-mean`` rows: does accuracy rise as
    quantum creeps in (top level vs level 0), and does quantum beat its control per level."""
    if not rows:
        return ""
    rows = sorted(rows, key=lambda r: r["extra"]["level"])
    top = rows[-1]["extra"]
    parts, unjudged = [], "cannot be judged with fewer than 2 paired seeds"
    trend = top["hybrid_minus_level0"]
    if trend["n"]:
        word = (_word(trend, "holds", "does not hold (accuracy falls)",
                      "does not hold (no significant rise)") if _judged(trend) else unjudged)
        parts.append(f"the paper's trend (level {top['level']} above level 0) {word}: "
                     f"{_fmt(trend)}")
    for r in rows:
        d, level = r["extra"]["hybrid_minus_control"], r["extra"]["level"]
        if not d["n"]:
            continue
        if _judged(d):
            word = _word(d, "beats", "loses to", "does not differ from")
            parts.append(f"at level {level} the hybrid {word} its parameter-matched classical "
                         f"control ({_fmt(d)})")
        else:
            parts.append(f"at level {level} hybrid vs its parameter-matched classical control "
                         f"{unjudged} ({_fmt(d)})")
    return f"{rows[0]['dataset']}: " + "; ".join(parts) + "."


@dataclass(frozen=True)
class NoiseItem:
    """One trained model evaluated under one noise setting."""

    budget: tuple
    root: str
    dataset: str
    arm: str
    level: int
    seed: int
    kind: str
    value: float  # probability, or the number of shots
    test_limit: int


def noise_items(config, budget: tuple, root: str) -> dict[str, NoiseItem]:
    """The sweep's items: every trained quantum arm of ``noise_dataset`` x kind x level."""
    c = config
    if c.noise_dataset not in c.datasets or not c.noise_kinds:
        return {}
    items = {}
    for arm in (a for a in arms(c) if a != "control"):
        for level in (lv for lv in c.levels if lv > 0):
            for seed in c.seeds:
                for kind in c.noise_kinds:
                    values = c.noise_shots if kind == "shots" else c.noise_levels
                    for v in values:
                        key = (f"noise|{c.noise_dataset}|{variant(arm, level)}|seed={seed}|"
                               f"{kind}={v:g}")
                        items[key] = NoiseItem(budget, root, c.noise_dataset, arm, level, seed,
                                               kind, float(v), c.test_limit)
    return items


def noise_row(item: NoiseItem) -> dict:
    """Evaluate one trained model under one noise setting. Top-level: picklable."""
    from hwlab.train import evaluate
    from quantum._noise import Noise, with_noise
    from quantum._study import _data, _trained

    value = int(item.value) if item.kind == "shots" else item.value
    noise = Noise(**{item.kind: value})
    with torch_threads(1):
        model, _ = _trained(dict(item.budget), item.root, item.dataset, item.level, item.seed,
                            item.arm)
        test = _data(item.dataset, "test", item.test_limit)
        key = f"{item.dataset}|{item.arm}|{item.level}|{item.seed}|{item.kind}|{value}"
        with seeded(derive_seed(item.seed, key) % 2**31):  # the shots' draws
            acc = evaluate(with_noise(model, noise).eval(), test)
    rate = 1 / value if item.kind == "shots" else value
    return {"module": "quantum", "method": "creep-noise", "model": "creep-cnn",
            "dataset": item.dataset, "variant": variant(item.arm, item.level),
            "seed": item.seed, "accuracy": acc, "fault_model": item.kind, "fault_rate": rate,
            "latency_ms": None,
            "extra": {"level": item.level, "arm": item.arm, "noise": {item.kind: value},
                      "trained": "noiseless" if item.arm == "hybrid" else
                      f"depolarizing p={dict(item.budget)['noise_aware']:g}",
                      "test_size": len(test)}}
