"""Train (or load) two zoo models, record them in a results store, and compare them.

    python examples/hwlab_zoo_store.py [--dataset digits] [--store /tmp/zoo.sqlite]

Uses only the public API: the zoo study through ``hwlab.studies.run_study``, a ``Store`` and the
results DataFrame. Zoo weights are cached under ``$HWLAB_HOME/zoo``, so a second run is fast, and
the store run is resumed (nothing is measured twice).
"""

from __future__ import annotations

import argparse

import torch

from hwlab.store import Store
from hwlab.studies import run_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", help="digits (seconds) or mnist5k")
    parser.add_argument("--models", default="mlp,lenet5")
    parser.add_argument("--store", default=None, help="default: $HWLAB_HOME/hwlab.sqlite")
    args = parser.parse_args()
    torch.set_num_threads(1)  # comparable latencies on a shared machine

    store = Store(args.store)
    run_id = run_study("hwlab.zoo", store=store, models=args.models, dataset=args.dataset)
    df = store.results(run_id=run_id)

    df["kib"] = df["memory_bytes"] / 1024
    df["accuracy_per_kib"] = df["accuracy"] / df["kib"]
    cols = ["model", "dataset", "accuracy", "latency_ms", "params", "kib", "accuracy_per_kib"]
    print(f"run {run_id} in {store.path}")
    print(df[cols].sort_values("accuracy", ascending=False).to_string(index=False))
    best = df.loc[df["accuracy"].idxmax()]
    print(f"most accurate: {best['model']} ({best['accuracy']:.3f}, "
          f"{best['latency_ms'] * 1000:.1f} us per sample)")


if __name__ == "__main__":
    main()
