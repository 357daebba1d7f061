"""Claim: the noisy (density-matrix) path of the quantum layers is batched like the noiseless
one: noisy / noiseless time per batch stays a small factor (a density matrix holds 2**n times
the amplitudes of a state), and it is far faster than PennyLane's default.mixed sample by sample.

Side by side in one run, on ``quantum.creep_model((1, 28, 28), level=2)`` (5-qubit re-uploading
layer, 10 repetitions) and on the 8x8 digits model (4 qubits):
1. noiseless: forward+backward of a batch (each quantum layer one broadcast state-vector circuit);
2. noisy: the same model under ``Noise(depolarizing, depolarizing2, damping, readout)`` (every
   channel on, so every wire and pair gets its channels after each of the 20 gates);
3. the noisy layer alone vs the same noisy circuit on PennyLane ``default.mixed``, one QNode call
   per sample (forward only, ``--mixed-samples`` samples, scaled to the batch).
Prints noisy / noiseless per batch and writes benchmarks/results/quantum_noise.json.

    .venv/bin/python benchmarks/quantum_noise.py [--batch 64] [--repeats 3]
    .venv/bin/python benchmarks/quantum_noise.py --quick      # smoke run (small batch)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pennylane as qml
import torch

import quantum as q
from hwlab.meters import latency

RESULTS = Path(__file__).resolve().parent / "results" / "quantum_noise.json"
NOISE = q.Noise(depolarizing=0.01, depolarizing2=0.01, damping=0.01, readout=0.01)


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call (hwlab.meters.latency)."""
    return latency(fn, warmup=1, repeats=repeats).median_ms / 1e3


def mixed_qnode(layer: q.QuantumLinear):
    """The layer's noisy circuit on default.mixed (PennyLane channels), one sample per call."""
    wires, n = list(range(layer.n_qubits)), layer.n_qubits
    theta = layer.theta.detach().double()
    paulis = [qml.matrix(op) for op in (qml.Identity(0), qml.PauliX(0), qml.PauliY(0),
                                        qml.PauliZ(0))]
    p2 = NOISE.depolarizing2
    kraus2 = [((1 - p2) if i == j == 0 else p2 / 15) ** 0.5 * np.kron(paulis[i], paulis[j])
              for i in range(4) for j in range(4)]

    def channels():
        for w in wires:
            qml.DepolarizingChannel(NOISE.depolarizing, wires=w)
            qml.AmplitudeDamping(NOISE.damping, wires=w)
        for a in range(n - 1):  # two-qubit depolarizing: its 16 Kraus operators
            qml.QubitChannel(kraus2, wires=[a, a + 1])

    @qml.qnode(qml.device("default.mixed", wires=n))
    def circuit(gate):
        for w in wires:
            qml.Hadamard(w)
        for r in range(layer.reps):
            qml.QubitUnitary(gate, wires=wires)
            channels()
            qml.SpecialUnitary(theta[r], wires=wires)
            channels()
        for w in wires:
            qml.BitFlip(NOISE.readout, wires=w)
        return qml.probs(wires=wires)

    return circuit


def compare(in_shape, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    clean = q.creep_model(in_shape, level=2)
    noisy = q.with_noise(clean, NOISE)
    x = torch.rand(batch, *in_shape)
    y = torch.randint(0, 10, (batch,))

    def step(model):
        def run():
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
        return run

    def forward(model):
        def run():
            with torch.no_grad():
                model(x)
        return run

    t_clean, t_noisy = timed(step(clean), repeats), timed(step(noisy), repeats)
    f_clean, f_noisy = timed(forward(clean), repeats), timed(forward(noisy), repeats)
    lin = noisy[4]
    return {"in_shape": list(in_shape), "qubits": lin.n_qubits, "reps": lin.reps,
            "batch": batch, "noiseless_fwd_bwd_ms": 1e3 * t_clean,
            "noisy_fwd_bwd_ms": 1e3 * t_noisy, "noisy_over_noiseless_fwd_bwd": t_noisy / t_clean,
            "noiseless_fwd_ms": 1e3 * f_clean, "noisy_fwd_ms": 1e3 * f_noisy,
            "noisy_over_noiseless_fwd": f_noisy / f_clean, "layer": lin}


def versus_default_mixed(lin: q.QuantumLinear, batch: int, samples: int, repeats: int) -> dict:
    feats = torch.randn(batch, lin.in_features)
    with torch.no_grad():
        gates = lin.data_gates(feats[:samples])
        ours = lin.noisy_probs(lin.data_gates(feats))  # B x D
    circuit = mixed_qnode(lin)
    ref = torch.stack([torch.as_tensor(circuit(g)) for g in gates])
    diff = (ours[:samples] - ref).abs().max().item()

    def batched():
        with torch.no_grad():
            lin.noisy_probs(lin.data_gates(feats))

    def per_sample():
        for g in gates:
            circuit(g)

    t_ours = timed(batched, repeats)
    t_ref = timed(per_sample, max(1, repeats // 2)) * batch / samples  # scaled to the batch
    return {"mixed_samples": samples, "layer_noisy_fwd_ms": 1e3 * t_ours,
            "default_mixed_per_sample_fwd_ms_scaled": 1e3 * t_ref,
            "speedup_vs_default_mixed": t_ref / t_ours, "max_abs_diff_vs_default_mixed": diff}


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mixed-samples", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="batch 8, 1 repeat, 2 mixed samples")
    a = ap.parse_args()
    if a.quick:
        a.batch, a.repeats, a.mixed_samples = 8, 1, 2
    torch.set_num_threads(a.threads)
    res = {"threads": a.threads, "noise": NOISE.__dict__, "models": []}
    for shape in ((1, 28, 28), (1, 8, 8)):
        row = compare(shape, a.batch, a.repeats)
        lin = row.pop("layer")
        row.update(versus_default_mixed(lin, a.batch, min(a.mixed_samples, a.batch), a.repeats))
        res["models"].append(row)
        for k, v in row.items():
            print(f"{k:42s} {v:.4g}" if isinstance(v, float) else f"{k:42s} {v}")
        print()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
