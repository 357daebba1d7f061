"""The pure computations behind the charts: Pareto fronts, confidence intervals, aggregation."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app._demo import fake_results
from app._frames import aggregate_points, fixed_t, log_fits, mean_ci, numeric_metrics, pareto_front


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


def test_pareto_front_fault_rate_is_maximised():
    # tolerating a higher fault rate at the same accuracy is better
    df = pd.DataFrame({"fault_rate": [1e-6, 1e-5, 1e-4], "accuracy": [0.9, 0.9, 0.5]})
    front = pareto_front(df, "fault_rate", "accuracy")
    assert front["fault_rate"].tolist() == [1e-5, 1e-4]


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


def test_mean_ci_student_t():
    df = pd.DataFrame({"v": ["a"] * 3 + ["b"], "accuracy": [0.8, 0.9, 1.0, 0.7]})
    out = mean_ci(df, ["v"]).set_index("v")
    half = 4.302652729911275 * 0.1 / np.sqrt(3)  # t(0.975, 2) * s / sqrt(n)
    assert out.loc["a", "mean"] == pytest.approx(0.9)
    assert out.loc["a", "lo"] == pytest.approx(0.9 - half)
    assert out.loc["a", "hi"] == pytest.approx(0.9 + half)
    assert out.loc["b", "lo"] == out.loc["b", "hi"] == pytest.approx(0.7)  # one trial: no band
    assert out["n"].tolist() == [3, 1]


def test_mean_ci_rejects_bad_confidence():
    with pytest.raises(ValueError, match="confidence of mean_ci must be in"):
        mean_ci(pd.DataFrame({"g": [1], "accuracy": [1.0]}), ["g"], confidence=1.5)


def test_log_fits():
    assert log_fits(pd.Series([1e-7, 1e-4]))
    assert not log_fits(pd.Series([0.5, 0.9]))  # spans less than 50x
    assert not log_fits(pd.Series([0.0, 10.0, 1000.0]))  # a zero cannot go on a log axis
    assert not log_fits(pd.Series([], dtype=float))


def test_aggregate_points_averages_trials():
    df = fake_results(trials=4)
    df["run_id"] = "r"
    pts = aggregate_points(df, "fault_rate", "accuracy")
    camp = df[(df["variant"] == "ranger") & (df["fault_model"] == "stuck1")
              & (df["fault_rate"] == 1e-5)]
    hit = pts[(pts["variant"] == "ranger") & (pts["fault_model"] == "stuck1")
              & (pts["fault_rate"] == 1e-5)]
    assert len(camp) == 4 and hit["n"].tolist() == [4]
    assert hit["accuracy"].iloc[0] == pytest.approx(camp["accuracy"].mean())
    assert set(pts["series"]) >= {"faultlab · campaign", "faultlab · clipact"}
    with pytest.raises(ValueError, match="y of aggregate_points must be a metric other than"):
        aggregate_points(df, "accuracy", "accuracy")


def test_numeric_metrics_and_fixed_t():
    df = fake_results()
    assert numeric_metrics(df) == ["accuracy", "memory_bytes", "latency_ms", "fault_rate",
                                   "timesteps", "params"]
    t = fixed_t(pd.Series(["fixed-T1", "fixed-T16", "dynamic-confidence", "fixed-Tx"]))
    assert t.iloc[:2].tolist() == [1, 16] and t.iloc[2:].isna().all()


def test_fake_results_shape():
    df = fake_results(n_rows=5000, seed=3)
    assert len(df) == 5000 and not df.duplicated(["study", "key"]).any()
    assert fake_results(seed=3).equals(fake_results(seed=3))
    with pytest.raises(ValueError, match="n_rows of fake_results must be a positive int"):
        fake_results(n_rows=0)
