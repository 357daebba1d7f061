"""faultlab: bit-level fault injection into DNN weight memory, fault campaigns, FT-ClipAct.

User guide: docs/faultlab.md. Public names are imported lazily (PEP 562) so that
``faultlab.pytest_plugin``, which pytest loads in every session, stays cheap to import.
To add a public name: put it in ``_LAZY`` (name -> module) and it joins ``__all__``.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "BitFlip": "faultlab._faults",
    "StuckAt": "faultlab._faults",
    "FaultMap": "faultlab._faults",
    "FaultModel": "faultlab._faults",
    "sample_faults": "faultlab._sample",
    "eligible_parameters": "faultlab._words",
    "inject": "faultlab._inject",
    "quantize_int8": "faultlab._quant",
    "quantize": "faultlab._formats",  # low-bit storage formats (int4, FP8, MX, NVFP4)
    "fault_roles": "faultlab._formats",
    "storage": "faultlab._formats",
    "fault_sites": "faultlab._formats",
    "protect_scales": "faultlab._format_protect",
    "campaign": "faultlab._campaign",
    "Trial": "faultlab._engine",  # the one trial engine: a study's plan is {key: Trial}
    "Evaluation": "faultlab._engine",
    "evaluation": "faultlab._engine",
    "runner": "faultlab._engine",
    "summarize": "faultlab._stats",
    "mean_ci": "faultlab._stats",
    "proportion_ci": "faultlab._stats",
    "leveugle_sample_size": "faultlab._stats",
    "NeuronFault": "faultlab._neuron",
    "neuron_faults": "faultlab._neuron",
    "assert_resilient": "faultlab._resilience",
    "vulnerability": "faultlab._vulnerability",
    "FaultAwareTask": "faultlab._fat",
    "ClippedTask": "faultlab._clipping",
    "clip_weights": "faultlab._clipping",
    "harden": "faultlab._harden",
    "bit_flip_attack": "faultlab._attack",  # the worst case: progressive bit search
    "random_flips": "faultlab._attack",
    "random_flip_accuracy": "faultlab._attack",
    "AttackResult": "faultlab._attack",
    "saturate": "faultlab._weight_defences",  # weight-side defences: what is stored changes
    "scale_weights": "faultlab._weight_defences",
    "WeightTransformed": "faultlab._weight_defences",
    "radar": "faultlab._radar",  # run-time checksums that flag (and zero) attacked groups
    "Radar": "faultlab._radar",
    "radar_attack": "faultlab._radar_attack",  # the adaptive attacker: PBS that keeps signatures
    "plan_hardening": "faultlab._harden",
    "training": "faultlab._training",  # faults during training: wrap any hwlab.train Task
    "FaultyTraining": "faultlab._training",
    "TrainFault": "faultlab._train_sites",
    "NonFinite": "faultlab._train_detect",
    "LossSpike": "faultlab._train_detect",
    "GradSpike": "faultlab._train_detect",
    "MomentBound": "faultlab._train_detect",
    "outcome_table": "faultlab._training_study",  # outcome shares with Wilson intervals
}
# imported as faultlab.<name> on first use
_SUBPACKAGES: tuple[str, ...] = ("clipact", "memory", "systolic")

__all__ = [*_LAZY, *_SUBPACKAGES]  # noqa: PLE0604 (all strings)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"faultlab.{name}")
    raise AttributeError(f"module 'faultlab' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
