"""Issue 22: the spiking.dynamic-confidence figures must not depend on the machine, and the
converted path trains its QCFS ANN with the papers' recipe (SGD, momentum 0.9, weight decay).

Root cause found: the code of the converted and direct paths gives bit-identical recordings before
and after the graph-based ``with_qcfs`` / ``convert`` and the study contract, at the same torch
thread count. The study ran with the caller's thread count (all cores on a serial CLI run, one on
process / Dask workers), and float sums depend on it: on mnist5k the default converted VGG-s got
A* 98.2 % at T* 15 with one thread and 97.2 % at T* 11 with two, from the same code and seed. The
QCFS ANN was trained with Adam and no weight decay, unlike QCFS and the Dynamic Confidence code;
such an ANN leans on its exact 4-level grid (its clipped-ReLU twin lost 4-6 points at seed 0), so
its SNN peaked near T = 13-24 and then drifted away from the ANN as T grew.
"""

from __future__ import annotations

import pytest
import torch

import spiking as sp
from hwlab.data import load
from hwlab.seeds import seeded, torch_threads
from hwlab.studies import get_study
from hwlab.train import fit
from spiking import _study
from spiking._pipeline import ann_train_config, qcfs_ann


def test_method_item_runs_with_the_configured_threads_and_restores_the_callers(monkeypatch):
    seen = []
    monkeypatch.setattr(_study, "_method_rows",
                        lambda cfg, method: seen.append(torch.get_num_threads()) or [])
    cfg = get_study("spiking.dynamic-confidence").make_config(quick=True)
    assert cfg.threads == 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _study._method_item(_study.MethodItem(cfg, "converted"))
        assert seen == [1] and torch.get_num_threads() == 2
        _study._method_item(_study.MethodItem(
            get_study("spiking.dynamic-confidence").make_config(quick=True, threads=0), "direct"))
        assert seen == [1, 2]  # threads=0: the caller's count
    finally:
        torch.set_num_threads(before)


def test_the_qcfs_ann_trains_with_the_papers_recipe():
    cfg = get_study("spiking.dynamic-confidence").make_config()
    tc = ann_train_config(cfg)
    assert (tc.optimizer, tc.lr, tc.momentum, tc.weight_decay, tc.schedule) == (
        "sgd", 0.1, 0.9, 5e-4, "cosine")
    assert (tc.epochs, tc.batch_size, tc.seed) == (cfg.ann_epochs, cfg.batch_size, cfg.seed)
    faults = get_study("spiking.faults").make_config()  # its own documented figures: unchanged
    assert (ann_train_config(faults).optimizer, ann_train_config(faults).weight_decay) == (
        "adam", 0.0)


@pytest.fixture(scope="module")
def recipe_net():
    """The quick config's converted path (QCFS MLP, L=4, digits) built as the study builds it."""
    cfg = get_study("spiking.dynamic-confidence").make_config(quick=True)
    train, test = (load(cfg.dataset, s, seed=cfg.seed) for s in ("train", "test"))
    with torch_threads(cfg.threads), seeded(cfg.seed):
        ann = qcfs_ann(cfg.model, train.in_shape, train.num_classes, cfg.levels)
        fit(ann, train, ann_train_config(cfg))
        ann.eval()
        snn = sp.convert(ann)
        with torch.no_grad():
            logits = ann(test.x)
            acc = snn(test.x, 64).cumsum(dim=1)  # N x 64 x classes running sums
    return test, logits, acc


def test_recipe_snn_follows_its_qcfs_ann_as_steps_grow(recipe_net):
    test, logits, acc = recipe_net
    ann_pred = logits.argmax(dim=1)
    ann_acc = float((ann_pred == test.y).double().mean())
    assert ann_acc >= 0.96  # Adam at lr 1e-3 without weight decay: 0.905 here
    for t in (8, 16, 32, 64):
        agree = float((acc[:, t - 1].argmax(dim=1) == ann_pred).double().mean())
        snn_acc = float((acc[:, t - 1].argmax(dim=1) == test.y).double().mean())
        assert agree >= 0.98, (t, agree)  # old recipe: 0.961 at T = 8 and 16, 0.966 at 64
        assert snn_acc >= ann_acc - 0.01, (t, snn_acc, ann_acc)
    # the time-averaged readout converges to the ANN's logits (rate-coded QCFS)
    err = [float((acc[:, t - 1] / t - logits).abs().mean()) for t in (8, 64)]
    assert err[1] < err[0]
