"""inject / sample_faults on every storage format, bit-exact against a NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faultlab as fl
from faultlab._words import WORDS

FORMATS = ["float32", "float16", "bfloat16", "int8"]


def _model(tiny, fmt):
    if fmt == "int8":
        return fl.quantize_int8(tiny)
    return tiny.to(getattr(torch, fmt))


def _words(model):
    """name -> a NumPy copy of every parameter's storage words (unsigned)."""
    out = {}
    for n, p in model.named_parameters():
        _, udtype, tdtype = WORDS[p.dtype]
        out[n] = p.detach().view(tdtype).reshape(-1).numpy().view(udtype).copy()
    return out


def _reference(before, fmap):
    """Apply a FaultMap with plain NumPy, one entry at a time."""
    after = {n: w.copy() for n, w in before.items()}
    for p, i, b, k in zip(fmap.param, fmap.index, fmap.bit, fmap.kind):
        w = after[fmap.names[p]]
        bit = w.dtype.type(1 << int(b))
        kind = ("flip", "stuck0", "stuck1")[k]
        if kind == "flip":
            w[i] ^= bit
        elif kind == "stuck1":
            w[i] |= bit
        else:
            w[i] &= ~bit
    return after


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("fault", [fl.BitFlip(rate=0.02), fl.StuckAt(0, rate=0.05),
                                   fl.StuckAt(1, count=40)])
def test_inject_matches_numpy_reference_and_restores(tiny, fmt, fault):
    model = _model(tiny, fmt)
    before = _words(model)
    with fl.inject(model, fault, seed=3, include_bias=True) as fmap:
        during = _words(model)
    assert len(fmap) > 0
    expected = _reference(before, fmap)
    for n in before:
        assert np.array_equal(during[n], expected[n]), n
    after = _words(model)
    assert all(np.array_equal(after[n], before[n]) for n in before)
    # Which words changed, and only by faulty bits of the right kind.
    changed = sum(int(np.count_nonzero(during[n] != before[n])) for n in before)
    assert 0 < changed <= len(fmap)
    if isinstance(fault, fl.StuckAt):
        for n in before:
            diff = during[n] ^ before[n]
            # stuck-at-1 only sets bits, stuck-at-0 only clears them
            moved = during[n] & diff if fault.value == 1 else before[n] & diff
            assert np.array_equal(moved, diff)


def test_stuck_at_on_bit_already_at_value_changes_nothing(tiny):
    w = tiny[0].weight
    sign = (w.detach().view(torch.int32).reshape(-1) < 0).numpy()
    fmap = fl.sample_faults(tiny, fl.StuckAt(1, count=128, bits=[31]), layers=["0.weight"])
    assert len(fmap) == 128  # every sign bit of layer 0
    before = w.detach().clone()
    with fl.inject(tiny, fmap):
        assert bool((w.detach() <= 0).all())
        assert torch.equal(w.detach()[torch.from_numpy(sign).reshape(w.shape)],
                           before[torch.from_numpy(sign).reshape(w.shape)])
    assert torch.equal(w.detach(), before)


def test_restore_after_exception_and_nested(tiny):
    before = _words(tiny)
    outer, inner = fl.BitFlip(rate=0.05), fl.StuckAt(1, rate=0.05)
    with pytest.raises(RuntimeError, match="boom"), fl.inject(tiny, outer, seed=1), \
            fl.inject(tiny, inner, seed=2):
        raise RuntimeError("boom")
    assert all(np.array_equal(_words(tiny)[n], before[n]) for n in before)


def test_exponent_flip_changes_the_value_as_ieee754_says(tiny):
    w = tiny[3].weight
    fmap = fl.sample_faults(tiny, fl.BitFlip(count=1, bits=[30]), layers=["3"])
    i = int(fmap.index[0])
    old = float(w.detach().reshape(-1)[i])
    with fl.inject(tiny, fmap):
        new = float(w.detach().reshape(-1)[i])
    expected = np.array([old], np.float32).view(np.uint32) ^ np.uint32(1 << 30)
    assert new == float(expected.view(np.float32)[0])
    assert abs(new) > 1e30 or abs(new) < 1e-30  # bit 30 is the exponent's top bit


def test_replaying_a_map_and_same_seed_same_map(tiny):
    a = fl.sample_faults(tiny, fl.BitFlip(rate=0.01), seed=11)
    b = fl.sample_faults(tiny, fl.BitFlip(rate=0.01), seed=11)
    c = fl.sample_faults(tiny, fl.BitFlip(rate=0.01), seed=12)
    assert a == b and a != c and a.fingerprint() == b.fingerprint()
    with fl.inject(tiny, a) as got:
        assert got is a


def test_non_contiguous_parameter_uses_indexed_path(tiny):
    tiny[0].weight = torch.nn.Parameter(torch.randn(8, 16).t())  # a transposed (strided) view
    assert not tiny[0].weight.is_contiguous()
    before = _words(tiny)
    with fl.inject(tiny, fl.BitFlip(rate=0.05), seed=4) as fmap:
        during = _words(tiny)
    expected = _reference(before, fmap)
    assert all(np.array_equal(during[n], expected[n]) for n in before)
    assert all(np.array_equal(_words(tiny)[n], before[n]) for n in before)


def test_layers_and_bias_and_norm_selection(tiny):
    names = [n for n, _ in fl.eligible_parameters(tiny)]
    assert names == ["0.weight", "3.weight"]  # biases and BatchNorm excluded by default
    names = [n for n, _ in fl.eligible_parameters(tiny, include_bias=True, include_norm=True)]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"]
    fmap = fl.sample_faults(tiny, fl.BitFlip(rate=0.1), layers=["3"])
    assert fmap.names == ("3.weight",) and fmap.eligible_bits == 64 * 32
    fmap = fl.sample_faults(tiny, fl.BitFlip(rate=0.1), layers=["1.bias"])
    assert fmap.names == ("1.bias",)


def test_quantize_int8_is_new_model_close_to_float(tiny):
    before = _words(tiny)
    q = fl.quantize_int8(tiny)
    assert q is not tiny and all(np.array_equal(_words(tiny)[n], before[n]) for n in before)
    assert q[0].weight.dtype == torch.int8 and q[0].bias.dtype == torch.float32
    scale = float(tiny[0].weight.detach().abs().max()) / 127
    assert float(q[0].scale) == pytest.approx(scale)
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        err = (q(x) - tiny(x)).abs().max()
    assert float(err) < 0.1 * float(tiny(x).detach().abs().max())
    assert int(q[0].weight.abs().max()) == 127


def test_cost_follows_faults_not_size():
    # A 10^10-weight layer on the meta device (no memory): sampling must never touch every bit.
    big = torch.nn.Sequential(torch.nn.Linear(100_000, 100_000, bias=False, device="meta"))
    fmap = fl.sample_faults(big, fl.BitFlip(rate=1e-9), seed=0)
    assert fmap.eligible_bits == 32 * 10**10
    assert 200 < len(fmap) < 450  # Binomial(3.2e11, 1e-9): mean 320, sd 18
    assert int(fmap.index.max()) < 10**10


def test_unsorted_user_map_groups_words_correctly(tiny):
    fmap = fl.sample_faults(tiny, fl.BitFlip(count=60), seed=2, layers=["0"])
    order = np.random.default_rng(0).permutation(len(fmap))
    shuffled = fl.FaultMap(fmap.names, fmap.dtypes, fmap.param[order], fmap.index[order],
                           fmap.bit[order], fmap.kind[order])
    before = _words(tiny)
    with fl.inject(tiny, shuffled):
        during = _words(tiny)
    expected = _reference(before, fmap)
    assert all(np.array_equal(during[n], expected[n]) for n in before)


class _Residual(torch.nn.Module):
    """Not in the zoo: conv -> BatchNorm -> F.relu, a residual add, x.relu(), a reused ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.act = torch.nn.ReLU(inplace=True)
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        h = torch.nn.functional.relu(self.bn(self.conv1(x)))
        h = self.act(self.conv2(h) + h)
        return self.fc(self.act(h).relu().flatten(1))


def test_one_record_per_map_on_a_residual_user_model_with_bias_and_norm():
    from faultlab._inject import apply_fault_map, restore

    torch.manual_seed(0)
    model = _Residual().eval()
    before = _words(model)
    fmap = fl.sample_faults(model, fl.BitFlip(rate=0.01), seed=5, include_bias=True,
                            include_norm=True)
    assert len({fmap.names[p] for p in fmap.param}) >= 6  # faults in many parameters
    recs = apply_fault_map(model, fmap)
    assert len(recs) == 1  # the whole map went through one kernel call
    during = _words(model)
    expected = _reference(before, fmap)
    assert all(np.array_equal(during[n], expected[n]) for n in before)
    flipped = sum(int(np.unpackbits((during[n] ^ before[n]).view(np.uint8)).sum()) for n in before)
    assert recs[0].changed == flipped == len(fmap)  # distinct flips: every one changes its bit
    restore(recs)
    assert all(np.array_equal(_words(model)[n], before[n]) for n in before)


def test_int8_weights_and_float_biases_in_one_map():
    torch.manual_seed(1)
    q = fl.quantize_int8(_Residual().eval())
    before = _words(q)
    with fl.inject(q, fl.StuckAt(1, rate=0.05), seed=2, include_bias=True) as fmap:
        during = _words(q)
    assert {"int8", "float32"} <= {fmap.dtypes[p] for p in np.unique(fmap.param)}
    expected = _reference(before, fmap)
    assert all(np.array_equal(during[n], expected[n]) for n in before)
    assert all(np.array_equal(_words(q)[n], before[n]) for n in before)


def test_prepared_views_follow_replaced_parameters_and_modules(tiny):
    from faultlab._words import model_views

    fmap = fl.sample_faults(tiny, fl.BitFlip(count=20), seed=1, layers=["0"])
    with fl.inject(tiny, fmap):
        pass
    views = model_views(tiny)
    assert model_views(tiny) is views  # reused while nothing changed
    for change in ("data", "parameter", "module"):
        if change == "data":
            tiny[0].weight.data = torch.randn(16, 8)
        elif change == "parameter":
            tiny[0].weight = torch.nn.Parameter(torch.randn(16, 8))
        else:
            tiny[0] = torch.nn.Linear(8, 16)
        assert model_views(tiny) is not views
        views = model_views(tiny)
        before = _words(tiny)
        with fl.inject(tiny, fmap):
            during = _words(tiny)
        expected = _reference(before, fmap)
        assert np.array_equal(during["0.weight"], expected["0.weight"]), change
        assert all(np.array_equal(_words(tiny)[n], before[n]) for n in before)


def test_bad_entries_are_refused_before_any_change(tiny):
    fmap = fl.sample_faults(tiny, fl.BitFlip(count=10), seed=0)

    def variant(**kw):
        parts = {a: getattr(fmap, a).copy() for a in ("param", "index", "bit", "kind")}
        for k, (i, v) in kw.items():
            parts[k][i] = v
        return fl.FaultMap(fmap.names, fmap.dtypes, **parts)

    before = _words(tiny)
    cases = [(variant(index=(9, 10**6)), r"element indices in \[0, \d+\) for parameter"),
             (variant(index=(9, -1)), r"element indices in \[0, \d+\) .* got -1"),
             (variant(param=(9, 7)), r"parameter codes below 2, got 7"),
             (variant(kind=(9, 5)), r"a FaultMap of kinds flip, stuck1, stuck0, got 5")]
    for bad, match in cases:
        with pytest.raises(ValueError, match=r"fault_model_or_map of inject must be " + match):
            fl.inject(tiny, bad).__enter__()
        assert all(np.array_equal(_words(tiny)[n], before[n]) for n in before)


def test_mixed_fast_and_indexed_parameters_in_one_map(tiny):
    tiny[3].weight = torch.nn.Parameter(torch.randn(16, 4).t())  # non-contiguous: indexed path
    before = _words(tiny)
    with fl.inject(tiny, fl.StuckAt(0, rate=0.1), seed=6) as fmap:
        during = _words(tiny)
    assert set(np.unique(fmap.param)) == {0, 1}
    expected = _reference(before, fmap)
    assert all(np.array_equal(during[n], expected[n]) for n in before)
    assert all(np.array_equal(_words(tiny)[n], before[n]) for n in before)


def test_prepared_views_do_not_keep_a_model_alive():
    import gc
    import weakref

    from faultlab._words import _VIEWS

    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with fl.inject(model, fl.BitFlip(count=3)):
        pass
    assert model in _VIEWS
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None  # the cached views did not hold on to it
