"""Component vulnerability (PVF, Meta, arXiv 2405.01741): per component x bit field, the share of
single-bit weight flips that give an incorrect output, with a Wilson 95 % interval.

PVF = D / N over N injections of one flip each (a uniformly drawn element of the component and a
uniformly drawn bit of the field: sign = bit 31, exponent = bits 23-30, mantissa = bits 0-22 of
float32). "Incorrect" is task-defined (the paper leaves it to the task); here: the top-1 of ANY
evaluated position (a character of a window, or an image) differs from the fault-free model's,
or a logit is NaN / inf. Each flip is written into the stored word and XOR-ed back after the
forward pass (bit-exact). Components of char-gpt: embedding/head (tied), positions, q, k, v, o,
mlp-up, mlp-down, norm; of vit-tiny: patch, positions, q, k, v (row slices of the fused qkv
weight), o, mlp-up, mlp-down, norm, head. Biases are not faulted (as in faultlab.campaign).
Each cell draws from its own seed (``derive_seed(seed, "pvf|<component>|<field>")``).
"""

from __future__ import annotations

import re

import torch

from hwlab.errors import check, check_int, check_positive_int
from hwlab.seeds import derive_seed
from hwlab.stats import proportion_ci

__all__ = ["FIELDS", "char_gpt_components", "pvf_rows", "pvf_table", "vit_components"]

FIELDS = {"sign": (31,), "exponent": tuple(range(23, 31)), "mantissa": tuple(range(23))}


def char_gpt_components(model) -> dict[str, list[tuple[str, slice | None]]]:
    """``{component: [(parameter name, row slice or None)]}`` of a hwlab CharGPT."""
    pats = {"embedding/head": r"wte\.weight", "positions": r"wpe\.weight",
            "q": r".*\.attn\.q\.weight", "k": r".*\.attn\.k\.weight", "v": r".*\.attn\.v\.weight",
            "o": r".*\.attn\.o\.weight", "mlp-up": r".*\.mlp\.up\.weight",
            "mlp-down": r".*\.mlp\.down\.weight", "norm": r".*ln_(1|2|f)\.weight"}
    names = [n for n, _ in model.named_parameters()]
    return {c: [(n, None) for n in names if re.fullmatch(p, n)] for c, p in pats.items()}


def vit_components(model) -> dict[str, list[tuple[str, slice | None]]]:
    """The same table for hwlab's ``vit-tiny`` (fused qkv split into its q, k, v rows)."""
    out = {c: [] for c in ("patch", "positions", "q", "k", "v", "o", "mlp-up", "mlp-down",
                           "norm", "head")}
    params = dict(model.named_parameters())
    for n, p in params.items():
        if n.endswith("attn.qkv.weight"):
            d = p.shape[0] // 3
            for i, c in enumerate("qkv"):
                out[c].append((n, slice(i * d, (i + 1) * d)))
        elif n.endswith("attn.proj.weight"):
            out["o"].append((n, None))
        elif re.fullmatch(r".*\.mlp\.0\.weight", n):
            out["mlp-up"].append((n, None))
        elif re.fullmatch(r".*\.mlp\.(2|3)\.weight", n):
            out["mlp-down"].append((n, None))
        elif "norm" in n and n.endswith("weight"):
            out["norm"].append((n, None))
        elif n.endswith("pos_embed"):
            out["positions"].append((n, None))
        elif n.endswith("proj.weight") and p.dim() == 4:
            out["patch"].append((n, None))
        elif n.endswith("weight") and p.dim() == 2 and n == list(params)[-2]:
            out["head"].append((n, None))
    return {c: v for c, v in out.items() if v}


@torch.no_grad()
def pvf_table(model, forward, components, trials: int = 100, seed: int = 0) -> list[dict]:
    """One dict per (component, field): n, incorrect, pvf, pvf_low, pvf_high, mean sdc.

    ``forward()``: the model's logits on the evaluation data (any shape ... x classes).
    """
    trials = check_positive_int(trials, "trials", "pvf_table")
    seed = check_int(seed, "seed", "pvf_table")
    params = dict(model.named_parameters())
    clean = forward()
    top = clean.argmax(-1)
    rows = []
    for comp, parts in components.items():
        views = []
        for name, rows_ in parts:
            p = params[name]
            check(p.dtype == torch.float32, "model", "pvf_table", "float32 weights", p.dtype)
            w = p.data.view(torch.int32)
            views.append(w[rows_] if rows_ is not None else w)  # views: writes reach the model
        sizes = torch.tensor([v.numel() for v in views])
        if not len(views) or int(sizes.sum()) == 0:
            continue
        bounds = torch.cumsum(sizes, 0)
        for field, bits in FIELDS.items():  # each cell its own draws (independent cells)
            g = torch.Generator().manual_seed(derive_seed(seed, f"pvf|{comp}|{field}") % 2**63)
            picks = torch.randint(int(bounds[-1]), (trials,), generator=g)
            which = torch.randint(len(bits), (trials,), generator=g)
            bad, sdc = 0, 0.0
            for flat, b in zip(picks.tolist(), which.tolist()):
                i = int(torch.searchsorted(bounds, flat, right=True))
                local = flat - (int(bounds[i - 1]) if i else 0)
                view = views[i].view(-1) if views[i].is_contiguous() else None
                idx = _unravel(local, views[i].shape)
                bit = bits[b]
                mask = torch.tensor((1 << bit) - (1 << 32) if bit == 31 else 1 << bit,
                                    dtype=torch.int32)
                if view is not None:
                    view[local] ^= mask
                else:
                    views[i][idx] ^= mask
                try:
                    out = forward()
                finally:
                    if view is not None:
                        view[local] ^= mask
                    else:
                        views[i][idx] ^= mask
                changed = out.argmax(-1) != top
                bad += bool(changed.any()) or not bool(torch.isfinite(out).all())
                sdc += float(changed.float().mean())
            p, lo, hi = proportion_ci([bad / trials], [trials])
            rows.append({"component": comp, "field": field, "n": trials, "incorrect": bad,
                         "pvf": p, "pvf_low": lo, "pvf_high": hi, "sdc": sdc / trials})
    return rows


def _unravel(i: int, shape) -> tuple:
    out = []
    for d in reversed(shape):
        out.append(i % d)
        i //= d
    return tuple(reversed(out))


def pvf_rows(model, val, prompt: int, trials: int, seed: int) -> dict[str, dict]:
    """The study's PVF rows for char-gpt on ``val``'s windows (teacher-forced logits)."""
    check(hasattr(model, "new_cache"), "model", "pvf_rows", "a hwlab CharGPT", type(model))
    table = pvf_table(model, lambda: model(val.x), char_gpt_components(model), trials, seed)
    return {f"pvf|{r['component']}|{r['field']}": {
        "variant": "pvf", "fault_model": "bitflip-1", "fault_rate": None, "sdc": r["sdc"],
        "extra": {k: r[k] for k in ("component", "field", "n", "incorrect", "pvf", "pvf_low",
                                    "pvf_high")}} for r in table}
