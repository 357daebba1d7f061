"""The faultlab.mitigation study on a tiny config: every variant, paired nested maps, resume."""

from __future__ import annotations

import json

import pytest

from faultlab._mitigation_study import VARIANTS, table
from hwlab.store import Store
from hwlab.studies import get_study, run_study

TINY = {"rates": (0.02, 0.05), "trials": 2, "eval_size": 100, "train_epochs": 1, "train_size": 400,
        "select_size": 200, "search_maps": 1, "search_rounds": 1, "harden_trials": 2,
        "latency_repeats": 1, "attack_seeds": 0}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("mitigation") / "m.sqlite")
    run_id = run_study("faultlab.mitigation", store=store, **TINY)
    return store, run_id


def test_every_variant_on_the_same_nested_maps(run, same_rows_as_reference):
    store, run_id = run
    df = store.results(run_id=run_id)
    same_rows_as_reference(df, "mitigation_study_reference")  # as the study's own loop gave them
    clean = df[df.key.str.startswith("clean|")]
    faulty = df[~df.key.str.startswith("clean|")].copy()
    assert sorted(clean.variant) == sorted(VARIANTS)
    assert len(faulty) == len(VARIANTS) * 2 * 2  # variants x rates x trials
    faulty["x"] = faulty.extra.map(json.loads)
    faulty["map"] = faulty.x.map(lambda e: e["map"])
    faulty["n_raw"] = faulty.x.map(lambda e: e["n_raw"])
    plain = faulty[~faulty.variant.isin(("secded", "proact"))]  # proact: + its thresholds
    # Paired: at each (rate, trial) every bit-flip variant saw exactly the same raw map.
    assert (plain.groupby(["fault_rate", "trial"]).map.nunique() == 1).all()
    assert plain.groupby("trial").map.nunique().min() == 2  # a new map per rate ...
    by = plain[plain.variant == "unprotected"].set_index(["trial", "fault_rate"]).n_raw
    assert all(by[(t, 0.02)] < by[(t, 0.05)] for t in (0, 1))  # ... nested: more at 5 %
    assert plain.groupby("trial").map.agg(set).map(len).eq(2).all()
    ecc = faulty[faulty.variant == "secded"]
    assert set(ecc.fault_model) == {"bitflip@secded72_64"}
    assert all(e["corrected_words"] > 0 and e["code_overhead"] == 0.125 for e in ecc.x)
    # The hardening plan only removes faults: never more than the raw map.
    hard = faulty[faulty.variant == "harden"]
    assert (hard.x.map(lambda e: e["n_faults"]) <= hard.n_raw).all()
    assert (faulty.accuracy.between(0, 1)).all()


def test_overheads_and_table(run):
    store, run_id = run
    df = store.results(run_id=run_id)
    t = table(df).set_index("variant")
    assert list(t.index) == list(VARIANTS)
    assert t.loc["secded", "memory_overhead"] == pytest.approx(0.125)
    assert t.loc["unprotected", "memory_overhead"] == 0.0
    assert t.loc["randbet", "memory_overhead"] == 0.0 and t.loc["randbet", "train_seconds"] > 0
    assert 0 < t.loc["clipact-zero", "memory_overhead"] < 1e-3  # one float per site
    assert 0 < t.loc["harden", "memory_overhead"] <= 2.0
    assert t.loc["unprotected", "latency_overhead"] == 1.0
    assert {"acc@0.02", "acc@0.05", "clean"} <= set(t.columns)
    extra = json.loads(df.set_index("key").loc["clean|harden", "extra"])
    assert extra["pareto"] and extra["plan"] and extra["hardware_decoder_untimed"] is True


def test_resume_writes_nothing_new(run):
    store, run_id = run
    n = len(store.results(run_id=run_id))
    assert run_study("faultlab.mitigation", store=store, **TINY) == run_id  # same config: same
    assert len(store.results(run_id=run_id)) == n
    keep = {**TINY, "variants": ("unprotected", "secded"), "ecc_policy": "keep"}
    other = run_study("faultlab.mitigation", store=store, **keep)
    assert other != run_id  # another config is another run
    df = store.results(run_id=other)
    zero = store.results(run_id=run_id)
    acc = df[df.variant == "secded"].set_index("key").accuracy
    acc0 = zero[zero.variant == "secded"].set_index("key").accuracy
    assert (acc >= acc0.loc[acc.index] - 0.02).all()  # zeroing 8-weight words never helps here


def test_config_errors():
    study = get_study("faultlab.mitigation")
    with pytest.raises(ValueError, match=r"rates of study faultlab.mitigation must be"):
        study.make_config(rates=(0.0,))
    with pytest.raises(ValueError, match=r"variants of study faultlab.mitigation must be a "
                       r"non-empty tuple from unprotected"):
        study.make_config(variants=("fap",))
    with pytest.raises(ValueError, match=r"model of study faultlab.mitigation must be a model "
                       r"spec: a zoo name .*got 'resnet99'"):
        study.make_config(model="resnet99")
    assert study.make_config(dtype="float32").resolved_rates() == (1e-5, 3e-5, 1e-4)


def test_process_executor_gives_the_serial_rows(run, tmp_path):
    """Items share one model per variant: workers must get private copies (plain pickled bytes),
    not torch shared-memory tensors that two workers would fault at once."""
    store, run_id = run
    serial = store.results(run_id=run_id).set_index("key")
    other = Store(tmp_path / "p.sqlite")
    rid = run_study("faultlab.mitigation", store=other, executor="process:2",
                    **{**TINY, "variants": ("unprotected",)})
    rows = other.results(run_id=rid).set_index("key")
    faulty = rows.index[~rows.index.str.startswith("clean|")]
    assert len(faulty) == 4
    assert (rows.loc[faulty, "accuracy"] == serial.loc[faulty, "accuracy"]).all()


USER_MODEL = """
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))  # residual, functional ReLUs


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.stem = nn.Conv2d(in_shape[0], 16, 3, padding=1)
        self.block = Block(16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.head(self.block(F.relu(self.stem(x))).mean((2, 3)))


def build(in_shape=(1, 8, 8), num_classes=10):
    return Net(in_shape, num_classes)
"""


def test_the_cli_runs_the_study_on_a_users_residual_model_and_weights(tmp_path, monkeypatch):
    """`hwlab run faultlab.mitigation --model mymod:build --weights w.pt --quick` on a model the
    zoo does not have: the unprotected variant is the user's weights; the retrained ones use
    hwlab's default recipe (here with the user's own step)."""
    import torch

    from hwlab import cli
    from hwlab.data import load
    from hwlab.train import TrainConfig, evaluate, fit

    (tmp_path / "mymod_mitigation.py").write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    import mymod_mitigation

    torch.manual_seed(0)
    net = mymod_mitigation.build()
    fit(net, load("digits", "train"), TrainConfig(epochs=12, batch_size=64, lr=1e-2, seed=0))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    store = str(tmp_path / "s.sqlite")
    argv = ["run", "faultlab.mitigation", "--model", "mymod_mitigation:build", "--weights",
            str(tmp_path / "w.pt"), "--dataset", "digits", "--dtype", "float32", "--quick",
            "--variants", "unprotected,clipping,clipact-zero,secded", "--rates", "1e-4,1e-3",
            "--trials", "2", "--eval-size", "180", "--train-epochs", "2", "--lr", "0.01",
            "--store", store]
    assert cli.main(argv) == 0
    df = Store(store).results()
    clean = df[df.key.str.startswith("clean|")].set_index("variant")
    assert set(clean.model) == {"mymod_mitigation:build"}
    test = load("digits", "test")
    assert clean.loc["unprotected", "accuracy"] == pytest.approx(evaluate(net.eval(), test))
    assert clean.loc["unprotected", "accuracy"] > 0.6
    retrained = json.loads(clean.loc["clipping", "extra"])  # a fresh user model, 2 epochs
    assert retrained["w_max"] == 0.1 and retrained["train_seconds"] > 0
    faulty = df[~df.key.str.startswith("clean|")]
    assert len(faulty) == 4 * 2 * 2 and faulty.accuracy.between(0, 1).all()
    extra = json.loads(clean.loc["clipact-zero", "extra"])
    assert set(extra["thresholds"]) == {"relu()", "block.relu()", "block.relu()@2"}


def test_every_int8_variant_under_the_bit_flip_attack_beside_random_faults(tmp_path):
    """Both threats in one table: PBS flips to chance per variant and attack seed (SEC-DED:
    the ECC-aware attacker, counted in physical flips), the same number of random flips."""
    store = Store(tmp_path / "a.sqlite")
    over = {**TINY, "variants": ("unprotected", "clipping", "ranger", "secded"),
            "attack_seeds": 2, "attack_flips": 40, "eval_size": 200}
    run_id = run_study("faultlab.mitigation", store=store, **over)
    df = store.results(run_id=run_id)
    attack = df[df.key.str.startswith("attack|")]
    assert sorted(attack.key) == [f"attack|{v}|seed={s}" for v in ("clipping", "ranger",
                                                                     "secded", "unprotected")
                                  for s in (0, 1)]
    assert set(attack[attack.variant != "secded"].fault_model) == {"pbs"}
    assert set(attack[attack.variant == "secded"].fault_model) == {"pbs-ecc-aware"}
    assert attack.fault_rate.isna().all()
    ex = attack.extra.map(json.loads)
    for e in ex[attack.variant == "secded"]:  # each data flip costs >= 1 physical flip ...
        assert e["flips"] >= max(e["data_flips"], 3) and e["data_flips"] <= 40
        if e["reached"]:  # ... and chance is counted in physical flips
            assert e["flips_to_chance"] >= 3
    unprot = attack[attack.variant == "unprotected"]
    assert all(json.loads(e)["reached"] for e in unprot.extra)  # lenet5 int8 falls to chance
    assert (unprot.accuracy <= 0.11).all()
    assert all(e["random_same_flips_accuracy"] > 0.9 for e in ex[attack.variant == "unprotected"])
    assert all(e["data_flips"] <= 40 for e in ex)  # the budget holds for every variant
    t = table(df).set_index("variant")
    assert t.loc["unprotected", "pbs_flips_median"] <= 40
    assert t.loc["unprotected", "pbs_reached"] == "2/2"
    secded = [e for e in ex[attack.variant == "secded"]]
    assert t.loc["secded", "pbs_reached"] == f"{sum(e['reached'] for e in secded)}/2"
    assert run_study("faultlab.mitigation", store=store, **over) == run_id  # resumed: nothing
    assert len(store.results(run_id=run_id)) == len(df)


def test_float32_weight_side_defences_on_the_paired_maps(tmp_path):
    """saturating (tanh of stored raw weights, fine-tuned) and scaled (c = 16) beside the
    unprotected float32 model: the same rates and trials, the bound of tanh holds."""
    store = Store(tmp_path / "f.sqlite")
    over = {**TINY, "dtype": "float32", "rates": (1e-4, 1e-3),
            "variants": ("unprotected", "saturating", "scaled")}
    run_id = run_study("faultlab.mitigation", store=store, **over)
    t = table(store.results(run_id=run_id)).set_index("variant")
    assert list(t.index) == ["unprotected", "saturating", "scaled"]
    assert t.loc["saturating", "clean"] >= t.loc["unprotected", "clean"] - 0.05  # fine-tuned
    assert t.loc["scaled", "clean"] == pytest.approx(t.loc["unprotected", "clean"], abs=0.011)
    assert t.loc["saturating", "acc@0.001"] > t.loc["unprotected", "acc@0.001"]
    with pytest.raises(ValueError, match=r"variants of study faultlab.mitigation must be "
                                         r"variants of the stored dtype"):
        get_study("faultlab.mitigation").make_config(variants=("saturating",))
