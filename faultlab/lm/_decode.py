"""Greedy decoding of char-gpt or a Hugging Face causal LM, and the HF glue (optional extra).

>>> tokens, logits = greedy(model, prompts, 32)          # CharGPT or transformers model
>>> net = logits_only(hf_model)                          # B x T ids -> B x T x V (campaigns)
>>> hf_model = load_hf("path/to/checkpoint")             # a local folder, nothing downloaded

``greedy`` runs one prefill pass over the prompt and one position per step through a KV cache
(``hwlab.models.KVCache`` or ``transformers.DynamicCache``; pass ``cache`` to fault it with
:func:`faultlab.lm.kv_faults`). ``transformers`` is an optional dependency
(``pip install hwlab[hf]``): only the functions that need it import it.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from hwlab.errors import check, check_positive_int

__all__ = ["greedy", "load_hf", "logits_only"]


def _is_hf(model) -> bool:
    return hasattr(model, "config") and hasattr(model.config, "num_hidden_layers")


def _cache_kw(model) -> str:
    """``cache`` (transformers >= 5.x) or ``past_key_values`` (older releases)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def greedy(model, prompt: torch.Tensor, steps: int, cache=None):
    """Greedy continuation ``(tokens B x steps, logits B x steps x vocab)`` through a KV cache."""
    check(isinstance(prompt, torch.Tensor) and prompt.dim() == 2 and not
          prompt.is_floating_point(), "prompt", "greedy", "a B x P tensor of token ids",
          getattr(prompt, "shape", type(prompt).__name__))
    steps = check_positive_int(steps, "steps", "greedy")
    if hasattr(model, "new_cache") and hasattr(model, "generate"):  # hwlab CharGPT
        return model.generate(prompt, steps, cache=cache)
    check(_is_hf(model), "model", "greedy", "a hwlab CharGPT or a transformers causal LM",
          type(model).__name__)
    if cache is None:
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
    kw = _cache_kw(model)
    out, logits, inp = [], [], prompt
    for _ in range(steps):
        step = model(input_ids=inp, use_cache=True, **{kw: cache}).logits[:, -1]  # B x V
        inp = step.argmax(-1, keepdim=True)
        out.append(inp)
        logits.append(step)
    return torch.cat(out, 1), torch.stack(logits, 1)


class _LogitsOnly(nn.Module):
    """A transformers causal LM as ``idx -> logits`` (no cache): what a campaign evaluates."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=idx, use_cache=False).logits  # B x T x V


def logits_only(model: nn.Module) -> nn.Module:
    """Wrap a transformers causal LM so that ``net(idx)`` returns its B x T x V logits (weight
    faults then address ``model.<its parameter names>``)."""
    check(isinstance(model, nn.Module) and _is_hf(model), "model", "logits_only",
          "a transformers causal LM (with a config)", type(model).__name__)
    return _LogitsOnly(model).train(model.training)


def load_hf(path) -> nn.Module:
    """A user's causal LM checkpoint from a LOCAL folder (``local_files_only``: never a
    download), in eval mode on the CPU."""
    from pathlib import Path

    check(isinstance(path, (str, Path)) and Path(path).expanduser().is_dir(), "path", "load_hf",
          "a local folder holding a transformers checkpoint (config.json + weights)", path)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(Path(path).expanduser()),
                                                local_files_only=True).eval()
