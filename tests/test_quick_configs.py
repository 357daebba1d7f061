"""Every `--quick` run teaches something: its baseline row is at least 20 points above chance.

The quick configuration is the first thing a new user runs (``hwlab run STUDY --quick``, the
dashboard's "Run the quick studies"). A quick run whose baseline (the fault-free model, E2E
backpropagation, the classical network, the full-time SNN) sits at chance shows nothing: every
other row of it is noise around chance too. For every registered study this runs the quick
configuration and checks each baseline row: ``accuracy >= 1 / num_classes + 0.20``.

Where the full quick run is slow, ``OVERRIDES`` drops items that are NOT the baseline (the
baseline item's inputs, seeds and budget stay exactly the quick configuration's, so its row is
the number the full quick run stores; checked against a full run when the override was written).

Spiking studies: their quick configurations are owned by the spiking maintainers (issue 22 is
changing them in parallel). They are in the loop because their quick baselines were already far
above chance when this test was written (converted / direct fixed-T16: 0.90 / 0.91 on digits);
they run with their own quick configuration, no override, so a change there is seen here.
"""

from __future__ import annotations

import importlib.metadata
import json

import pytest

from hwlab.data import load
from hwlab.store import Store
from hwlab.studies import run_study

MARGIN = 0.20  # points above chance a baseline row must reach


def _rows(df, where):
    return [(r.key, r.dataset, r.accuracy) for r in df[where].itertuples()]


def _max_t(df, cfg, infix):
    """The SNN run to its full ``max_steps`` (the fixed-T row every stopping rule is read against)."""
    t = cfg["max_steps"]
    return _rows(df, df["key"].str.endswith(f"{infix}fixed-T{t}"))


# study -> how to find its baseline rows in a quick run: f(results, run config) -> [(key, dataset,
# accuracy)]. Measured with `HWLAB_HOME=/tmp/q hwlab run STUDY --quick` (2-core machine): see the
# comment beside each.
BASELINE = {
    # the zoo model itself (lenet5 / digits: 0.966)
    "hwlab.zoo": lambda df, cfg: _rows(df, df["key"].notna()),
    # the fault-free evaluation of the campaign (mlp / digits: 0.978)
    "faultlab.campaign": lambda df, cfg: _rows(df, df["fault_model"] == "none"),
    # the unprotected model without faults (lenet5 / mnist5k: 0.974)
    "faultlab.clipact": lambda df, cfg: _rows(df, df["key"] == "clean|unprotected"),
    "faultlab.memory": lambda df, cfg: _rows(df, df["key"] == "clean|unprotected"),  # 0.974
    "faultlab.mitigation": lambda df, cfg: _rows(df, df["key"] == "clean|unprotected"),  # 0.973
    # the fault-free array (lenet5 / mnist5k: 0.980)
    "faultlab.systolic": lambda df, cfg: _rows(df, df["key"].str.endswith("|clean")),
    # the fault-free row of every storage format (mlp / digits: float32 0.978, int8 0.978,
    # mxfp4 0.961, nvfp4 0.972)
    "faultlab.formats": lambda df, cfg: _rows(df, df["fault_model"] == "none"),
    # the fault-free training run every faulty run is classified against (mlp / digits, 2
    # epochs: see the comment in faultlab/_training_study.py's quick config)
    "faultlab.training": lambda df, cfg: _rows(df, df["key"] == "clean"),
    # the fault-free char-gpt's next-character accuracy (2 x 64, 200 iterations, pydoc: 0.361
    # on 8 val windows; chance 1/103)
    "faultlab.lm": lambda df, cfg: _rows(df, df["fault_model"] == "none"),
    # every cell stores the fault-free accuracy it is read against (mlp / digits: 0.980)
    "faultlab.vulnerability": lambda df, cfg: [
        (r.key, r.dataset, json.loads(r.extra)["clean_accuracy"]) for r in df.head(1).itertuples()],
    # the classical network, level 0 (digits 0.950, mnist5k 0.857)
    "quantum.creep": lambda df, cfg: _rows(df, df["key"].str.match(r"train\|.*\|level-0\|")),
    # end-to-end backpropagation (resnet20 / digits: 0.961 on 1 torch thread, 0.966 on 2; the
    # old quick config, resnet20 + vit-tiny on 256 mnist5k images for 1 epoch, was at chance)
    "localtrain.compare": lambda df, cfg: _rows(df, df["method"] == "e2e"),
    # the SNN at its full T, converted and directly trained (mlp / digits: 0.899, 0.911)
    "spiking.dynamic-confidence": lambda df, cfg: _max_t(df, cfg, "|"),
    "spiking.faults": lambda df, cfg: _max_t(df, cfg, "|clean|"),  # 0.899, 0.911
}

# Items dropped to keep the suite short; the baseline item is untouched (see the module docstring).
OVERRIDES = {
    # the five local rules train after E2E, each from the same seed: only E2E is read here (the
    # full quick run, ~15 s on 2 idle cores, stores the same E2E row, 0.96648)
    "localtrain.compare": {"rules": ("e2e",)},
    # level 0 trains from its own checkpoint key (the budget fields, levels excluded); the
    # quantum levels and the fault sweep are ~3/4 of the quick run (same level-0 rows)
    "quantum.creep": {"levels": (0,), "fault_trials": 0},
    # the variants are built and attacked one after another from the same zoo model: only the
    # unprotected one's clean row is read here (its build, maps and attacks stay in the run)
    "faultlab.mitigation": {"variants": ("unprotected",)},
    # the fault-free pass is measured before any trial: one site and trial keep the run short
    "faultlab.lm": {"sites": ("weights",), "rates": (1e-5,), "trials": 1},
    # the reference trains first, from the run's seed; the faulty runs after it are not read
    "faultlab.training": {"rates": (1e-6,), "trials": 1, "policies": ("none",)},
}


def _registered() -> list[str]:
    return sorted(ep.name for ep in importlib.metadata.entry_points(group="hwlab.studies"))


def test_every_registered_study_has_a_baseline_here():
    missing = sorted(set(_registered()) - set(BASELINE))
    assert not missing, f"add the baseline rows of {missing} to BASELINE in this file"


@pytest.mark.parametrize("name", sorted(BASELINE))
def test_quick_baseline_is_well_above_chance(name, tmp_path):
    store = Store(tmp_path / "quick.sqlite")
    run_id = run_study(name, store=store, quick=True, **OVERRIDES.get(name, {}))
    df = store.results(run_id=run_id)
    rows = BASELINE[name](df, store.config(run_id))
    assert rows, f"{name}: no baseline row in its quick run"
    classes = {ds: load(ds, "test").num_classes for ds in {ds for _, ds, _ in rows}}
    low = [(key, acc, 1 / classes[ds] + MARGIN) for key, ds, acc in rows
           if not acc >= 1 / classes[ds] + MARGIN]
    assert not low, f"{name}: quick baseline rows below chance + {MARGIN}: {low}"
