"""Protection that fits the block formats: :func:`protect_scales`, a hardening plan over every
block scale word of a :func:`faultlab.quantize` model (selective plans over element / scale fields
come from :func:`faultlab.plan_hardening`, which reads the fields in :mod:`faultlab._format_fields`)."""

from __future__ import annotations

from torch import nn

from faultlab._formats import storage
from faultlab._harden import COSTS, Plan
from faultlab._words import eligible_parameters
from hwlab.errors import check, check_choice

__all__ = ["protect_scales"]


def protect_scales(model: nn.Module, scheme: str = "secded"):
    """A hardening plan (:class:`faultlab._harden.Plan`) that protects every block scale word of
    a :func:`quantize` model with ``scheme`` (``"secded"``: a (72, 64) code over the scale bytes,
    ``"tmr"``: triple modular redundancy; the counting models of :mod:`faultlab._harden`) and
    leaves the element codes bare. ``plan.fault_model(rate)`` is ``BitFlip(rate)`` on that memory
    (for ``campaign`` / ``inject`` / the trial engine); ``plan.overhead`` = extra check bits /
    all eligible stored bits (MXFP4 + SEC-DED: 0.059 x 0.125 = 0.7 %). ``predicted_drop`` is NaN
    (no vulnerability table behind this plan)."""
    caller = "protect_scales"
    check(isinstance(model, nn.Module), "model", caller, "a torch.nn.Module",
          type(model).__name__)
    check_choice(scheme, tuple(COSTS), "scheme", caller)
    scales = [n for n, s in storage(model).items() if s.role == "scale"]
    check(len(scales) > 0, "model", caller,
          "a faultlab.quantize model with block scale words (an MX or NVFP4 format)",
          f"{type(model).__name__} without any")
    params = dict(model.named_parameters())
    total = sum(8 * p.numel() * p.element_size()
                for _, p in eligible_parameters(model, caller=caller))
    protected = sum(8 * params[n].numel() for n in scales)
    return Plan(tuple((n, tuple(range(8)), scheme, "word") for n in scales),
                protected * COSTS[scheme] / total, float("nan"))
