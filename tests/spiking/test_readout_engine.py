"""The SNN fault sweep on faultlab's one trial engine gives what record + inject give: the same
maps, the same spikes (rate-code noise per batch), the same fixed-T and exit-rule figures."""

from __future__ import annotations

import pytest

import faultlab as fl
import spiking as sp
from hwlab.seeds import derive_seed
from hwlab.store import Store
from spiking._readout import StepReadout, indexed, readout_metrics
from spiking._rules import apply_rule, fixed_steps


@pytest.mark.parametrize("which", ["converted", "direct"])
def test_engine_trials_equal_record_and_inject(which, converted, direct, digits):
    net = converted[1] if which == "converted" else direct
    test = digits["test"]
    rule = sp.dynamic_confidence_rule(30.0)  # the official divisor
    steps, t_star, threshold, batch = 8, 5, 0.7, 64  # 3 batches: the noise seed per batch
    metrics = readout_metrics(steps, t_star, rule, threshold)
    readout = StepReadout(net, test.x.shape[1:], steps, 3, batch).eval()
    ev = fl.evaluation(readout, (indexed(test.x), test.y), metrics, batch_size=batch,
                       delayed_start=False, full=False)
    plan = {f"r{k}": fl.Trial((fl.BitFlip(rate=2e-3),), k, 0, map_seed=derive_seed(7, f"map{k}"))
            for k in range(3)}
    store = Store.memory()
    store.ensure_columns([m.__name__ for m in metrics])
    run_id = store.open_run("x", {})
    with fl.runner(ev) as run:
        run.run(store, run_id, plan)
    rows = store.results(run_id=run_id).set_index("key")
    for k in range(3):
        with fl.inject(net, fl.BitFlip(rate=2e-3), seed=derive_seed(7, f"map{k}")):
            rec = sp.record(net, test, steps, batch_size=batch, seed=3)
        fixed, dc = fixed_steps(rec, t_star), apply_rule(rec, rule, threshold)
        r = rows.loc[f"r{k}"]
        assert r.fixed_accuracy == pytest.approx(fixed.accuracy, abs=1e-12)
        assert r.rule_accuracy == pytest.approx(dc.accuracy, abs=1e-12)
        assert r.rule_steps == pytest.approx(dc.mean_steps, abs=1e-12)
    clean = fixed_steps(sp.record(net, test, steps, batch_size=batch, seed=3), t_star).accuracy
    assert (rows.fixed_accuracy != clean).any()  # the faults were there
