"""Claim: with K = 4 local modules, local rules cut peak training memory vs end-to-end training.

Targets (issue 7): every local rule <= 0.55 of E2E on ResNet-32, feature reconstruction <= 0.6 of
E2E on vit-tiny. Memory is ``hwlab.meters.training_memory`` of one training step (peak saved
activations + parameter, gradient and Adam bytes; auxiliary nets and MAN's EMA copies included),
measured in the same run for E2E (the baseline) and each rule, at batch 128 on 1x28x28 inputs,
memory-balanced cuts (InfoPro*). Writes benchmarks/results/localtrain_memory.json.

Run: .venv/bin/python benchmarks/localtrain_memory.py [--batch 128] [--k 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import localtrain as lt
from hwlab.models import create_model

TARGETS = {"resnet32": 0.55, "vit-tiny": 0.60}  # vit-tiny target applies to featrecon


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--balance", default="memory")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    rows = []
    for model_name, model_target in TARGETS.items():
        base = None
        for rule_name in lt.list_rules():
            torch.manual_seed(0)
            model = create_model(model_name, (1, 28, 28), 10)
            rule = lt.make_rule(rule_name, model, K=args.k, balance=args.balance)
            m = lt.measure_step(rule, x, y, repeats=3)
            base = base or m
            ratio = m["memory_bytes"] / base["memory_bytes"]
            applies = model_name == "resnet32" or rule_name == "featrecon"
            target = model_target if applies else None
            ok = "" if target is None or rule_name == "e2e" else (
                " ok" if ratio <= target else f" ABOVE target {target}")
            print(f"{model_name:9s} {rule_name:9s} K={rule.K} memory {m['memory_bytes'] / 2**20:7.1f}"
                  f" MiB  ratio to E2E {ratio:.3f}  saved-activation ratio "
                  f"{m['saved_peak_bytes'] / base['saved_peak_bytes']:.3f}  step "
                  f"{m['latency_ms']:7.0f} ms{ok}", flush=True)
            rows.append({"model": model_name, "rule": rule_name, "K": rule.K,
                         "cuts": [list(b) for b in rule.partition.unit_bounds],
                         "ratio_to_e2e": ratio, "target": target, **m})
    out = Path(__file__).resolve().parent / "results" / "localtrain_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"batch": args.batch, "K": args.k, "balance": args.balance,
                               "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
