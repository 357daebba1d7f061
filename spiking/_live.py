"""Live early exit: step the SNN and drop finished samples from the batch at every step.

The saving then shows up in wall-clock time, not only in counted steps. Finished rows are removed
by one vectorised index selection of the running sum, the input and every membrane; no Python
loop over samples. Batches, seeds and the order of additions match :func:`spiking.record`, so the
predictions equal the offline evaluation of the same rule and threshold on the recording.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from hwlab.errors import check, check_positive_int

from ._record import _batch_generator
from ._rules import get_rule
from ._snn import SpikingNet

__all__ = ["LiveResult", "run_live"]


@dataclass(frozen=True)
class LiveResult:
    predictions: torch.Tensor  # N int64 (CPU)
    steps: torch.Tensor  # N int64, the step each sample stopped at (1..max_steps)
    seconds: float  # wall-clock time of the whole run
    layer_rows: int  # sum over steps of the rows still running (work actually done)

    @property
    def mean_steps(self) -> float:
        return float(self.steps.double().mean())


def run_live(net: SpikingNet, x: torch.Tensor, rule=None, threshold: float | None = None,
             steps: int = 32, batch_size: int = 500, seed: int = 0) -> LiveResult:
    """Run ``x`` through ``net`` with early exit by ``rule`` at ``threshold``, up to ``steps``.

    ``rule=None`` runs every sample for exactly ``steps`` steps (the fixed-T baseline).
    """
    caller = "run_live"
    check(isinstance(net, SpikingNet), "net", caller, "a SpikingNet", type(net).__name__)
    check(isinstance(x, torch.Tensor) and x.ndim >= 2 and len(x) > 0, "x", caller,
          "a non-empty tensor N x ...", getattr(x, "shape", x))
    check_positive_int(steps, "steps", caller)
    check_positive_int(batch_size, "batch_size", caller)
    r = None if rule is None else get_rule(rule)
    if r is not None:
        check(isinstance(threshold, (int, float)) and math.isfinite(threshold), "threshold",
              caller, "a finite number when a rule is given", threshold)
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    was_training = net.training
    net.eval()
    preds, stops, rows = [], [], 0
    start = time.perf_counter()
    try:
        with torch.no_grad():
            for b, lo in enumerate(range(0, len(x), batch_size)):
                p, s, n = _run_batch(net, x[lo:lo + batch_size].to(device), r, threshold, steps,
                                     _batch_generator(seed, b, device))
                preds.append(p)
                stops.append(s)
                rows += n
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    finally:
        net.train(was_training)
    seconds = time.perf_counter() - start
    return LiveResult(torch.cat(preds).cpu(), torch.cat(stops).cpu(), seconds, rows)


def _run_batch(net, xb, rule, threshold, steps, generator):
    n = len(xb)
    idx = torch.arange(n, device=xb.device)  # rows of xb still running
    pred = torch.empty(n, dtype=torch.long, device=xb.device)
    stop = torch.empty(n, dtype=torch.long, device=xb.device)
    x_run, state, acc, rows = xb, net.initial_state(), None, 0
    for t in range(1, steps + 1):
        # rate coding draws noise for the whole batch (as the recording does), then selects
        x_t = net.encode(xb, generator).index_select(0, idx) if net.encoding == "rate" else x_run
        out, state = net.step(x_t, state)  # n_running x C
        rows += len(idx)
        acc = out if acc is None else acc + out  # running sum, same order as the recording
        if t == steps:
            done = torch.ones(len(idx), dtype=torch.bool, device=xb.device)
        elif rule is None:
            continue
        else:
            tt = torch.full((len(idx),), t, device=xb.device)
            done = rule.stops(acc, tt, threshold)  # n_running bool
        if not bool(done.any()):
            continue
        fin = idx[done]
        pred[fin] = acc[done].argmax(dim=-1)
        stop[fin] = t
        keep = (~done).nonzero()[:, 0]  # rows that go on
        if len(keep) == 0:
            break
        idx, acc, x_run = idx[keep], acc[keep], x_run[keep]
        state = [m.index_select(0, keep) for m in state]  # drop finished membranes
    return pred, stop, rows
