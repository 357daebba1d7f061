"""Cut any traceable network into K local modules.

A network is first seen as a *chain*: an ``nn.Sequential`` whose children run in order. A zoo
``nn.Sequential`` is its own chain (a residual or a transformer block is one child). Any other
model is traced with :mod:`hwlab.graph` and cut at every graph cut point (a node whose value
carries everything the rest of the network needs: block boundaries of a ResNet, never inside a
residual block); the chain's children are the segments between consecutive cut points
(``GraphModule`` views sharing the model's parameters), so chaining them computes the model.

A *unit* is one weight-bearing child (a conv, a linear, a block; for a segment: one that applies a
conv / linear, per ``hwlab.graph``) together with the weight-free children and normalisation
layers that follow it (ReLU, pooling, BatchNorm after a stem conv). The *tail* is the classifier:
the last weight-bearing child with the pooling / flatten / final-norm children just before it.
Cuts go only between units; the tail always belongs to the last module. For ResNet-32 this gives
16 units (the stem and 15 residual blocks), the layer count InfoPro and AugLocal use, and
``balance="layers"`` with K = 4 reproduces InfoPro's published ResNet-32 split (4 units per
module); a researcher's ResNet-18 gives 9 units (stem + 8 BasicBlocks).

Only a single tensor is a cut: a node whose value is a tuple (a leaf module or ``x.chunk`` that
returns two halves, as in ShuffleNetV2's channel split; recognised by its users all being
``getitem`` of an integer, or by its recorded ``tensor_meta``) is never a segment boundary, and a
chain child whose output is not a tensor (an ``nn.Sequential`` child returning a tuple, seen on
the probe batch) is joined with the next child, so no local module ever hands a tuple on.

Tracing freezes Python branches on ``self.training`` (drop-connect, ``F.dropout(...,
training=self.training)``): a non-Sequential model is traced in TRAIN mode (local learning trains
the chain; the rules evaluate with the model itself, which still reads its own mode). When the
train- and eval-mode graphs differ, :func:`as_chain` warns (``UserWarning``) naming the modules
whose ``forward`` reads ``self.training``: the chain keeps the train-mode branch in both modes.

``balance="memory"`` (InfoPro*, Wang et al. 2021, Sec. 5) measures, on a sample batch, the bytes that
autograd saves for backward inside each unit (``torch.autograd.graph.saved_tensors_hooks``,
deduplicated by storage, parameters excluded) and places the cuts to minimise the largest module
(exact linear-partition dynamic programme). The probe runs on a deep copy, so BatchNorm running
statistics of the model are untouched.
"""

from __future__ import annotations

import copy
import difflib
import operator
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from hwlab.errors import check, check_choice, check_positive_int, fail, is_int

__all__ = ["Partition", "as_chain", "partition", "split", "unit_saved_bytes"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


@dataclass(frozen=True)
class Partition:
    """Where the cuts of one split fall (indices into the model's children)."""

    units: tuple[tuple[int, int], ...]  # (start, stop) child range of each body unit
    tail: tuple[int, int]  # child range of the classifier tail
    bounds: tuple[tuple[int, int], ...]  # (start, stop) child range of each local module
    unit_bounds: tuple[tuple[int, int], ...]  # (first unit, stop unit) of each local module

    @property
    def last_units(self) -> tuple[int, ...]:
        """Index of the last body unit of each module (AugLocal's layer index l)."""
        return tuple(stop - 1 for _, stop in self.unit_bounds)


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def _is_weight_child(m: nn.Module) -> bool:
    flag = getattr(m, "_hwlab_weights", None)  # a graph segment: does it apply a conv / linear?
    if flag is not None:
        return bool(flag)
    return _has_params(m) and not isinstance(m, _NORMS)


def _units_and_tail(model: nn.Sequential, shapes=None
                    ) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Body units and tail; ``shapes`` (per child, None = not a tensor) joins tuple outputs on."""
    children = list(model.children())
    joined = {i for i, s in enumerate(shapes or ()) if s is None}  # no cut right after child i
    weights = [i for i, c in enumerate(children) if _is_weight_child(c)]
    check(len(weights) >= 1, "model", "split", "a network with a weight layer",
          type(model).__name__)
    t = weights[-1]
    while t > 0 and (not _is_weight_child(children[t - 1]) or t - 1 in joined):
        t -= 1  # pooling, flatten and the final norm belong to the classifier tail
    starts = [i for i in weights if i < t and i - 1 not in joined]
    if starts:
        starts[0] = 0  # parameter-free children at the very start join the first unit
    units = [(s, e) for s, e in zip(starts, starts[1:] + [t])]
    return units, (t, len(children))


def _check_model(model, caller: str) -> nn.Sequential:
    """The chain of ``model`` (see the module docstring)."""
    check(isinstance(model, nn.Module), "model", caller, "an nn.Module", type(model).__name__)
    return as_chain(model, caller=caller)


def as_chain(model: nn.Module, leaf_modules=(), caller: str = "as_chain") -> nn.Sequential:
    """``model`` as an ``nn.Sequential`` of children that run in order, sharing its parameters.

    An ``nn.Sequential`` is returned as is; any other model is traced (``hwlab.graph``) and cut at
    every cut point; each segment records whether it applies a weight layer. A model torch.fx
    cannot trace is an error naming the failing submodule and the ``leaf_modules`` fix.
    """
    if isinstance(model, nn.Sequential):
        return model
    import hwlab.graph as hg

    modes = {m: m.training for m in model.modules()}
    try:
        g = _trace_in_train_mode(model, leaf_modules, caller)
        nodes = {n.name: n for n in g.module.graph.nodes}
        cuts = [c for c in g.cuts if _single_tensor(nodes[c.node])]  # never cut at a tuple
        segments = g.split(cuts)
    finally:
        for m, mode in modes.items():  # segments share the leaves: give back every mode
            m.training = mode
    own = dict(model.named_modules())
    for seg in segments:
        seg._hwlab_weights = bool(hg.trace(seg).weight_layers)
        for name, sub in seg.named_modules():  # containers fx made: the mode of the model's
            src = own.get(name, model)
            if sub is not src:
                sub.training = src.training
    return nn.Sequential(*segments)


def _single_tensor(node) -> bool:
    """False when the node's value is known not to be one tensor (a tuple, a list, a size).

    Either its recorded ``tensor_meta`` is not a ``TensorMetadata`` (a tuple of them), or every
    user reads an element by integer index (``a, b = split(x)``, ``x.chunk(2, 1)``).
    """
    from torch.fx.passes.shape_prop import TensorMetadata

    meta = node.meta.get("tensor_meta")
    if meta is not None and not isinstance(meta, TensorMetadata):
        return False
    users = list(node.users)
    return not (users and all(
        u.op == "call_function" and u.target is operator.getitem and len(u.args) > 1
        and isinstance(u.args[1], int) for u in users))


def _trace_in_train_mode(model: nn.Module, leaf_modules, caller: str):
    """``hwlab.graph.trace`` of ``model`` with every submodule in train mode (left so: the caller
    restores the modes once the segments are cut).

    Also traces in eval mode: when the two graphs differ, some traced ``forward`` branches on
    ``self.training`` and the chain keeps the train-mode branch in both modes: a warning names
    the modules whose code differs.
    """
    import hwlab.graph as hg

    model.train(False)
    g_eval = hg.trace(model, leaf_modules=leaf_modules)
    model.train(True)  # the caller restores the modes
    g = hg.trace(model, leaf_modules=leaf_modules)
    where = _mode_dependent_scopes(g.module.graph, g_eval.module.graph)
    if where:
        names = ", ".join(repr(w) if w else "the model's own forward" for w in where)
        warnings.warn(
            f"{caller}: the forward of {names} reads self.training (its train- and eval-mode "
            f"graphs differ); the chain is traced in train mode and keeps the train-mode branch "
            f"in both modes (local rules evaluate with the model itself, which reads its own "
            f"mode; mark the module as a leaf, leaf_modules=[...], to keep both branches)",
            UserWarning, stacklevel=3)
    return g


def _owner(node) -> str:
    """Qualified name of the module whose ``forward`` created ``node`` ("" = the model)."""
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    names = [v[0] if isinstance(v, tuple) else str(v) for v in stack]
    if node.op == "call_module" and names and names[-1] == node.target:
        names = names[:-1]  # a leaf call: created by the forward that calls it
    return names[-1] if names else ""


def _mode_dependent_scopes(g_train, g_eval) -> list[str]:
    """Owners of the nodes that differ between the train- and eval-mode graphs (sorted)."""
    def sig(n):
        return (n.op, str(n.target), str(n.args), str(sorted(n.kwargs.items())))

    a, b = list(g_train.nodes), list(g_eval.nodes)
    diff = difflib.SequenceMatcher(None, [sig(n) for n in a], [sig(n) for n in b],
                                   autojunk=False)
    where = set()
    for tag, i1, i2, j1, j2 in diff.get_opcodes():
        if tag != "equal":
            where.update(_owner(n) for n in a[i1:i2] + b[j1:j2] if n.op != "output")
    return sorted(where)


@torch.no_grad()
def _probe_shapes(model: nn.Sequential, x: torch.Tensor, caller: str = "split"
                  ) -> list[torch.Size | None]:
    """Output shape (without batch) of every child on ``x``; model state is left untouched.

    None for a child whose output is not a single tensor (a tuple): no cut may follow it.

    An input the model rejects is an error naming ``in_shape`` (not a raw torch shape error).
    """
    probe = copy.deepcopy(model).eval()
    shapes, given = [], tuple(x.shape[1:])
    try:
        for child in probe.children():
            x = child(x)
            shapes.append(x.shape[1:] if isinstance(x, torch.Tensor) else None)
    except (RuntimeError, ValueError, IndexError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise fail("in_shape", caller, f"the (C, H, W) input shape the model accepts (or give "
                   f"sample=a batch; the model raised {type(exc).__name__}: {first})",
                   given) from exc
    return shapes


class SavedCounter:
    """Bytes autograd saves for backward while active, each storage once, ``exclude`` skipped.

    Does not follow frees: it is the sum over one forward (what a module keeps for its backward).
    ``exclude`` holds storage pointers (parameters). Used as a context manager; ``bytes`` can be
    read and reset between phases.
    """

    def __init__(self, exclude=()):
        self.exclude = set(exclude)
        self.seen: set[int] = set()
        self.bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor):
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in self.exclude and ptr not in self.seen:
            self.seen.add(ptr)
            self.bytes += st.nbytes()
        return t

    def __enter__(self):
        self._grad = torch.enable_grad()
        self._grad.__enter__()
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        self._grad.__exit__(*exc)


def _ptrs(tensors) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in tensors}


def unit_saved_bytes(model: nn.Module, x: torch.Tensor) -> tuple[list[int], int]:
    """Bytes saved for backward inside each body unit and inside the tail on the batch ``x``.

    Each saved storage is counted once, at the unit where autograd first saves it; parameters are
    excluded. Runs on a deep copy in train mode (the caller's model is not modified).
    """
    model = _check_model(model, "unit_saved_bytes")
    units, tail = _units_and_tail(model, _probe_shapes(model, x, "unit_saved_bytes"))
    probe = copy.deepcopy(model).train()
    children = list(probe.children())
    sizes = []
    with SavedCounter(_ptrs(probe.parameters())) as counter:
        for start, stop in [*units, tail]:
            counter.bytes = 0
            for child in children[start:stop]:
                x = child(x)
            sizes.append(counter.bytes)
    return sizes[:-1], sizes[-1]


def _balanced_cuts(weights: list[int], k: int, extra=None) -> list[int]:
    """Split ``weights`` into ``k`` contiguous groups minimising the largest group cost (exact DP).

    A group's cost is the sum of its weights, plus ``extra[j][i]`` when group j < k-1 ends at
    index i (the auxiliary network of local module j). Returns the group stops. Ties go to the
    earliest cut (fewer units up front, where a CNN's activations are largest).
    """
    n = len(weights)
    prefix = [0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    inf = float("inf")
    # best[j][i]: minimal max-group-cost splitting the first i weights into j groups
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    arg = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0
    for j in range(1, k + 1):
        for i in range(j, n + 1):
            add = extra[j - 1][i - 1] if extra is not None and j < k else 0
            for s in range(j - 1, i):
                cost = max(best[j - 1][s], prefix[i] - prefix[s] + add)
                if cost < best[j][i]:
                    best[j][i], arg[j][i] = cost, s
    stops, i = [], n
    for j in range(k, 0, -1):
        stops.append(i)
        i = arg[j][i]
    return stops[::-1]


def _from_stops(units, tail, stops) -> Partition:
    starts = [0, *stops[:-1]]
    unit_bounds = tuple(zip(starts, stops))
    bounds = tuple((units[a][0], units[b - 1][1]) for a, b in unit_bounds)
    bounds = bounds[:-1] + ((bounds[-1][0], tail[1]),)
    return Partition(tuple(units), tail, bounds, unit_bounds)


def _sample_batch(sample, caller: str) -> torch.Tensor:
    """A probe batch: ``sample`` itself, or 8 seeded uniform inputs of shape ``sample = (C, H, W)``."""
    if isinstance(sample, torch.Tensor):
        return sample
    ok = isinstance(sample, (tuple, list)) and len(sample) == 3 and all(
        is_int(s, 1) for s in sample)
    check(ok, "sample", caller, "an input batch or a (C, H, W) tuple when balance='memory'", sample)
    gen = torch.Generator().manual_seed(0)
    return torch.rand(8, *map(int, sample), generator=gen)


def partition(model: nn.Module, k: int, balance: str | None = None,
              sample=None) -> Partition:
    """Compute where :func:`split` cuts ``model`` (see the module docstring and :func:`split`)."""
    chain = _check_model(model, "split")
    if balance is None:
        balance = "layers" if sample is None else "memory"
    check_choice(balance, ("layers", "memory"), "balance", "split")
    shapes = None
    if sample is not None:  # child outputs that are not tensors (tuples) take no cut after them
        shapes = _probe_shapes(chain, _sample_batch(sample, "split"), "split")
    return _partition(chain, k, balance, sample, shapes)


def _partition(chain: nn.Sequential, k: int, balance: str, sample, shapes) -> Partition:
    units, tail = _units_and_tail(chain, shapes)
    k = check_positive_int(k, "K", "split")
    check(k <= len(units), "K", "split", f"an integer in [1, {len(units)}] (the model's units)", k)
    if balance == "layers":
        n = len(units)
        stops = [n * (j + 1) // k for j in range(k)]  # equal counts; InfoPro's ResNet-32/110 cuts
    else:
        sizes, tail_bytes = unit_saved_bytes(chain, _sample_batch(sample, "split"))
        sizes[-1] += tail_bytes  # the tail is trained with the last module
        stops = _balanced_cuts(sizes, k)
    return _from_stops(units, tail, stops)


def split(model: nn.Module, K: int, balance: str | None = None,
          sample=None) -> list[nn.Sequential]:
    """Cut ``model`` into ``K`` local modules (``nn.Sequential`` views sharing the model's layers).

    ``model``: any traceable network (its chain, see the module docstring).

    ``balance="layers"`` gives each module the same number of units (weight-bearing children);
    ``balance="memory"`` needs ``sample`` (an input batch, or its ``(C, H, W)`` shape for a seeded
    random batch) and balances the activation memory each module saves for backward (InfoPro*).
    The default (None) is ``"memory"`` when a ``sample`` is given, else ``"layers"``. A sample
    also shows which children return a tuple (never followed by a cut). The modules share
    parameters with ``model``: training them trains the model, and ``nn.Sequential(*split(model,
    K))`` computes the same function.
    """
    chain = _check_model(model, "split")
    part = partition(chain, K, balance, sample)
    children = list(chain.children())
    return [nn.Sequential(*children[a:b]) for a, b in part.bounds]
