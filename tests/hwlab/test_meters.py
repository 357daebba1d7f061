"""hwlab.meters: latency, saved-for-backward memory (cross-checked by a live-tensor tracker), sizes."""

from __future__ import annotations

import time
import weakref

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from hwlab.meters import latency, model_bytes, param_count, training_memory
from hwlab.models import create_model


class LiveTensors(TorchDispatchMode):
    """Independent reference: bytes of storages created by ops inside the mode and still alive.

    Every op output whose storage is new (not an input's storage, e.g. not a view or an in-place
    result) is counted at its full size until the storage is freed (``weakref.finalize``).
    """

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            st = t.untyped_storage()
            key = st.data_ptr()
            if key in inputs or key in self.live or st.nbytes() == 0:
                continue
            self.live[key] = st.nbytes()
            self.current += st.nbytes()
            weakref.finalize(st, self._free, key)
        return out

    def _free(self, key):
        self.current -= self.live.pop(key)


def _data(shape, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("name,shape", [("lenet5", (1, 28, 28)), ("resnet20", (3, 16, 16)),
                                        ("vit-tiny", (1, 16, 16)), ("mlp", (1, 8, 8))])
def test_saved_peak_agrees_with_live_tensor_tracker_and_is_deterministic(name, shape):
    torch.manual_seed(0)
    model = create_model(name, in_shape=shape)
    xb, yb = _data(shape)
    at_end_of_forward = []

    def step():
        with LiveTensors() as live:
            x = xb.clone()  # made inside the step, so both meters see the input batch
            loss = nn.functional.cross_entropy(model(x), yb)
            at_end_of_forward.append(live.current)
            loss.backward()

    first = training_memory(step, params=[model])
    second = training_memory(step, params=[model])
    assert first == second  # exactly the same figure on repeated calls
    ref = at_end_of_forward[0]
    # Live at the end of the forward = saved activations + logits + loss, minus the labels
    # that cross-entropy saves but that existed before the step: within 2 % either way.
    assert abs(first.saved_peak_bytes - ref) <= 0.02 * ref, (first.saved_peak_bytes, ref)
    assert first.saved_peak_bytes > 16 * 4 * torch.Size(shape).numel()  # at least the input


def test_mlp_saved_bytes_exact():
    # Linear(64, 32) -> ReLU -> Linear(32, 10) on a batch of 8, float32:
    # addmm 1 saves the input (8 x 64), ReLU saves its output (8 x 32), which addmm 2 also saves
    # (same storage, counted once); log_softmax saves its output (8 x 10); nll_loss saves the
    # labels (8 int64) and its total_weight (one float32). Weights (and their transposed views)
    # are parameters: excluded.
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    r = training_memory(lambda: nn.functional.cross_entropy(model(x), y).backward(), [model])
    assert r.saved_peak_bytes == 4 * (8 * 64 + 8 * 32 + 8 * 10) + 8 * 8 + 4
    n = 64 * 32 + 32 + 32 * 10 + 10
    assert r.param_bytes == r.grad_bytes == 4 * n and r.optimizer_bytes == 0
    assert r.total_bytes == r.saved_peak_bytes + 2 * 4 * n
    unexcluded = training_memory(lambda: nn.functional.cross_entropy(model(x), y).backward())
    # without the exclusion the second weight (saved to compute the ReLU output's gradient)
    # counts; the first one is not saved, as the input batch needs no gradient
    assert unexcluded.saved_peak_bytes == r.saved_peak_bytes + 4 * 32 * 10


def test_freed_saved_tensors_stop_counting_local_learning_saves_memory():
    torch.manual_seed(0)
    front = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                          nn.ReLU())
    back = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 12 * 12, 10))
    aux = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    x, y = torch.rand(32, 1, 12, 12), torch.randint(0, 10, (32,))
    ce = nn.functional.cross_entropy

    def e2e():
        ce(back(front(x)), y).backward()

    def local():
        h = front(x)
        ce(aux(h), y).backward()  # frees the front half's saved tensors
        ce(back(h.detach()), y).backward()

    mods = [front, back, aux]
    full, split = training_memory(e2e, mods), training_memory(local, mods)
    twice = training_memory(lambda: (e2e(), e2e()), mods)
    assert twice.saved_peak_bytes == full.saved_peak_bytes  # the first step's tensors were freed
    assert split.saved_peak_bytes < 0.75 * full.saved_peak_bytes
    assert split == training_memory(local, mods)


def test_optimizer_and_grad_bytes_adam():
    model = create_model("lenet5", in_shape=(1, 8, 8))
    opt = torch.optim.Adam(model.parameters())
    x, y = _data((1, 8, 8))

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    r = training_memory(step, optimizer=opt)  # params taken from the optimizer
    n_tensors = len(list(model.parameters()))
    pbytes = 4 * param_count(model)
    assert r.param_bytes == r.grad_bytes == pbytes
    assert r.optimizer_bytes == 2 * pbytes + 4 * n_tensors  # exp_avg, exp_avg_sq, step scalars
    assert r.total_bytes == r.saved_peak_bytes + 4 * pbytes + 4 * n_tensors


def test_latency_counts_calls_and_measures_sleep():
    calls = []

    def fn(a, b=0):
        calls.append((a, b))
        time.sleep(0.002)

    lat = latency(fn, 1, b=2, warmup=2, repeats=7)
    assert len(calls) == 9 and calls[0] == (1, 2) and lat.repeats == 7
    assert 2.0 <= lat.min_ms <= lat.median_ms and lat.median_ms < 200
    assert lat.iqr_ms >= 0 and lat.mean_ms >= lat.min_ms


def test_model_bytes_and_param_count():
    lenet = create_model("lenet5", in_shape=(1, 28, 28))
    assert param_count(lenet) == 61706 and model_bytes(lenet) == {"float32": 4 * 61706}
    vgg = create_model("vgg-s", in_shape=(1, 8, 8), width=4)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in vgg.modules())
    mb = model_bytes(vgg)
    assert mb["int64"] == 8 * n_bn  # num_batches_tracked, one per BatchNorm
    running = sum(b.numel() for n, b in vgg.named_buffers() if "running" in n)
    assert mb["float32"] == 4 * (param_count(vgg) + running)
    assert model_bytes(vgg, buffers=False) == {"float32": 4 * param_count(vgg)}
    assert model_bytes(lenet.half()) == {"float16": 2 * 61706}
    lenet[0].weight.requires_grad_(False)
    assert param_count(lenet, trainable_only=True) == 61706 - 6 * 25


def test_errors():
    with pytest.raises(ValueError, match=r"repeats of latency must be an integer >= 1, got 0"):
        latency(lambda: None, repeats=0)
    with pytest.raises(ValueError, match=r"warmup of latency must be an integer >= 0, got -1"):
        latency(lambda: None, warmup=-1)
    with pytest.raises(ValueError, match=r"fn of latency must be a callable, got 'int'"):
        latency(3)
    with pytest.raises(ValueError, match=r"params of training_memory must be an iterable of "
                       r"tensors or nn.Modules, got \['str'\]"):
        training_memory(lambda: None, params=["w"])
    with pytest.raises(ValueError, match=r"optimizer of training_memory must be a "
                       r"torch.optim.Optimizer or None"):
        training_memory(lambda: None, optimizer="adam")
    with pytest.raises(ValueError, match=r"model of model_bytes must be an nn.Module"):
        model_bytes({})


def test_live_memory_counts_new_storages_until_freed():
    from hwlab.meters import live_memory

    base = torch.ones(100)

    def step():
        a = torch.empty(1000)  # 4,000 bytes
        b = base * 2  # 400 bytes: a new storage
        v = b.view(10, 10)  # a view: nothing new
        v.add_(1)  # in place: nothing new
        c = torch.empty(2000)  # 8,000 bytes: peak 12,400 with a and b alive
        del a
        d = torch.empty(500)  # 2,000 bytes, after a was freed
        step.keep = (b, c, d)

    r = live_memory(step)
    assert r.peak_bytes == 12_400
    assert r.end_bytes == 400 + 8_000 + 2_000
    del step.keep


def test_live_memory_sees_checkpoint_recomputation_the_saved_meter_cannot():
    from torch.utils.checkpoint import checkpoint

    from hwlab.meters import live_memory

    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Sequential(nn.Linear(64, 64), nn.Tanh()) for _ in range(6)])
    x = torch.rand(512, 64)  # activations (128 KiB each) outweigh the gradients

    def plain():
        net.zero_grad(set_to_none=True)
        net(x).sum().backward()

    def ckpt():
        net.zero_grad(set_to_none=True)
        h = checkpoint(net[:2], x, use_reentrant=False)
        h = checkpoint(net[2:4], h, use_reentrant=False)
        net[4:](h).sum().backward()

    saved = {f.__name__: training_memory(f, params=[net]).saved_peak_bytes for f in (plain, ckpt)}
    live = {f.__name__: live_memory(f).peak_bytes for f in (plain, ckpt)}
    act = 512 * 64 * 4  # one activation
    # the saved meter sees the input, the 2 segment outputs and the last 2 blocks' outputs
    # (plain: the input and 6 block outputs)
    assert saved["ckpt"] == 5 * act and saved["plain"] == 7 * act
    # the live meter also sees the recomputed blocks (and the gradients flowing back)
    assert live["ckpt"] > saved["ckpt"] + act
    assert live["ckpt"] < live["plain"]


def test_live_memory_rejects_a_non_callable():
    from hwlab.meters import live_memory

    with pytest.raises(ValueError, match="step_fn of live_memory must be a callable, got 'int'"):
        live_memory(3)
