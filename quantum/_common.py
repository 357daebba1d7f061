"""Shared pieces of the quantum layers: the PennyLane device/QNode factory and argument checks.

The layers build their QNode lazily and drop it when pickled or deep-copied (``__getstate__``), so
a model that holds quantum layers copies and saves like any torch module.
"""

from __future__ import annotations

import math
from typing import Any

import pennylane as qml
import torch

from hwlab.errors import check

DEFAULT_DEVICE = "default.qubit"  # fastest on CPU at 2-7 qubits with broadcasting (paper note)
DEFAULT_DIFF = "backprop"  # one batched torch graph; parameter-shift cannot differentiate inputs
MAX_QUBITS = 7  # the paper's width; above 5 qubits SpecialUnitary sums 4**n - 1 words in Python


def check_backend(device: Any, diff_method: Any, caller: str) -> tuple[str, str]:
    """A PennyLane device name and a differentiation method, both strings."""
    check(isinstance(device, str) and device != "", "device", caller,
          "a PennyLane device name such as 'default.qubit' or 'lightning.qubit'", device)
    check(isinstance(diff_method, str) and diff_method != "", "diff_method", caller,
          "a PennyLane diff_method such as 'backprop', 'adjoint' or 'parameter-shift'",
          diff_method)
    return device, diff_method


def qubits_for(dim: int) -> int:
    """Smallest number of qubits whose state dimension ``2**n`` holds ``dim`` entries (>= 1)."""
    return max(1, math.ceil(math.log2(max(dim, 1))))


def make_qnode(func, n_wires: int, device: str, diff_method: str) -> qml.QNode:
    """``func`` as a torch QNode on ``n_wires`` wires of ``device``."""
    dev = qml.device(device, wires=n_wires)
    return qml.QNode(func, dev, interface="torch", diff_method=diff_method)


def su_matrices(theta: torch.Tensor, n_wires: int) -> torch.Tensor:
    """Matrices ``exp(i sum_m theta_m P_m)`` of ``qml.SpecialUnitary`` (..., 2**n, 2**n)."""
    return qml.SpecialUnitary.compute_matrix(theta, n_wires)


class LazyQNode:
    """Mixin: ``self.qnode`` is built on first use and not copied or pickled with the module."""

    _qnode_cache: qml.QNode | None = None

    def _build_qnode(self) -> qml.QNode:  # pragma: no cover - each layer overrides
        raise NotImplementedError

    @property
    def qnode(self) -> qml.QNode:
        if self._qnode_cache is None:
            self._qnode_cache = self._build_qnode()
        return self._qnode_cache

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_qnode_cache"] = None  # devices and tapes are rebuilt, never copied
        return state
