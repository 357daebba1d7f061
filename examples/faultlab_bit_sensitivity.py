"""Which bits of a float32 weight matter? Accuracy of a zoo LeNet-5 on MNIST under 100 flips
restricted to one bit field at a time (sign, exponent, mantissa), 10 fault maps each.

    .venv/bin/python examples/faultlab_bit_sensitivity.py
"""

from __future__ import annotations

import pandas as pd
import torch

import faultlab as fl
from hwlab import data, zoo

FIELDS = {"sign": (31,), "exponent": tuple(range(23, 31)), "mantissa": tuple(range(23))}


def main() -> None:
    torch.set_num_threads(1)
    model = zoo.pretrained("lenet5", "mnist5k")
    test = data.load("mnist5k", "test")
    runs = [fl.campaign(model, test, [fl.BitFlip(count=100, bits=bits)], trials=10, seed=0,
                        variant=field, model_name="lenet5", clean=False)
            for field, bits in FIELDS.items()]
    summary = fl.summarize(pd.concat(runs), by=("variant",))
    print(summary[["variant", "n", "mean", "ci_low", "ci_high"]].round(4).to_string(index=False))


if __name__ == "__main__":
    main()
