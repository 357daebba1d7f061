"""The Key figures page draws faultlab.lm's figure (SDC vs BER per fault site and stage)."""

import json

from hwlab.store import Store


def test_key_figures_page_draws_the_lm_sweep(app_at, ui, tmp_path):
    store = Store(tmp_path / "lm.sqlite")
    run_id = store.open_run("faultlab.lm", {"trials": 3})
    base = {"module": "faultlab", "method": "lm", "model": "char-gpt", "dataset": "pydoc"}
    rows = [{**base, "key": "clean", "variant": "fault-free", "fault_model": "none",
             "fault_rate": 0.0, "accuracy": 0.6, "sdc": 0.0, "loss": 1.58,
             "extra": {"n_samples": 16}}]
    for site, sdc in (("weights", 0.7), ("kv-decode", 0.02)):
        for t in range(3):
            rows.append({**base, "key": f"{site}|1e-06|trial={t}", "variant": site,
                         "fault_model": "bitflip", "fault_rate": 1e-6, "trial": t,
                         "accuracy": 0.3, "sdc": sdc + 0.01 * t, "loss": 2.0,
                         "extra": {"n_samples": 16}})
    rows.append({**base, "key": "pvf|q|sign", "variant": "pvf", "fault_model": "bitflip-1",
                 "sdc": 0.01, "extra": {"component": "q", "field": "sign", "pvf": 0.14}})
    store.add_results(run_id, rows)
    store.finish_run(run_id)
    at = app_at(store.path, "figures")
    assert not at.exception and not at.error
    charts = at.get("vega_lite_chart")
    titles = [str(json.loads(c.proto.spec).get("title")) for c in charts]
    lm = [c for c, t in zip(charts, titles) if "faultlab.lm · char-gpt · pydoc" in t]
    assert lm, titles
    frames = [f for f in ui.chart_frames(lm[0]) if "series" in f.columns]
    series = set().union(*(set(f["series"].dropna()) for f in frames))
    assert {"weights", "kv-decode"} <= series and "pvf" not in series
