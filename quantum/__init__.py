"""quantum: hybrid models that swap classical layers for PennyLane quantum layers, one by one.

Implements the framework of Wang et al. 2024, "Let the quantum creep in" (see docs/quantum.md):

    from quantum import creep_model, swap, QuantumConv2d, QuantumLinear
    model = creep_model((1, 28, 28))      # level 0: Conv-Conv-Linear, no activations
    hybrid = swap(model, 2)               # NEW model: both convs and the linear layer quantum
    matched = control(hybrid)             # NEW model: each quantum layer -> same-size classical
    noisy = with_noise(hybrid, Noise(depolarizing=0.01, shots=1000))  # density-matrix path
"""

from quantum._control import (
                              ControlConv2d,
                              ControlLinear,
                              control,
                              control_layer,
                              parameter_counts,
)
from quantum._conv import QuantumConv2d
from quantum._linear import QuantumLinear, linear_qubits
from quantum._models import DEFAULT_CHANNELS, DEFAULT_SIZE, Preprocess, creep_model
from quantum._noise import Noise, with_noise
from quantum._swap import (
                           ORDERS,
                           classical_parameters,
                           match_layers,
                           max_level,
                           quantum_parameters,
                           swap,
                           swappable_layers,
)

__all__ = [
                              "DEFAULT_CHANNELS",
                              "DEFAULT_SIZE",
                              "ORDERS",
                              "ControlConv2d",
                              "ControlLinear",
                              "Noise",
                              "Preprocess",
                              "QuantumConv2d",
                              "QuantumLinear",
                              "classical_parameters",
                              "control",
                              "control_layer",
                              "creep_model",
                              "linear_qubits",
                              "match_layers",
                              "max_level",
                              "parameter_counts",
                              "quantum_parameters",
                              "swap",
                              "swappable_layers",
                              "with_noise",
]
