"""Claim: inject + restore costs follow the number of faults, not the model size.

On a ~10M-weight float32 MLP, side by side in one run:
1. inject + restore at BER 1e-6 and 1e-5 vs one plain copy of all parameters (#14.5 target:
   <= 0.02 at 1e-6), split into drawing the map (``sample_faults``), applying and restoring a
   drawn map (``replay``: one Numba call per map) and both together (``inject``);
2. vs a dense torch approach (a random per-bit mask over all weights, XOR, XOR back) at 1e-5
   (target >= 1000x faster);
3. vs pytorchfi's weight-injection path (``declare_weight_fi``, which deep-copies the model) with the
   same faults (target >= 20x faster).
Prints ratios, writes benchmarks/results/faultlab_inject_speed.json. ``--device cuda`` (default
when a GPU is present) runs step 1 on the GPU (indexed path; times synchronised); steps 2 and 3
always run on a CPU copy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import faultlab as fl

RESULTS = Path(__file__).resolve().parent / "results" / "faultlab_inject_speed.json"
TARGET = 0.02  # #14.5: inject + restore at BER 1e-6 on 10M fp32 weights / one full copy


def big_mlp() -> nn.Sequential:
    """3072-2560-768-10: 9.84M weights (float32), like a CIFAR-sized MLP."""
    g = torch.Generator().manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(3072, 2560), nn.ReLU(), nn.Linear(2560, 768),
                      nn.ReLU(), nn.Linear(768, 10))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return m.eval()


def timed(fn, repeats: int, device: str = "cpu") -> float:
    """Median seconds of ``repeats`` calls after one warm-up call (synchronised on CUDA)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def dense_mask_inject(model: nn.Module, rate: float, gen: torch.Generator) -> None:
    """The straightforward approach: a Bernoulli(rate) mask for every bit of every weight."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                continue
            words = p.data.view(torch.int32)
            mask = torch.zeros_like(words)
            for bit in range(32):
                hit = torch.rand(words.shape, generator=gen) < rate
                mask |= hit.to(torch.int32) << bit
            words ^= mask
            words ^= mask  # restore


def main(device: str = "cpu") -> dict:
    torch.set_num_threads(1)
    cpu_model = big_mlp()
    model = cpu_model.to(device) if device != "cpu" else cpu_model
    n_weights = sum(p.numel() for n, p in model.named_parameters() if not n.endswith("bias"))
    params = list(model.parameters())
    buffers = [torch.empty_like(p) for p in params]

    def plain_copy():
        with torch.no_grad():
            for b, p in zip(buffers, params):
                b.copy_(p)

    out = {"weights": n_weights, "threads": 1, "device": device}
    out["copy_s"] = timed(plain_copy, 20, device)
    for rate in (1e-6, 1e-5):
        def inject_restore(rate=rate):
            with fl.inject(model, fl.BitFlip(rate=rate), seed=1):
                pass
        fmap = fl.sample_faults(model, fl.BitFlip(rate=rate), seed=1)

        def replay(fmap=fmap):
            with fl.inject(model, fmap):
                pass
        out[f"inject_{rate:g}_s"] = timed(inject_restore, 200, device)
        out[f"replay_{rate:g}_s"] = timed(replay, 200, device)
        out[f"sample_{rate:g}_s"] = timed(
            lambda rate=rate: fl.sample_faults(model, fl.BitFlip(rate=rate), seed=1), 200)
        out[f"trial_{rate:g}_s"] = campaign_trial_time(model, rate, device)
        out[f"faults_{rate:g}"] = len(fmap)
        out[f"ratio_vs_copy_{rate:g}"] = out[f"inject_{rate:g}_s"] / out["copy_s"]
        out[f"replay_ratio_vs_copy_{rate:g}"] = out[f"replay_{rate:g}_s"] / out["copy_s"]

    model = cpu_model  # the comparisons with dense masks and pytorchfi run on the CPU
    gen = torch.Generator().manual_seed(0)
    out["dense_1e-05_s"] = timed(lambda: dense_mask_inject(model, 1e-5, gen), 2)
    out["speedup_vs_dense_1e-05"] = out["dense_1e-05_s"] / out["inject_1e-05_s"]

    out["pytorchfi_1e-05_s"] = pytorchfi_time(model, fl.sample_faults(model, fl.BitFlip(rate=1e-5),
                                                                         seed=1))
    out["speedup_vs_pytorchfi_1e-05"] = out["pytorchfi_1e-05_s"] / out["inject_1e-05_s"]
    return out


def campaign_trial_time(model: nn.Module, rate: float, device: str) -> float | None:
    """Draw + apply + restore as a campaign trial does it: the sampler's set-up (eligible
    parameters, bit table) is made once per model (``faultlab._plain.sampler``, cached in the
    model's views); a trial draws its map and applies it."""
    try:
        from faultlab._inject import apply_fault_map, restore
        from faultlab._sample import _sample_faults
    except ImportError:  # the campaign's internals moved: skip this line
        return None
    fm = fl.BitFlip(rate=rate)

    def trial():
        fmap = _sample_faults(model, fm, 1, None, False, False, "campaign")
        restore(apply_fault_map(model, fmap, "campaign"))
    return timed(trial, 200, device)


def pytorchfi_time(model: nn.Module, fmap) -> float:
    """pytorchfi 0.6 ``declare_weight_fi`` with the same faulty weights and their flipped values."""
    from pytorchfi.core import fault_injection

    pfi = fault_injection(model, 1, input_shape=[3072], layer_types=[nn.Linear])
    layers = {f"{i}.weight": j for j, i in enumerate(
        n for n, m in model.named_modules() if isinstance(m, nn.Linear))}
    params = dict(model.named_parameters())
    lay, k, c, val = [], [], [], []
    for p_idx, index, bit in zip(fmap.param, fmap.index, fmap.bit):
        name = fmap.names[p_idx]
        w = params[name].detach()
        row, col = divmod(int(index), w.shape[1])
        word = np.array([float(w[row, col])], dtype=np.float32).view(np.uint32) ^ np.uint32(
            1 << int(bit))
        lay.append(layers[name])
        k.append(row)
        c.append(col)
        val.append(float(word.view(np.float32)[0]))
    none = [None] * len(lay)

    def run():
        pfi.declare_weight_fi(layer_num=lay, k=k, dim1=c, dim2=none, dim3=none, value=val)
    return timed(run, 2)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    res = main(ap.parse_args().device)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    w = res["weights"]
    print(f"model: {w / 1e6:.2f}M float32 weights, 1 torch thread, device {res['device']}")
    print(f"plain copy of all parameters:     {1e3 * res['copy_s']:9.3f} ms")
    for r in ("1e-06", "1e-05"):
        print(f"inject+restore BER {r} ({res['faults_' + r]:5d} faults): "
              f"{1e3 * res['inject_' + r + '_s']:9.3f} ms  = {res['ratio_vs_copy_' + r]:.4f} x copy"
              f" (target <= {TARGET} at 1e-06); of which sampling "
              f"{1e3 * res['sample_' + r + '_s']:.3f} ms, apply+restore of a drawn map "
              f"{1e3 * res['replay_' + r + '_s']:.3f} ms = "
              f"{res['replay_ratio_vs_copy_' + r]:.4f} x copy")
        if res.get("trial_" + r + "_s") is not None:
            print(f"    inside a campaign trial (sampler set up once per campaign): "
                  f"{1e3 * res['trial_' + r + '_s']:.3f} ms = "
                  f"{res['trial_' + r + '_s'] / res['copy_s']:.4f} x copy")
    print(f"dense per-bit torch mask at 1e-05: {1e3 * res['dense_1e-05_s']:9.1f} ms  -> faultlab "
          f"{res['speedup_vs_dense_1e-05']:.0f}x faster (target >= 1000x)")
    print(f"pytorchfi declare_weight_fi 1e-05: {1e3 * res['pytorchfi_1e-05_s']:9.1f} ms  -> "
          f"faultlab {res['speedup_vs_pytorchfi_1e-05']:.0f}x faster (target >= 20x)")
    print(f"ratio vs copy at 1e-06: {res['ratio_vs_copy_1e-06']:.4f} (target <= {TARGET}); "
          f"replay alone {res['replay_ratio_vs_copy_1e-06']:.4f}")
    print(f"wrote {RESULTS}")
