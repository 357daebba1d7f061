"""Memory and latency of one training step of a rule, read with ``hwlab.meters``."""

from __future__ import annotations

import torch

from hwlab.errors import check, check_int

__all__ = ["measure_step"]


def measure_step(rule, x: torch.Tensor, y: torch.Tensor, repeats: int = 5,
                 warmup: int = 1) -> dict:
    """Peak training memory (two independent meters) and median latency of ``rule.step(x, y)``.

    Memory is ``hwlab.meters.training_memory`` of one step: peak bytes saved for backward
    (storage-deduplicated, parameters excluded; auxiliary nets included since they run inside the
    step) plus parameter, gradient and optimizer bytes of every parameter the rule holds (model,
    auxiliary nets and MAN's frozen EMA copies). The same step also runs under
    ``hwlab.meters.live_memory``: ``live_peak_bytes`` is the peak of every op output alive at once
    (activations, transient outputs, gradients, optimizer temporaries, and activations recomputed
    inside checkpointed segments, which the first meter cannot see); ``live_memory_bytes`` adds
    the parameter and optimizer-state bytes that existed before the step: the CPU analogue of the
    papers' ``torch.cuda.max_memory_allocated``. Latency is ``hwlab.meters.latency`` of full steps
    (``repeats=0``: not timed, ``latency_ms`` is None).
    The steps update the weights (they are real training steps). The batch is copied first: a
    slice of a dataset tensor shares its storage, and the meter counts whole storages.
    """
    from hwlab.meters import latency, live_memory, training_memory

    check(hasattr(rule, "step") and hasattr(rule, "memory_parameters"), "rule", "measure_step",
          "a localtrain rule (make_rule)", type(rule).__name__)
    check_int(repeats, "repeats", "measure_step", 0)
    check_int(warmup, "warmup", "measure_step", 0)
    x, y = x.clone(), y.clone()  # own storage (a dataset slice would count the whole dataset)
    rule.train(True)
    opt = rule.optimizer
    rule.step(x[:2], y[:2])  # creates the optimizer state (its size does not depend on the batch)
    live = []
    mem = training_memory(lambda: live.append(live_memory(lambda: rule.step(x, y))),
                          params=rule.memory_parameters(), optimizer=opt)
    lat = latency(rule.step, x, y, warmup=warmup, repeats=repeats).median_ms if repeats else None
    return {"memory_bytes": int(mem.total_bytes), "saved_peak_bytes": int(mem.saved_peak_bytes),
            "param_bytes": int(mem.param_bytes), "grad_bytes": int(mem.grad_bytes),
            "optimizer_bytes": int(mem.optimizer_bytes),
            "live_peak_bytes": int(live[0].peak_bytes),
            "live_memory_bytes": int(live[0].peak_bytes + mem.param_bytes + mem.optimizer_bytes),
            "latency_ms": None if lat is None else float(lat),
            "params": sum(p.numel() for p in rule.parameters())}
