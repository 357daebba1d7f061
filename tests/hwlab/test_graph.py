"""hwlab.graph: activation call sites, producers by data flow, cut points, segments, rewrite, errors.

Every model here is written in the test (never nn.Sequential at the top): residual blocks with ONE
in-place ReLU module called twice, functional / method / in-place activations, clamp, concatenation,
BatchNorm, a projection shortcut.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import hwlab.graph as hg


class Block(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)) with ONE in-place ReLU called twice."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.proj = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.proj is None else self.proj(x)
        return self.relu(out + short)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.b1 = Block(4, 4)
        self.b2 = Block(4, 6)
        self.left = nn.Conv2d(6, 4, 1)
        self.right = nn.Conv2d(6, 4, 1)
        self.act6 = nn.ReLU6()
        self.fc = nn.Linear(8 * 16, 10)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))  # B x 4 x 8 x 8
        h = self.b2(self.b1(h))  # B x 6 x 8 x 8
        left = self.left(h).relu()
        right = torch.relu(self.right(h)).relu_()
        h = torch.cat([left, self.act6(right)], 1)  # B x 8 x 8 x 8
        h = torch.clamp(h, min=0, max=6).clamp(min=0)
        return self.fc(F.max_pool2d(h, 2).flatten(1))  # B x 10


def _net(seed: int = 0) -> Net:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Net()
        for m in model.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _x(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


# -- sites ----------------------------------------------------------------------------------
def test_every_activation_call_is_its_own_site():
    g = hg.trace(_net(), sample=(1, 8, 8))
    got = [(s.name, s.op, s.module, s.scope, s.inplace, s.call) for s in g.sites]
    assert got == [
        ("relu()", "relu", None, "", False, 1),  # F.relu
        ("b1.relu", "relu", "b1.relu", "b1", True, 1),  # the reused in-place module, call 1
        ("b1.relu@2", "relu", "b1.relu", "b1", True, 2),  # ... and call 2
        ("b2.relu", "relu", "b2.relu", "b2", True, 1),
        ("b2.relu@2", "relu", "b2.relu", "b2", True, 2),
        ("relu()@2", "relu", None, "", False, 2),  # x.relu()
        ("relu()@3", "relu", None, "", False, 3),  # torch.relu
        ("relu()@4", "relu", None, "", True, 4),  # x.relu_()
        ("act6", "relu6", "act6", "", False, 1),  # nn.ReLU6
        ("clamp()", "clamp", None, "", False, 1),  # torch.clamp(min=0, max=6)
        ("clamp()@2", "clamp", None, "", False, 2),  # x.clamp(min=0)
    ]
    assert g.site("b1.relu@2").node == "b1_relu_1"
    with pytest.raises(ValueError, match=r"site of ModelGraph.site must be one of relu\(\), "
                                         r"b1.relu, b1.relu@2, .*got 'b3.relu'"):
        g.site("b3.relu")


def test_clamp_without_min_zero_and_other_ops_are_not_sites():
    class M(nn.Module):
        def forward(self, x):
            return torch.clamp(x, min=-1) + x.clamp(max=1) + torch.sigmoid(x) + F.relu(x)

    assert [s.name for s in hg.trace(M()).sites] == ["relu()"]


def test_producers_follow_data_flow_through_bn_add_cat_and_pooling():
    g = hg.trace(_net())
    assert g.producers["relu()"] == ["stem"]  # through BatchNorm
    assert g.producers["b1.relu"] == ["b1.conv1"]
    # identity shortcut: it ends at the previous activation site (another site)
    assert g.producers["b1.relu@2"] == ["b1.conv2"]
    assert g.producers["b2.relu@2"] == ["b2.conv2", "b2.proj"]  # an add: both branches
    assert g.producers["relu()@2"] == ["left"] and g.producers["relu()@3"] == ["right"]
    assert g.producers["relu()@4"] == []  # its input is another site's output

    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 1), nn.Conv2d(1, 3, 1)
            self.bn, self.fc = nn.BatchNorm2d(5), nn.Linear(5 * 4, 3)

        def forward(self, x):
            h = self.bn(torch.cat([self.a(x), self.b(x)], 1))
            h = F.avg_pool2d(h, 2).flatten(1)
            return F.relu(self.fc(h)), F.relu(h)

    g = hg.trace(Cat())
    assert g.producers == {"relu()": ["fc"], "relu()@2": ["a", "b"]}  # cat: both inputs


def test_weight_layers_and_first_use_in_execution_order():
    g = hg.trace(_net())
    assert g.weight_layers == ["stem", "b1.conv1", "b1.conv2", "b2.conv1", "b2.conv2", "b2.proj",
                               "left", "right", "fc"]
    nodes = list(g.module.graph.nodes)
    assert nodes[g.first_use(["fc.weight"])].target == "fc"
    assert nodes[g.first_use(["b2"])].target == "b2.conv1"  # a container: its first layer
    assert g.first_use(["act6", "right"]) < g.first_use(["act6"])
    assert g.first_use(["nothing.here"]) is None


# -- cut points and segments ----------------------------------------------------------------
def test_cut_points_of_a_residual_net_and_bit_identical_chained_segments():
    model, x = _net(), _x()
    g = hg.trace(model, sample=x[:2])
    names = [c.node for c in g.cuts]
    # block outputs are cuts; inside a block the shortcut keeps its input alive: no cut there
    assert "b1_relu_1" in names and "b2_relu_1" in names
    inside = {"b1_conv1", "b1_bn1", "b1_relu", "b1_conv2", "b1_bn2"}
    assert not inside & set(names)
    assert "left" not in names and "relu_1" not in names  # two branches live until the cat
    assert "cat" in names and "flatten" in names
    cut = g.cuts[names.index("b2_relu_1")]
    assert cut.shape == (2, 6, 8, 8) and cut.act_bytes == 2 * 6 * 8 * 8 * 4
    with torch.no_grad():
        full = model(x)
        h = x
        for seg in g.split(g.cuts):  # every cut: len(cuts) + 1 segments, chained
            h = seg(h)
        assert torch.equal(h, full)
        head = g.segment(None, "b1_relu_1")
        tail = g.segment("b1_relu_1")
        assert torch.equal(tail(head(x)), full)
    saved = g.with_saved_bytes()
    assert all(c.saved_before + c.saved_after == saved[-1].saved_before + saved[-1].saved_after
               for c in saved)
    assert [c.saved_before for c in saved] == sorted(c.saved_before for c in saved)
    with pytest.raises(ValueError, match="cut of ModelGraph.segment must be None or one of the "
                                         "model's cut points, got 'b1_conv1'"):
        g.segment("b1_conv1")
    with pytest.raises(ValueError, match="cuts of ModelGraph.split must be distinct cut points "
                                         "in graph order"):
        g.split([g.cuts[3], g.cuts[1]])


def test_cut_before_and_mutates_input():
    g = hg.trace(_net())
    cut = g.cut_before(["fc.weight"])
    assert cut.node == "flatten"  # the latest cut before the head
    assert g.cut_before(["b2.proj"]).node == "b1_relu_1"  # the block input: shortcut reads it
    assert g.cut_before(["stem"]) is None  # nothing before the first layer
    # the segment after b1's output holds in-place ReLUs: it may write its input
    assert g.mutates_input(g.segment("b1_relu_1"))
    assert not g.mutates_input(g.segment(cut))


def test_a_layer_inside_a_leaf_module_is_read_by_the_leaf_call():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            h = self.fc(x)
            return h if h.sum() > 0 else -h  # data-dependent: must be a leaf

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.gate, self.out = nn.Linear(4, 4), Gate(), nn.Linear(4, 2)

        def forward(self, x):
            return self.out(F.relu(self.gate(F.relu(self.inp(x)))))

    g = hg.trace(M(), leaf_modules=["gate"])
    assert g.weight_layers == ["inp", "gate", "out"]
    assert g.cut_before(["gate.fc.weight"]).node == "relu"  # before the leaf's call
    assert g.cut_before(["gate.fc"]) == g.cut_before(["gate"])
    assert hg.trace(M(), leaf_modules=[Gate]).weight_layers == ["inp", "gate", "out"]


# -- rewrite --------------------------------------------------------------------------------
def test_rewrite_returns_a_new_module_with_parameter_names_and_leaves_the_input_untouched():
    model, x = _net(), _x()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(x)
    new = hg.rewrite(model, {"b1.relu@2": nn.ReLU6(), "relu()@3": nn.Tanh(), "fc": nn.Linear(128, 3),
                             "act6": nn.Identity()})
    assert isinstance(new, fx.GraphModule) and new is not model
    # the input: same modules, same values, same output
    assert isinstance(model.b1.relu, nn.ReLU) and model.fc.out_features == 10
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    # surviving parameters keep their names (fc was replaced: its parameters are the new ones)
    kept = {k for k in model.state_dict() if not k.startswith("fc.")}
    assert kept <= set(new.state_dict())
    assert all(torch.equal(new.state_dict()[k], before[k]) for k in kept)
    assert isinstance(new.get_submodule("b1.relu_call2"), nn.ReLU6)  # the 2nd call's own module
    assert isinstance(new.get_submodule("b1.relu"), nn.ReLU)  # the 1st call keeps the original
    assert isinstance(new.get_submodule("relu_fn3"), nn.Tanh)  # torch.relu, the 3rd relu()
    assert isinstance(new.act6, nn.Identity)
    with torch.no_grad():
        out = new(x)
    assert out.shape == (5, 3)
    # the same functions written out by hand
    with torch.no_grad():
        h = F.relu(model.bn(model.stem(x)))
        b = model.b1
        o = F.relu(b.bn1(b.conv1(h)))
        h = F.relu6(b.bn2(b.conv2(o)) + h)
        h = model.b2(h)
        left = F.relu(model.left(h))
        right = F.relu(torch.tanh(model.right(h)))
        h = torch.cat([left, right], 1).clamp(0, 6).clamp(min=0)
        expect = new.fc(F.max_pool2d(h, 2).flatten(1))
    assert torch.equal(out, expect)


def test_rewrite_of_an_in_place_site_keeps_what_later_readers_see():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu = nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True)

        def forward(self, x):
            h = self.conv(x)
            self.relu(h)  # result unused: later code reads h, which the call changed in place
            g = h.relu_() * 2  # the same with a method call
            return h.sum((2, 3)) + g.mean((2, 3))

    model, x = M().eval(), torch.randn(4, 1, 5, 5, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
        for repl in ({"relu": nn.ReLU()}, {"relu()": nn.ReLU()},
                     {"relu": nn.ReLU(), "relu()": nn.ReLU()}):
            assert torch.equal(hg.rewrite(model, repl)(x), ref), repl


def test_rewrite_rejects_unknown_keys_and_non_modules():
    with pytest.raises(ValueError, match=r"replace of hwlab.graph.rewrite must be keys naming "
                                         r"activation sites or called layers \(.*\), got 'b9'"):
        hg.rewrite(_net(), {"b9": nn.ReLU()})
    with pytest.raises(ValueError, match=r"replace\['b1.relu'\] of hwlab.graph.rewrite must be "
                                         r"an nn.Module, got 'int'"):
        hg.rewrite(_net(), {"b1.relu": 3})


# -- errors ---------------------------------------------------------------------------------
class _Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        return h if h.sum() > 0 else -h


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.gate, self.out = nn.Linear(4, 4), _Gate(), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(F.relu(self.gate(F.relu(self.inp(x)))))


def test_untraceable_model_error_names_the_module_and_the_fix():
    with pytest.raises(ValueError, match=r"model of hwlab.graph.trace must be traceable by "
                                         r"torch.fx; mark the failing submodule as a leaf "
                                         r"\(leaf_modules=\['gate'\], or _hwlab_leaf = True on "
                                         r"its class\) .*got \"_Untraceable, "
                                         r"failing in module 'gate' \(_Gate\): TraceError: .* "
                                         r"at test_graph.py:\d+ `return h if h.sum\(\) > 0"):
        hg.trace(_Untraceable())
    g = hg.trace(_Untraceable(), sample=(4,), leaf_modules=["gate"])  # the fix works
    assert [s.name for s in g.sites] == ["relu()", "relu()@2"]
    with torch.no_grad():
        x = torch.rand(3, 4)
        m = g.model.eval()
        assert torch.equal(g.module(x), m(x))


def test_bad_sample_and_leaf_modules_are_clear_errors():
    model = _Untraceable()
    with pytest.raises(ValueError, match=r"sample of hwlab.graph.trace must be an input the model "
                                         r"accepts .*got 'shape \(2, 3\): RuntimeError: mat1 and "
                                         r"mat2 shapes cannot be multiplied"):
        hg.trace(model, sample=(3,), leaf_modules=["gate"])
    with pytest.raises(ValueError, match=r"sample of hwlab.graph.trace must be an input the model "
                                         r"accepts .*got 'shape \(2, 3, 8, 8\)"):
        hg.trace(_net(), sample=(3, 8, 8))
    with pytest.raises(ValueError, match="leaf_modules of hwlab.graph.trace must be names of "
                                         r"submodules of the model \(as in named_modules\(\)\), "
                                         "got 'nope'"):
        hg.trace(model, leaf_modules=["nope"])
    with pytest.raises(ValueError, match="leaf_modules of hwlab.graph.trace must be qualified "
                                         "module names or nn.Module classes, got 3"):
        hg.trace(model, leaf_modules=[3])
    with pytest.raises(ValueError, match="model of hwlab.graph.trace must be a torch.nn.Module, "
                                         "got 'function'"):
        hg.trace(lambda x: x)


def test_tracing_leaves_the_model_and_its_batchnorm_statistics_alone():
    model = _net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = hg.trace(model, sample=_x(4))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert g.module.training  # the graph's containers follow the model's mode
    # the graph shares the parameters: a change to the model is seen by the graph
    with torch.no_grad():
        model.fc.weight.add_(1.0)
        model.eval()
        assert torch.equal(g.module(_x()), model(_x()))
