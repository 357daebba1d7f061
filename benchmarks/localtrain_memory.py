"""Training memory of every localtrain rule against E2E, at the papers' setting, two meters.

Default: ResNet-32 and ResNet-110 on 3x32x32 inputs (seeded synthetic pixels: a step's memory does
not depend on them), batch 128 and 1024, K = 2 and 4, every rule (E2E, gradient checkpointing,
DGL, InfoPro, MAN, AugLocal, feature reconstruction, SGR), memory-balanced cuts. Per row: the
saved-tensor meter (``memory_bytes``: peak saved activations + parameters + gradients + Adam) and
the independent live-tensor peak (``live_memory_bytes``: every op output alive at once, which sees
checkpoint recomputation, + parameters + Adam), each as a ratio to the E2E row of the same model
and batch measured in the same run, printed beside the published ratio where a paper gives one
(InfoPro Table 3: ResNet-110, batch 1024, InfoPro* K=4 0.374, K=2 0.572, checkpointing 0.416).
Each (model, batch, rule, K) runs in its own process (peak memory of one does not leak into the
next). Rows are appended to benchmarks/results/localtrain_memory.json as they finish.

``--mnist``: the issue-7 setting instead (1x28x28, batch 128, K = 4, resnet32 and vit-tiny).
``--time N``: also time N steps per row (wall clock: run on an idle machine).

Run: .venv/bin/python benchmarks/localtrain_memory.py [--models resnet32,resnet110]
     [--batches 128,1024] [--ks 2,4] [--rules ...] [--time 0] [--quick]
Quick smoke run: --quick (resnet32, batch 8, K=2, e2e/checkpoint/infopro/sgr).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "results" / "localtrain_memory.json"


def _limit(gib: float) -> None:
    """Cap this worker's address space: a row that needs more fails alone (MemoryError /
    RuntimeError) instead of pushing a shared machine into the OOM killer."""
    if gib > 0:
        import resource

        cap = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _row(args) -> dict:
    model, rule, k, batch, repeats, threads, gib = args
    torch.set_num_threads(threads)
    _limit(gib)
    from localtrain._paper import paper_memory_row

    try:
        return paper_memory_row(model, rule, k, batch, repeats=repeats)
    except (MemoryError, RuntimeError) as exc:
        return {"model": model, "rule": rule, "K": k, "batch": batch,
                "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}


def _mnist_row(args) -> dict:
    model_name, rule_name, k, batch, repeats, threads, gib = args
    torch.set_num_threads(threads)
    _limit(gib)
    import localtrain as lt
    from hwlab.models import create_model

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    torch.manual_seed(0)
    rule = lt.make_rule(rule_name, create_model(model_name, (1, 28, 28), 10), K=k)
    m = lt.measure_step(rule, x, y, repeats=repeats, warmup=1 if repeats else 0)
    return {"model": model_name, "rule": rule_name, "K": rule.K, "batch": batch,
            "cuts": [list(b) for b in rule.partition.unit_bounds], "paper_ratio": None,
            "paper_source": "", **m}


def _fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def main() -> None:
    import localtrain as lt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet32,resnet110")
    ap.add_argument("--batches", default="128,1024")
    ap.add_argument("--ks", default="2,4")
    ap.add_argument("--rules", default=",".join(lt.list_rules()))
    ap.add_argument("--time", type=int, default=0, help="timed steps per row (0: memory only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-gib", type=float, default=0,
                    help="address-space cap per row in GiB (0: none); a row over it is recorded "
                         "as an error")
    ap.add_argument("--mnist", action="store_true", help="the issue-7 1x28x28 setting")
    ap.add_argument("--quick", action="store_true", help="smoke run: resnet32, batch 8, K=2")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--baseline", default="",
                    help="a JSON this script wrote: take the E2E rows from it instead of "
                         "measuring them again (to add rules to a run)")
    a = ap.parse_args()
    if a.quick:
        a.models, a.batches, a.ks, a.rules = "resnet32", "8", "2", "e2e,checkpoint,infopro,sgr"
    if a.mnist:
        a.models = "resnet32,vit-tiny" if a.models == ap.get_default("models") else a.models
        a.batches = "128" if a.batches == ap.get_default("batches") else a.batches
    rules = a.rules.split(",")
    if "e2e" in rules:
        rules.remove("e2e")
    known = {}
    if a.baseline:
        for r in json.loads(Path(a.baseline).read_text())["rows"]:
            if r["rule"] == "e2e" and "error" not in r:
                known[(r["model"], r["batch"])] = r
    else:
        rules.insert(0, "e2e")  # the baseline first
    fn = _mnist_row if a.mnist else _row
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    ctx = mp.get_context("spawn")
    for model in a.models.split(","):
        for batch in map(int, a.batches.split(",")):
            base = known.get((model, batch))
            for rule in rules:
                for k in ([1] if rule == "e2e" else map(int, a.ks.split(","))):
                    with ctx.Pool(1) as pool:  # a fresh process per row: peaks never mix
                        r = pool.apply(fn, ((model, rule, k, batch, a.time, a.threads,
                                             a.max_gib),))
                    if "error" in r:
                        print(f"{model:9s} b={batch:<5d} {rule:10s} K={k} FAILED: {r['error']}",
                              flush=True)
                        rows.append(r)
                        continue
                    base = base or r
                    r["ratio"] = r["memory_bytes"] / base["memory_bytes"]
                    r["live_ratio"] = r["live_memory_bytes"] / base["live_memory_bytes"]
                    r["saved_ratio"] = r["saved_peak_bytes"] / base["saved_peak_bytes"]
                    print(f"{model:9s} b={batch:<5d} {rule:10s} K={r['K']} saved-meter "
                          f"{r['memory_bytes'] / 2**20:8.1f} MiB ratio {r['ratio']:.3f} | live "
                          f"{r['live_memory_bytes'] / 2**20:8.1f} MiB ratio {r['live_ratio']:.3f}"
                          f" | paper {_fmt(r['paper_ratio'])} {r['paper_source']} | step "
                          f"{_fmt(r['latency_ms'], '.0f')} ms (E2E "
                          f"{_fmt(base['latency_ms'], '.0f')})", flush=True)
                    rows.append(r)
                    out.write_text(json.dumps({"setting": "mnist" if a.mnist else "paper",
                                               "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
