"""faultlab.memory ECC: Hsiao SEC-DED decoded from the error pattern, checked against an
independent dense decoder written here from the published (72,64) matrix (Hsiao 1970, Fig. 6)."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import faultlab as fl
from faultlab.memory import CODES, ECC, MemoryLayout, RowFault, memory_map

# Hsiao (1970), Fig. 6: rows of H for the 64 data columns; the 8 check columns are the identity.
HSIAO_72_64 = """
11111111 00001111 00001111 00001100 01101000 10001000 10001000 10000000
11110000 11111111 00000000 11110011 01100100 01000100 01000100 01000000
00110000 11110000 11111111 00001111 00000010 00100010 00100010 00100110
11001111 00000000 11110000 11111111 00000001 00010001 00010001 00010110
01101000 10001000 10001000 10000000 11111111 00001111 00000000 11110011
01100100 01000100 01000100 01000000 11110000 11111111 00001111 00001100
00000010 00100010 00100010 00100110 11001111 00000000 11111111 00001111
00000001 00010001 00010001 00010110 00110000 11110000 11110000 11111111
"""


def dense_h():
    rows = [r.replace(" ", "") for r in HSIAO_72_64.strip().splitlines()]
    data = np.array([[int(ch) for ch in r] for r in rows], dtype=np.int64)  # 8 x 64
    return np.concatenate([data, np.eye(8, dtype=np.int64)], axis=1)  # 8 x 72


def reference_decode(h, e):
    """Hsiao decoder on a 0/1 error vector e (72,): (outcome, delivered data error vector)."""
    s = h @ e % 2
    if not s.any():
        return ("silent" if e.any() else "clean"), e[:64]
    match = np.flatnonzero((h.T == s).all(axis=1))
    if match.size:
        out = e.copy()
        out[match[0]] ^= 1
        return ("corrected" if not out.any() else "miscorrected"), out[:64]
    return "detected", e[:64]


def words_of(model):
    """uint64 data words of a Linear weight (float32, 2 per word, element 2i in the low half)."""
    w = model.weight.detach().reshape(-1).view(torch.int32).numpy().view(np.uint32)
    return w[0::2].astype(np.uint64) | (w[1::2].astype(np.uint64) << np.uint64(32))


def linear(n_in, n_out, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = nn.Linear(n_in, n_out)
    with torch.no_grad():
        m.weight.copy_(torch.randn(m.weight.shape, generator=g))
    return m


def test_published_matrix_properties_and_library_columns():
    h = dense_h()
    cols = [tuple(c) for c in h.T]
    assert len(set(cols)) == 72  # distinct
    w = h.sum(axis=0)
    assert set(w[:64]) == {3, 5} and (w[:64] == 3).sum() == 56 and (w[:64] == 5).sum() == 8
    assert (h.sum(axis=1) == 27).all()  # Hsiao's balanced rows
    lib = CODES["secded72_64"].columns
    assert [sum(int(h[i, j]) << i for i in range(8)) for j in range(72)] == list(lib)
    for name, r in (("secded72_64", 8), ("secded39_32", 7)):
        code = CODES[name]
        assert code.r == r and len(set(code.columns)) == code.n
    assert [c for c in CODES["parity"].columns[:64:8]] == [1 << i for i in range(8)]
    c39 = CODES["secded39_32"]
    assert all((c).bit_count() % 2 == 1 for c in c39.columns)
    assert sorted(sum((c >> i) & 1 for c in c39.columns[:32]) for i in range(7)) == \
        [13, 13, 14, 14, 14, 14, 14]
    assert CODES["secded72_64"].overhead == 0.125 and CODES["secded39_32"].overhead == 7 / 32


def test_encode_gives_zero_syndrome_of_stored_words():
    h = dense_h()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 2**63, size=50, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    chk = CODES["secded72_64"].encode(data)
    for d, c in zip(data, chk):
        bits = np.array([(int(d) >> j) & 1 for j in range(64)] + [(int(c) >> i) & 1
                                                                  for i in range(8)])
        assert not (h @ bits % 2).any()


def test_every_single_error_leaves_the_weights_bit_identical():
    m = linear(48, 3)  # 144 weights = 72 words: word w gets its single error at bit w
    before = m.weight.detach().clone()
    fmap = memory_map(m, np.arange(72), np.arange(72), code="secded72_64")
    assert len(fmap) == 0 and fmap.extra["corrected_words"] == 72
    assert fmap.extra["detected_words"] == fmap.extra["miscorrected_words"] == 0
    with fl.inject(m, fmap):
        assert torch.equal(m.weight.view(torch.int32), before.view(torch.int32))


def test_every_double_error_is_detected_and_zeroes_exactly_its_word():
    pairs = np.array(list(combinations(range(72), 2)))  # all 2556 double errors
    m = linear(64, 80)  # 5120 weights = 2560 words
    before = words_of(m)
    words = np.repeat(np.arange(len(pairs)), 2)
    fmap = memory_map(m, words, pairs.reshape(-1), code="secded72_64", policy="zero")
    assert fmap.extra["detected_words"] == len(pairs)
    assert fmap.extra["corrected_words"] == fmap.extra["miscorrected_words"] == 0
    with fl.inject(m, fmap):
        after = words_of(m)
        assert (after[: len(pairs)] == 0).all()
        assert np.array_equal(after[len(pairs):], before[len(pairs):])  # untouched words
    keep = memory_map(m, words, pairs.reshape(-1), code="secded72_64", policy="keep")
    with fl.inject(m, keep):
        err = words_of(m) ^ before
    expect = np.zeros(len(before), dtype=np.uint64)
    for w, (a, b) in enumerate(pairs):
        expect[w] = sum(np.uint64(1) << np.uint64(j) for j in (a, b) if j < 64)
    assert np.array_equal(err, expect)


@pytest.mark.parametrize("policy", ["zero", "keep"])
def test_counts_and_weights_agree_with_independent_decoder(policy):
    h = dense_h()
    rng = np.random.default_rng(1)
    m = linear(40, 20)  # 400 words
    before = words_of(m)
    words, bits, expected = [], [], {}
    for w in range(400):
        k = int(rng.integers(1, 7))  # 1..6 errors per word
        pos = rng.choice(72, size=k, replace=False)
        words += [w] * k
        bits += list(pos)
        e = np.zeros(72, dtype=np.int64)
        e[pos] = 1
        expected[w] = reference_decode(h, e)
    fmap = memory_map(m, np.array(words), np.array(bits), code="secded72_64", policy=policy)
    counts = {o: sum(v[0] == o for v in expected.values())
              for o in ("corrected", "detected", "miscorrected", "silent")}
    assert counts["miscorrected"] > 20 and counts["detected"] > 100  # the test bites
    for o, n in counts.items():
        assert fmap.extra[f"{o}_words"] == n, o
    with fl.inject(m, fmap):
        after = words_of(m)
    for w, (outcome, data_err) in expected.items():
        mask = sum(int(b) << j for j, b in enumerate(data_err))
        want = 0 if (outcome == "detected" and policy == "zero") else int(before[w]) ^ mask
        assert int(after[w]) == want, (w, outcome)


def test_parity_detects_odd_bytes_and_misses_even():
    m = linear(8, 2)  # 8 words
    # word 0: one flip (detected); word 1: two flips in one byte (unseen); word 2: a check bit
    fmap = memory_map(m, [0, 1, 1, 2], [5, 9, 10, 64], code="parity", policy="zero")
    assert fmap.extra["detected_words"] == 2 and fmap.extra["silent_words"] == 1
    before = words_of(m)
    with fl.inject(m, fmap):
        after = words_of(m)
    assert after[0] == 0 and after[2] == 0
    assert after[1] == before[1] ^ np.uint64((1 << 9) | (1 << 10))


def test_stuck_at_errors_count_only_where_the_stored_bit_differs():
    m = linear(8, 2)
    d = int(words_of(m)[0])
    ones = [j for j in range(64) if (d >> j) & 1]
    zeros = [j for j in range(64) if not (d >> j) & 1]
    chk = int(CODES["secded72_64"].encode(np.array([d], dtype=np.uint64))[0])
    check_ones = [64 + i for i in range(8) if (chk >> i) & 1]
    # stuck-at-1 on bits already 1 (data and check): no effective error at all
    fmap = memory_map(m, [0] * (len(ones) + len(check_ones)), ones + check_ones,
                      kind="stuck1", code="secded72_64")
    assert len(fmap) == 0 and fmap.extra["faulty_words"] == 0
    # one effective stuck-at-0 among ineffective ones: corrected
    fmap = memory_map(m, [0, 0, 0], [ones[0], zeros[0], zeros[1]], kind="stuck0",
                      code="secded72_64")
    assert fmap.extra["corrected_words"] == 1 and len(fmap) == 0


def test_bitflip_rate_hits_check_bits_and_cost_is_per_fault():
    m = linear(256, 64)  # 8192 words x 72 bits
    fmap = fl.sample_faults(m, ECC("secded72_64", fl.BitFlip(rate=2e-3)), seed=4)
    ex = fmap.extra
    total = 8192 * 72
    assert fmap.eligible_bits == total
    assert abs(ex["faulty_bits"] - total * 2e-3) < 5 * (total * 2e-3) ** 0.5
    # words with >= 2 errors at p = 2e-3: 8192 * P(X >= 2), X ~ Binomial(72, p)
    p2 = 1 - (1 - 2e-3) ** 72 - 72 * 2e-3 * (1 - 2e-3) ** 71
    assert abs(ex["detected_words"] + ex["miscorrected_words"] - 8192 * p2) < 5 * (8192 * p2) ** .5
    assert ex["code_overhead"] == 0.125
    assert fmap == fl.sample_faults(m, ECC("secded72_64", fl.BitFlip(rate=2e-3)), seed=4)


def test_secded39_32_corrects_singles_on_a_32_bit_layout():
    m = linear(39, 1)  # 39 words of one float32
    before = m.weight.detach().clone()
    lay = MemoryLayout(word_bits=32, row_bits=32 * 39)
    fmap = memory_map(m, np.arange(39), np.arange(39), code="secded39_32", layout=lay)
    assert fmap.extra["corrected_words"] == 39 and len(fmap) == 0
    fmap = memory_map(m, [0, 0], [3, 35], code="secded39_32", layout=lay)
    with fl.inject(m, fmap):
        assert m.weight[0, 0].item() == 0.0 and torch.equal(m.weight[0, 1:], before[0, 1:])


def test_errors_name_the_parameter():
    with pytest.raises(ValueError, match=r"code of ECC must be one of secded72_64, "
                                         r"secded39_32, parity, got 'hamming'"):
        ECC("hamming", fl.BitFlip(rate=1e-3))
    with pytest.raises(ValueError, match=r"inner of ECC must be a BitFlip / StuckAt without bits"):
        ECC("secded72_64", fl.BitFlip(rate=1e-3, bits=(30,)))
    with pytest.raises(ValueError, match=r"policy of ECC must be one of zero, keep, got 'drop'"):
        ECC("secded72_64", fl.BitFlip(rate=1e-3), policy="drop")
    with pytest.raises(ValueError, match=r"layout of ECC must be a MemoryLayout with "
                                         r"word_bits=32"):
        ECC("secded39_32", fl.BitFlip(rate=1e-3), layout=MemoryLayout())
    with pytest.raises(ValueError, match=r"bit of memory_map must be bit indices in \[0, 72\)"):
        memory_map(linear(4, 4), [0], [72], code="secded72_64")


class Residual(nn.Module):
    """Not in the zoo: conv -> BatchNorm -> F.relu, a residual add, x.relu(), a linear head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        y = F.relu(self.bn(self.conv1(x)))
        y = (y + self.conv2(y)).relu()
        return self.head(y.mean(dim=(2, 3)))


def test_residual_model_with_ecc_and_row_faults():
    torch.manual_seed(0)
    m = Residual().eval()
    x = torch.randn(4, 3, 8, 8)
    clean = m(x)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    names = ("conv1.weight", "conv2.weight", "head.weight")
    mem = MemoryLayout().bind(m, 8)
    # one single error in every word: SEC-DED delivers the clean model exactly
    fmap = memory_map(m, np.arange(mem.words), np.arange(mem.words) % 72, code="secded72_64")
    assert fmap.names == names and len(fmap) == 0
    assert fmap.extra["corrected_words"] == mem.words
    # a faulty row without ECC: the faults hit the weights the layout puts in that row
    rows = fl.sample_faults(m, RowFault(count=1, layout=MemoryLayout(row_bits=64 * 4)), seed=1)
    hit = set(np.asarray(rows.names)[np.unique(rows.param)])
    assert len(rows) > 0 and hit <= set(names)
    with fl.inject(m, rows):
        assert not torch.equal(m(x), clean)
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k])


def test_residual_model_int8_words_bursts_chip_map_and_nested_campaign():
    from faultlab.memory import Burst, ChipMap

    torch.manual_seed(1)
    q = fl.quantize_int8(Residual().eval())  # int8 conv / linear words, 8 per 64-bit word
    mem = MemoryLayout().bind(q, 8)
    assert mem.dtypes == ("int8", "int8", "int8") and mem.words == (216 + 576 + 32 + 7) // 8
    fmap = memory_map(q, np.arange(mem.words), (7 * np.arange(mem.words)) % 72,
                      code="secded72_64")
    assert len(fmap) == 0 and fmap.extra["corrected_words"] == mem.words
    x = torch.randn(16, 3, 8, 8)
    clean = q(x)
    state = {k: v.clone() for k, v in q.state_dict().items()}
    burst = fl.sample_faults(q, ECC("secded72_64", Burst(count=6, length=4)), seed=0)
    chip = fl.sample_faults(q, ChipMap(np.array([0, 0]), np.array([3, 80]), np.array([1, 0]),
                                       (1, 9216), offset=(0, 0)))
    assert chip.names[chip.param[0]] == "conv1.weight" and chip.index.tolist() == [0, 10]
    assert chip.bit.tolist() == [3, 0] and chip.kind.tolist() == [2, 1]  # word 1 bit 16 = elem 10
    for fm in (burst, chip):
        with fl.inject(q, fm):
            out = q(x)
        assert out.shape == clean.shape
    for k, v in q.state_dict().items():
        assert torch.equal(v, state[k])
    y = clean.argmax(1)
    df = fl.campaign(q, (x, y), [ECC("secded72_64", fl.BitFlip(rate=r)) for r in (1e-3, 3e-2)],
                     trials=3, nested=True, clean=False)
    assert len(df) == 6 and df.groupby("trial").seed.nunique().max() == 1
