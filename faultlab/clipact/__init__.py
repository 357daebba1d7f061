"""FT-ClipAct (Hoang, Hanif, Shafique, DATE 2020): clipped activations with searched thresholds,
per activation CALL site, on any model ``hwlab.graph`` can trace.

>>> from faultlab import clipact
>>> clipact.activation_sites(model)                        # ["stem.relu", "layer1.0.relu()", ...]
>>> maxima = clipact.profile(model, train_subset)           # {site: max}
>>> protected = clipact.protect(model, train_subset, mode="zero")   # new module, input untouched
>>> clipact.thresholds(protected)                           # {site: threshold}
>>> ranger = clipact.clip(model, maxima, mode="cap")        # Ranger: profiled bounds, capped

See docs/faultlab-clipact.md for the search procedure, its defaults and the reproduction study.
"""

from faultlab.clipact._modules import (
    MODES,
    ClippedReLU,
    FunctionalActivation,
    activation_sites,
    feeding_layers,
)
from faultlab.clipact._proact import HyReLU, proact
from faultlab.clipact._profile import clip, profile, thresholds
from faultlab.clipact._search import SearchConfig, ThresholdSearch, protect, search_thresholds

__all__ = [
    "MODES",
    "ClippedReLU",
    "FunctionalActivation",
    "HyReLU",
    "SearchConfig",
    "ThresholdSearch",
    "activation_sites",
    "clip",
    "feeding_layers",
    "proact",
    "profile",
    "protect",
    "search_thresholds",
    "thresholds",
]
