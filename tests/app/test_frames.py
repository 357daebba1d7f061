"""The pure computations behind the charts: Pareto fronts, confidence intervals, aggregation."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app._demo import fake_results
from app._frames import (
    aggregate_points,
    compare_runs,
    fixed_t,
    log_fits,
    numeric_metrics,
    pareto_front,
    series_colors,
    summarize,
)
from hwlab._figure_data import with_metrics


def _brute_front(x, y):
    """Indices of points no other point dominates (x minimised, y maximised): O(n^2)."""
    keep = []
    for i in range(len(x)):
        dominated = any(x[j] <= x[i] and y[j] >= y[i] and (x[j] < x[i] or y[j] > y[i])
                        for j in range(len(x)))
        if not dominated:
            keep.append(i)
    return keep


def test_pareto_front_small_example():
    df = pd.DataFrame({"memory_bytes": [10, 20, 30, 15, 40],
                       "accuracy": [0.5, 0.9, 0.95, 0.4, 0.95]})
    front = pareto_front(df, "memory_bytes", "accuracy")
    assert front["memory_bytes"].tolist() == [10, 20, 30]  # 15 and 40 are dominated
    assert front["accuracy"].tolist() == [0.5, 0.9, 0.95]


def test_pareto_front_never_on_fault_rate():
    # the fault rate is the condition of an experiment, not an objective: no front on it
    df = pd.DataFrame({"fault_rate": [1e-6, 1e-5, 1e-4], "accuracy": [0.9, 0.9, 0.5]})
    assert pareto_front(df, "fault_rate", "accuracy").empty


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=40))
def test_pareto_front_matches_brute_force(pairs):
    x, y = zip(*pairs)
    df = pd.DataFrame({"latency_ms": np.array(x, float), "accuracy": np.array(y, float)})
    front = pareto_front(df, "latency_ms", "accuracy")
    expected = df.iloc[_brute_front(x, y)].drop_duplicates()
    got = set(map(tuple, front[["latency_ms", "accuracy"]].to_numpy()))
    assert got == set(map(tuple, expected.to_numpy()))
    assert len(front) == len(got)  # one point per distinct non-dominated pair


def test_pareto_front_rejects_bad_direction():
    df = pd.DataFrame({"a": [1.0], "b": [2.0]})
    with pytest.raises(ValueError, match="x_better of pareto_front must be 'min' or 'max'"):
        pareto_front(df, "a", "b", x_better="up")


def test_summarize_proportion_interval_and_trial_rule():
    df = pd.DataFrame({"v": ["a"] * 3 + ["b"] * 2, "accuracy": [0.8, 0.9, 1.0, 0.05, 0.95],
                       "extra": ['{"n_samples": 10}'] * 5})
    out = summarize(df, ["v"]).set_index("v")
    assert out.loc["a", "mean"] == pytest.approx(0.9)
    assert 0 <= out.loc["a", "lo"] < 0.9 < out.loc["a", "hi"] <= 1  # never outside [0, 1]
    assert out.loc["b", "lo"] >= 0 and out.loc["b", "hi"] <= 1  # a Student-t band: -5 .. +6
    assert out["band"].tolist() == [True, False]  # 2 trials: the charts draw them instead
    assert out["n"].tolist() == [3, 2]
    lat = summarize(pd.DataFrame({"g": 1, "latency_ms": [1.0, 2.0, 3.0]}), ["g"], "latency_ms")
    half = 4.302652729911275 * 1.0 / np.sqrt(3)  # not a proportion: Student-t, t(0.975, 2)
    assert lat["lo"].iloc[0] == pytest.approx(2 - half)


def test_summarize_rejects_bad_confidence():
    with pytest.raises(ValueError, match="confidence of summarize must be in"):
        summarize(pd.DataFrame({"g": [1], "accuracy": [1.0]}), ["g"], confidence=1.5)


def test_log_fits():
    assert log_fits(pd.Series([1e-7, 1e-4]))
    assert not log_fits(pd.Series([0.5, 0.9]))  # spans less than 50x
    assert not log_fits(pd.Series([0.0, 10.0, 1000.0]))  # a zero cannot go on a log axis
    assert not log_fits(pd.Series([], dtype=float))


def test_aggregate_points_averages_trials_of_fault_free_rows():
    df = fake_results(trials=4)
    df["run_id"] = "r" + df["run"].astype(str)
    m = with_metrics(df)
    pts = aggregate_points(m, "params", "accuracy")
    q = m[(m["method"] == "creep") & (m["dataset"] == "digits") & (m["variant"] == "level-1")]
    hit = pts[(pts["method"] == "creep") & (pts["dataset"] == "digits")
              & (pts["variant"] == "level-1")]
    assert len(q) == 2 and hit["n"].tolist() == [2]
    assert hit["accuracy"].iloc[0] == pytest.approx(q["accuracy"].mean())
    assert (pts["fault_rate"].fillna(0) == 0).all()  # faulty rows are conditions, not points
    assert set(pts["series"]) >= {"quantum · creep", "hwlab · zoo"}
    with pytest.raises(ValueError, match="y of aggregate_points must be a metric other than"):
        aggregate_points(m, "accuracy", "accuracy")


def test_front_skips_oracles_and_conditions():
    df = pd.DataFrame({"timesteps": [2.0, 5.0, 8.0], "accuracy": [0.99, 0.9, 0.95],
                       "oracle": [True, False, False]})
    assert pareto_front(df, "timesteps", "accuracy")["timesteps"].tolist() == [5.0, 8.0]
    df = pd.DataFrame({"trial_ms": [1.0, 2.0], "accuracy": [0.9, 0.95]})
    assert pareto_front(df, "trial_ms", "accuracy").empty  # a condition, not an objective


def test_series_colors_are_fixed_whatever_is_shown():
    a = series_colors(["hwlab · zoo", "quantum · creep", "localtrain · dgl"])
    b = series_colors(["quantum · creep"])
    assert a["quantum · creep"] == b["quantum · creep"]
    many = series_colors([f"localtrain · {r}" for r in ("e2e", "dgl", "infopro", "man",
                                                       "auglocal", "fr")]
                         + ["hwlab · zoo", "faultlab · fault-injection", "faultlab · ft-clipact",
                            "faultlab · mitigation", "faultlab · memory-protection",
                            "spiking · converted", "quantum · creep"])
    assert len(set(many.values())) == len(many) == 13  # 13 series, 13 distinct colours


def test_compare_runs_labels_what_differs_and_joins_the_rest():
    a = pd.DataFrame({"module": "faultlab", "method": "fi", "model": "m", "dataset": "d",
                      "variant": "baseline", "dtype": "float32", "fault_model": "bitflip",
                      "fault_rate": [1e-5, 1e-5, 1e-4], "timesteps": None,
                      "accuracy": [0.9, 0.8, 0.5]})
    b = a.assign(dtype="float16", accuracy=[0.7, 0.7, 0.2])
    both, keys, labels = compare_runs(a, b)
    assert labels == {"dtype": ("float32", "float16")} and "fault_rate" in keys
    assert both["accuracy B - A"].round(6).tolist() == [-0.15, -0.3]


def test_fake_results_shape():
    df = fake_results(n_rows=5000, seed=3)
    assert len(df) == 5000 and not df.duplicated(["run", "key"]).any()
    assert fake_results(seed=3).equals(fake_results(seed=3))
    with pytest.raises(ValueError, match="n_rows of fake_results must be a positive int"):
        fake_results(n_rows=0)


def test_numeric_metrics_and_fixed_t():
    import json

    df = fake_results()  # extra as dicts; the store holds JSON text
    m = with_metrics(df.assign(extra=[json.dumps(e) if isinstance(e, dict) else None
                                      for e in df["extra"]]))
    assert numeric_metrics(m) == ["accuracy", "inference_ms", "train_step_ms", "trial_ms",
                                  "model_bytes", "train_memory_bytes", "protection_overhead",
                                  "timesteps", "params"]
    t = fixed_t(pd.Series(["fixed-T1", "fixed-T16", "dynamic-confidence", "fixed-Tx"]))
    assert t.iloc[:2].tolist() == [1, 16] and t.iloc[2:].isna().all()
