"""faultlab.systolic: permanent faults in the processing elements of a systolic-array accelerator.

>>> arr = fl.systolic.SystolicArray(256, 256, "weight-stationary")
>>> f = fl.systolic.PEFault("stuck1", "output", rate=1e-3, array=arr)
>>> with fl.systolic.inject(model, f, seed=0) as pemap:   # forward hooks; model untouched
...     acc = evaluate(model, test)
>>> pruned = fl.systolic.fap(model, pemap)                 # FAP: new model
>>> tuned = fl.systolic.fap_t(model, pemap, train)         # FAP+T: retrained with hwlab.train.fit

The mapping of each Conv2d (im2col) / Linear onto the array is documented in
:mod:`faultlab.systolic._array` and docs/faultlab-systolic.md.
"""

from ._array import DATAFLOWS, Gemm, SystolicArray, mapped_layers
from ._fap import FAP_T_CONFIG, fap, fap_masks, fap_t
from ._faults import TARGETS, PEFault, PEFaultMap, sample_pe_faults
from ._inject import inject

__all__ = ["DATAFLOWS", "FAP_T_CONFIG", "TARGETS", "Gemm", "PEFault", "PEFaultMap",
           "SystolicArray", "fap", "fap_masks", "fap_t", "inject", "mapped_layers",
           "sample_pe_faults"]
