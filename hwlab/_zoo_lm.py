"""Trained ``char-gpt`` weights, trained once: ``lm_entry("char-gpt", "pydoc", seed)``.

The recipe is nanoGPT's CPU recipe for character-level text (its README: block 64, batch 12,
4 layers x 4 heads x d = 128, 2,000 iterations, cosine decay 1e-3 -> 1e-4 after 100 warm-up
steps, AdamW betas (0.9, 0.99) with weight decay 0.1 on 2-d weights only, gradient clipping 1.0,
dropout 0) on random-offset windows of the train split. The entry is cached like an image zoo
entry (``$HWLAB_HOME/zoo/char-gpt-<data>-s<seed>-<key>.pt`` + ``.json``, file lock, SHA-256
verified on load); the key covers the recipe AND the corpus's SHA-256, so a different CPython
(a different pydoc text) trains a new entry instead of reusing one from another text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass

import torch

from hwlab.errors import check, check_int, fail

__all__ = ["LMEntry", "LMRecipe", "lm_entry", "lm_loss"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LMRecipe:
    """nanoGPT's CPU recipe for character-level text (its README and train.py defaults)."""

    iters: int = 2000  # README CPU recipe: max_iters 2000 (val loss ~1.42 on pydoc, measured)
    batch_size: int = 12  # README CPU recipe: batch_size 12
    lr: float = 1e-3  # train_shakespeare_char: learning_rate 1e-3 (small model, small data)
    min_lr: float = 1e-4  # lr / 10 at the end of the cosine (Chinchilla convention in nanoGPT)
    warmup: int = 100  # train_shakespeare_char: warmup_iters 100
    weight_decay: float = 0.1  # train.py default, on 2-d weights only
    beta2: float = 0.99  # train_shakespeare_char: beta2 0.99 (few tokens per step)
    grad_clip: float = 1.0  # train.py default
    n_layer: int = 4  # README CPU recipe
    n_head: int = 4  # README CPU recipe
    d: int = 128  # README CPU recipe: n_embd 128
    block: int = 64  # README CPU recipe: block_size 64
    version: int = 1  # bump when the numbers change

    def lr_at(self, it: int) -> float:
        """nanoGPT's ``get_lr``: linear warm-up, then cosine down to ``min_lr`` at ``iters``."""
        if it < self.warmup:
            return self.lr * (it + 1) / (self.warmup + 1)
        ratio = min(1.0, (it - self.warmup) / max(1, self.iters - self.warmup))
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (self.lr - self.min_lr)


@dataclass(frozen=True)
class LMEntry:
    """A loaded ``char-gpt`` entry (model on the CPU in eval mode) and its measurements."""

    model: torch.nn.Module
    val_loss: float  # nats per character over the whole val split (non-overlapping windows)
    seconds: float
    path: object
    meta: dict


@torch.no_grad()
def lm_loss(model, split, batch_size: int = 64) -> float:
    """Mean next-character NLL in nats over every position of ``split``'s windows (the sum over
    all tokens divided by their count, not a mean of batch means)."""
    total, count = 0.0, 0
    for x, y in split.loader(batch_size):
        logits = model(x)
        total += float(torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).double(), y.reshape(-1), reduction="sum"))
        count += y.numel()
    return total / count


def _train(recipe: LMRecipe, dataset: str, seed: int, progress: bool):
    from hwlab.data import load
    from hwlab.models import char_gpt

    train, val = load(dataset, "train", block=recipe.block), load(dataset, "val",
                                                                   block=recipe.block)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = char_gpt(train.num_classes, recipe.block, recipe.n_layer, recipe.n_head, recipe.d)
    decay = [p for p in net.parameters() if p.dim() >= 2]
    other = [p for p in net.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=recipe.lr,
                            betas=(0.9, recipe.beta2))
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    net.train()
    for it in range(recipe.iters):
        for g in opt.param_groups:
            g["lr"] = recipe.lr_at(it)
        x, y = train.random_batch(recipe.batch_size, gen)
        logits = net(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), recipe.grad_clip)
        opt.step()
        if progress and it % 250 == 0:
            log.info("char-gpt iter %d: train loss %.4f", it, loss.item())
    seconds = time.perf_counter() - t0
    net.eval()
    return net, lm_loss(net, val), seconds, train


def lm_entry(model: str = "char-gpt", dataset: str = "pydoc", seed: int = 0,
             recipe: LMRecipe | None = None, progress: bool = False) -> LMEntry:
    """Train (once, under a file lock) or load the ``char-gpt`` entry for ``dataset``."""
    from filelock import FileLock

    from hwlab.data import load
    from hwlab.zoo import zoo_dir

    check(model == "char-gpt", "model", "lm_entry", "char-gpt", model)
    check(dataset == "pydoc" or (isinstance(dataset, str) and dataset.startswith("text:")),
          "dataset", "lm_entry", "pydoc or 'text:FILE'", dataset)
    seed = check_int(seed, "seed", "lm_entry", 0)
    recipe = LMRecipe() if recipe is None else recipe
    check(isinstance(recipe, LMRecipe), "recipe", "lm_entry", "an LMRecipe or None",
          type(recipe).__name__)
    _check_recipe(recipe)
    sha = load(dataset, "val", block=recipe.block).sha256
    key = hashlib.sha256(json.dumps({"recipe": dataclasses.asdict(recipe), "seed": seed,
                                     "text_sha256": sha}, sort_keys=True).encode()).hexdigest()[:16]
    label = "pydoc" if dataset == "pydoc" else "text"
    stem = zoo_dir() / f"char-gpt-{label}-s{seed}-{key}"
    pt, meta = stem.with_suffix(".pt"), stem.with_suffix(".json")
    pt.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(pt) + ".lock"):
        if not meta.exists():
            net, val_loss, seconds, train = _train(recipe, dataset, seed, progress)
            tmp = pt.with_suffix(f".tmp{os.getpid()}")
            torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp)
            os.replace(tmp, pt)
            info = {"model": model, "dataset": dataset, "seed": seed, "key": key,
                    "recipe": dataclasses.asdict(recipe), "text_sha256": sha,
                    "vocab": train.vocab, "val_loss": val_loss, "seconds": seconds,
                    "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "sha256": hashlib.sha256(pt.read_bytes()).hexdigest()}
            meta.write_text(json.dumps(info, indent=1))
            log.info("char-gpt %s: val loss %.4f nats/char in %.0f s", pt.name, val_loss, seconds)
    return _load(pt, meta, recipe)


def _check_recipe(r: LMRecipe) -> None:
    """Bad numbers fail before any training, naming the field."""
    from hwlab.errors import check_number, check_positive_int

    c = "LMRecipe"
    for name in ("iters", "batch_size", "n_layer", "n_head", "d", "block"):
        check_positive_int(getattr(r, name), name, c)
    check_int(r.warmup, "warmup", c, 0)
    check(r.d % r.n_head == 0, "d", c, f"a multiple of n_head = {r.n_head}", r.d)
    for name in ("lr", "min_lr", "grad_clip"):
        check_number(getattr(r, name), name, c, 0, inclusive=(False, True))
    check_number(r.weight_decay, "weight_decay", c, 0)
    check_number(r.beta2, "beta2", c, 0, 1, inclusive=(True, False))


def _load(pt, meta, recipe: LMRecipe) -> LMEntry:
    from hwlab.models import char_gpt

    try:
        info = json.loads(meta.read_text())
        raw = pt.read_bytes()
    except (OSError, ValueError) as exc:
        raise fail("file", "lm_entry", "a readable zoo entry (delete it to retrain)",
                   f"{meta} ({exc})") from None
    if hashlib.sha256(raw).hexdigest() != info.get("sha256"):
        raise fail("file", "lm_entry", "a zoo file whose SHA-256 matches its .json (delete both "
                   "to retrain)", str(pt))
    net = char_gpt(len(info["vocab"]), recipe.block, recipe.n_layer, recipe.n_head, recipe.d)
    net.load_state_dict(torch.load(pt, map_location="cpu", weights_only=True))
    return LMEntry(net.eval(), info["val_loss"], info["seconds"], pt, info)
