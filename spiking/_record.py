"""Record every input once to ``T_max`` steps: per-step outputs N x T x classes.

Every stopping rule, threshold and oracle is then evaluated offline from this one recording.
Batches are cut in order and batch ``b`` draws its rate-code noise from a generator seeded with
``_batch_seed(seed, b)``; the live runner uses the same batches and seeds, so both see the same
spikes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hwlab.data import Split
from hwlab.errors import check, check_positive_int

from ._snn import SpikingNet

__all__ = ["Recording", "record"]


def _batch_seed(seed: int, b: int) -> int:
    return seed * 1_000_003 + b  # distinct per (seed, batch) and independent of run order


def _batch_generator(seed: int, b: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(_batch_seed(seed, b))


def _xy(data, caller: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, Split):
        x, y = data.x, data.y
    else:
        check(isinstance(data, (tuple, list)) and len(data) == 2, "data", caller,
              "a Split or an (x, y) pair", type(data).__name__)
        x, y = data
    check(isinstance(x, torch.Tensor) and x.ndim >= 2 and len(x) > 0, "x", caller,
          "a non-empty tensor N x ...", getattr(x, "shape", x))
    check(isinstance(y, torch.Tensor) and y.shape == (len(x),), "y", caller,
          f"an int tensor of shape ({len(x)},)", getattr(y, "shape", y))
    return x, y


def _accumulate(outputs: torch.Tensor) -> torch.Tensor:
    """Running sum over steps, added step by step in the same order as the live runner."""
    acc = torch.empty_like(outputs)  # N x T x C
    run = outputs[:, 0]
    acc[:, 0] = run
    for t in range(1, outputs.shape[1]):
        run = run + outputs[:, t]
        acc[:, t] = run
    return acc


@dataclass(frozen=True)
class Recording:
    """Per-step outputs of one run to ``T_max``; everything else is derived from them."""

    outputs: torch.Tensor  # N x T x C, the last layer's output at each step (float32, CPU)
    labels: torch.Tensor  # N, int64

    @property
    def steps(self) -> int:
        return self.outputs.shape[1]

    @property
    def accumulated(self) -> torch.Tensor:
        """N x T x C running sum of the outputs up to and including each step."""
        return _accumulate(self.outputs)

    @property
    def predictions(self) -> torch.Tensor:
        return self.accumulated.argmax(dim=-1)  # N x T

    @property
    def correct(self) -> torch.Tensor:
        return self.predictions == self.labels[:, None]  # N x T bool

    def accuracy_curve(self) -> torch.Tensor:
        """Accuracy of a fixed-T run for every T = 1..T_max (T floats)."""
        return self.correct.double().mean(dim=0)

    def __len__(self) -> int:
        return len(self.labels)


def record(net: SpikingNet, data, steps: int = 32, batch_size: int = 500,
           seed: int = 0) -> Recording:
    """Run every sample of ``data`` (a Split or (x, y)) to ``steps`` steps and record outputs.

    Reproducible for a seed (rate coding draws its noise from seeded per-batch generators).
    """
    check(isinstance(net, SpikingNet), "net", "record", "a SpikingNet", type(net).__name__)
    check_positive_int(steps, "steps", "record")
    check_positive_int(batch_size, "batch_size", "record")
    x, y = _xy(data, "record")
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    was_training = net.training
    net.eval()
    outs = []
    try:
        with torch.no_grad():
            for b, start in enumerate(range(0, len(x), batch_size)):
                xb = x[start:start + batch_size].to(device)
                outs.append(net(xb, steps, _batch_generator(seed, b, device)).cpu())
    finally:
        net.train(was_training)
    return Recording(outputs=torch.cat(outs).float(), labels=y.cpu().long())
