"""The Language models page: SDC curves, the generation table and the PVF table show what the
faultlab.lm rows in the store hold."""

from __future__ import annotations

import numpy as np
import pytest

from hwlab.store import Store


def _rows():
    rng = np.random.default_rng(0)
    rows = [dict(key="clean", variant="fault-free", fault_model="none", fault_rate=0.0,
                 accuracy=0.60, sdc=0.0, loss=1.58,
                 extra={"bpc": 2.287, "gen_exact_match": 1.0, "gen_first_divergence": 48.0,
                        "gen_nonfinite": 0.0})]
    for site in ("weights", "kv-prefill"):
        for rate in (1e-6, 1e-5):
            for t in range(3):
                sdc = float(rng.random() * rate * 1e4)
                rows.append(dict(key=f"{site}|{rate!r}|trial={t}", variant=site,
                                 fault_model="bitflip", fault_rate=rate, trial=t,
                                 accuracy=0.6 - sdc / 2, sdc=sdc, loss=1.6,
                                 extra={"bpc": 2.3 + sdc, "gen_exact_match": 1 - sdc,
                                        "gen_first_divergence": 48 * (1 - sdc),
                                        "gen_nonfinite": 0.0, "stage": "both"}))
    for comp in ("q", "mlp-up"):
        for field, p in (("sign", 0.3), ("exponent", 0.6), ("mantissa", 0.02)):
            rows.append(dict(key=f"pvf|{comp}|{field}", variant="pvf", fault_model="bitflip",
                             fault_rate=None, accuracy=None,
                             extra={"component": comp, "field": field, "pvf": p, "n": 100,
                                    "pvf_low": p / 2, "pvf_high": min(1.0, p * 1.5)}))
    return rows


@pytest.fixture(scope="module")
def lm_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "hwlab.sqlite"
    store = Store(path)
    run_id = store.open_run("faultlab.lm", {"dataset": "pydoc"})
    store.add_results(run_id, [dict(r, module="faultlab", method="lm", model="char-gpt",
                                    dataset="pydoc", seed=0) for r in _rows()])
    store.finish_run(run_id)
    return str(path), store.results()


def test_lm_page_shows_the_sweep_generation_and_pvf(app_at, lm_store, ui):
    path, df = lm_store
    at = app_at(path, "lm")
    assert not at.exception
    gen, pvf = (t.value for t in at.dataframe)
    sweep = df[(df["variant"] != "pvf") & (df["fault_rate"] > 0)]
    for (site, rate), g in sweep.groupby(["variant", "fault_rate"]):
        row = gen[(gen["site"] == site) & (gen["BER"] == rate)].iloc[0]
        assert row["trials"] == 3 and row["sdc"] == pytest.approx(g["sdc"].mean())
        assert row["exact_match"] == pytest.approx(1 - g["sdc"].mean())
    assert len(pvf) == 6 and set(pvf["component"]) == {"q", "mlp-up"}
    assert pvf.set_index(["component", "field"]).loc[("q", "exponent"), "pvf"] == 0.6
    curves = ui.frame_with(at.get("vega_lite_chart")[0], "series")
    assert {"weights", "kv-prefill"} <= set(curves["series"])
    assert "Fault-free: 2.287 bits per character" in ui.texts(at)


def test_lm_page_without_rows_names_the_study(app_at, tmp_path, ui):
    at = app_at(tmp_path / "empty.sqlite", "lm")
    assert not at.exception and "`faultlab.lm`" in ui.texts(at)
