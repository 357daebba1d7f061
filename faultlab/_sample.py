""":func:`sample_faults`: route each fault model to its drawer.

* a symmetric :class:`BitFlip` / :class:`StuckAt` (``rate`` or ``count``): the plain draw
  (:mod:`faultlab._plain`);
* a fault model that draws itself (a ``_sample_map`` method: ``faultlab.memory.Nested``, a
  hardening plan's ``Protected``): that method;
* every other :class:`FaultModel` (asymmetric rates, ECC, bursts, row / column / bank faults,
  chip maps): ``faultlab.memory``'s thinning engine (:func:`faultlab.memory._nested.draw`).

The word facts (storage words, eligible parameters, seeds, model views) live below in
:mod:`faultlab._words`.
"""

from __future__ import annotations

from torch import nn

from faultlab._faults import FAULT_MODELS, BitFlip, StuckAt
from faultlab._plain import draw_plain
from faultlab.memory._nested import draw, sample_nested
from hwlab.errors import check

__all__ = ["sample_faults"]


def sample_faults(model: nn.Module, fault_model, seed: int = 0, layers=None,
                  include_bias: bool = False, include_norm: bool = False, nested_rates=None):
    """Draw a :class:`FaultMap` for ``fault_model`` over the eligible bits of ``model``.

    The eligible bits are (element, bit in ``fault_model.bits``) of every parameter chosen by
    ``layers`` / ``include_bias`` / ``include_norm`` (see :func:`eligible_parameters`; biases and
    normalisation parameters are excluded by default), concatenated virtually in parameter order.
    With ``rate`` every eligible bit is faulty independently with that probability (a binomial
    count of distinct, uniform positions, never truncated per layer); with ``count`` exactly that
    many distinct positions are drawn uniformly. The same seed gives the same map. The cost is
    proportional to the number of faults (Numba kernels in ``faultlab._kernels``), not to the
    number of bits. The model is only read.

    Any :class:`~faultlab.FaultModel` is accepted: asymmetric rates and the memory-level models
    of ``faultlab.memory`` (ECC, bursts, row / column / bank faults, chip maps) draw through
    ``faultlab.memory``. With ``nested_rates=[r1, r2, ...]`` a list of maps is returned, one per
    rate (``fault_model.with_rate(r)``), from one draw: every candidate bit has one uniform
    number and is faulty at rate r iff it is below r (Stutz et al.), so the map at a lower rate
    is a subset of the map at a higher one (see ``faultlab.memory.sample_nested``).
    """
    if nested_rates is not None:
        return sample_nested(model, fault_model, nested_rates, seed, layers, include_bias,
                             include_norm, "sample_faults")
    return _sample_faults(model, fault_model, seed, layers, include_bias, include_norm,
                          "sample_faults")


def _sample_faults(model, fault_model, seed, layers, include_bias, include_norm, caller,
                   views=None):
    """``views``: ``model_views(model)`` when the caller already holds them (a trial)."""
    check(isinstance(fault_model, FAULT_MODELS), "fault_model", caller,
          "a BitFlip, StuckAt or another faultlab.FaultModel", fault_model)
    if isinstance(fault_model, (BitFlip, StuckAt)) and not fault_model.asymmetric:
        return draw_plain(model, fault_model, seed, layers, include_bias, include_norm, caller,
                          views)
    own = getattr(fault_model, "_sample_map", None)  # a model that draws itself
    if own is not None:
        return own(model, seed, layers, include_bias, include_norm, caller)
    return draw(model, fault_model, fault_model, seed, layers, include_bias, include_norm, caller)
