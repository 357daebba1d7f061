"""What a bit-flip attacker pays to beat SEC-DED: the physical flips behind each data flip.

Memory layout: ``faultlab.memory.MemoryLayout``'s (every parameter starts a new 64-bit word;
flat weights ``8w .. 8w+7`` form word ``w``, little-endian: bit ``i`` of weight ``8w + k`` is
data bit ``8k + i``), each word stored as a Hsiao (72, 64) codeword (``secded72_64``, the code
of ``faultlab.memory.ECC`` and of the mitigation study's ``secded`` variant). The decoder corrects a syndrome equal to one column and flags any other
non-zero syndrome as uncorrectable, so an attacker who wants the decoded data of a word to differ
from the stored data by the bit set ``D`` (non-empty) must flip a physical pattern ``P`` whose
decoded error is ``D``. The cheapest such pattern costs (proof by cases in the docstring of
:func:`word_cost`)::

    cost(D) = |D| + max(wt(S_D) - 1, 0),  S_D = XOR of the H columns of D

(flip the data bits of ``D`` and all but one of the check bits set in ``S_D``: the decoder then
"corrects" the remaining check bit and returns the attacker's data, with no uncorrectable-error
alarm). A single data flip costs the weight of its column: 3 for 56 of the 64 data bits, 5 for
the other 8. The ECC-aware search (:func:`faultlab.bit_flip_attack` with ``ecc="secded"``)
ranks flips by loss increase per physical flip and reports the physical flips it needed.
"""

from __future__ import annotations

import numpy as np
import torch

from faultlab.memory._codes import get_code

__all__ = ["EccCost", "word_cost"]


def word_cost(n_data: np.ndarray, syndrome: np.ndarray) -> np.ndarray:
    """Physical flips for decoded data errors of ``n_data`` bits with syndrome ``syndrome``.

    A pattern ``P`` (data part ``P_d``, check part ``C``) decodes to data error ``D`` only if its
    syndrome is 0 or a check column (``P_d = D``), or the column of a data bit ``b`` (``P_d = D
    xor {b}``). Case 1: the check bits must cancel ``S_D`` up to at most one left, so ``|C| >=
    wt(S_D) - 1``. Case 2, ``b`` in ``D``: ``|P_d| = |D| - 1`` and ``C`` must equal ``S_D``
    (``|C| = wt(S_D)``): the same total; ``b`` not in ``D``: one more. Hence the formula (0 for
    ``n_data == 0``).
    """
    weight = np.bitwise_count(np.asarray(syndrome, dtype=np.uint8)).astype(np.int64)
    n = np.asarray(n_data, dtype=np.int64)
    return np.where(n > 0, n + np.maximum(weight - 1, 0), 0)


class EccCost:
    """Per attacked parameter and 64-bit word: the data bits flipped so far (count and
    syndrome), so the marginal physical cost of any candidate flip is one vectorised lookup."""

    def __init__(self, targets: dict, code: str = "secded72_64"):
        self.code = get_code(code, "bit_flip_attack")
        self.columns = np.asarray(self.code.columns[:self.code.k], dtype=np.uint8)
        self.count = {n: np.zeros(-(-m.weight.numel() // 8), np.int64) for n, m in
                      targets.items()}
        self.syndrome = {n: np.zeros_like(c, dtype=np.uint8) for n, c in self.count.items()}
        self.flipped = {n: set() for n in targets}

    @property
    def total(self) -> int:
        """Physical flips of everything committed so far."""
        return int(sum(word_cost(self.count[n], self.syndrome[n]).sum() for n in self.count))

    def _site(self, flat, bits):
        flat = np.asarray(flat, dtype=np.int64)
        return flat // 8, (flat % 8) * 8 + np.asarray(bits, dtype=np.int64)

    def marginal(self, name: str, flat, bits) -> np.ndarray:
        """Extra physical flips of toggling each single data bit (flat weight index, bit)."""
        word, j = self._site(flat, bits)
        cnt, syn = self.count[name][word], self.syndrome[name][word]
        already = np.array([(int(f), int(b)) in self.flipped[name]
                            for f, b in zip(np.asarray(flat).tolist(), np.asarray(bits).tolist())],
                           dtype=bool) if self.flipped[name] else np.zeros(len(word), bool)
        new_cnt = cnt + np.where(already, -1, 1)
        return word_cost(new_cnt, syn ^ self.columns[j]) - word_cost(cnt, syn)

    def cost_of(self, name: str, flat, bits) -> int:
        """Extra physical flips of toggling all of (flat, bits) together (exact, joint)."""
        before = self.total
        self.commit(name, flat, bits)
        after = self.total
        self.commit(name, flat, bits)  # toggling twice restores the state
        return after - before

    def commit(self, name: str, flat, bits) -> None:
        word, j = self._site(flat, bits)
        for w, jj, f, b in zip(word.tolist(), j.tolist(), np.asarray(flat).tolist(),
                               np.asarray(bits).tolist()):
            key = (int(f), int(b))
            if key in self.flipped[name]:
                self.flipped[name].remove(key)
                self.count[name][w] -= 1
            else:
                self.flipped[name].add(key)
                self.count[name][w] += 1
            self.syndrome[name][w] ^= self.columns[jj]

    def marginal_grid(self, name: str, top: torch.Tensor) -> torch.Tensor:
        """k x 8 marginal costs of every bit of the weights ``top`` (flat indices)."""
        flat = np.repeat(top.numpy(), 8)
        bits = np.tile(np.arange(8), len(top))
        return torch.from_numpy(self.marginal(name, flat, bits).reshape(len(top), 8))
