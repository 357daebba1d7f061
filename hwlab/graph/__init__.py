"""hwlab.graph: see any model once (torch.fx) and answer for every package.

>>> import hwlab.graph as hg
>>> g = hg.trace(model, sample=x[:2])          # ModelGraph; shares the model's parameters
>>> [s.name for s in g.sites]                   # every activation CALL site, readable names
>>> g.producers["layer1.0.relu()"]              # weight layers feeding it by data flow
>>> g.cuts                                      # cut points (one tensor carries everything)
>>> head = g.segment(g.cut_before(["fc.weight"]))   # run only what follows the last cut
>>> new = hg.rewrite(model, {"layer1.0.relu()": nn.ReLU6()})   # new module, names preserved

Used by faultlab (clipping per site, prefix caching, delayed-start campaigns), spiking (QCFS per
site, ANN-to-SNN conversion of residual nets), localtrain (splits at cut points) and quantum
(swap by layer name). A model fx cannot trace raises an error naming the failing submodule and
the fix (``leaf_modules=[...]``). User guide: docs/own-models.md.
"""

from hwlab.graph._cuts import Cut
from hwlab.graph._graph import ModelGraph, rewrite, trace
from hwlab.graph._sites import Site, gate_chain, is_weight_module, site_input
from hwlab.graph._trace import check_leaf_modules

__all__ = ["Cut", "ModelGraph", "Site", "check_leaf_modules", "gate_chain", "is_weight_module",
           "rewrite", "site_input", "trace"]
