"""spiking: SNNs on snntorch with Dynamic Confidence early exit, peer stopping rules, oracles
and a live early-exit runner.

>>> ann = spiking.qcfs_net("lenet", (1, 28, 28), 10, levels=4)      # train with hwlab.train.fit
>>> snn = spiking.convert(ann)                                      # new module, ann untouched
>>> rec = spiking.record(snn, val, steps=32)                        # N x T x classes, one run
>>> cal = spiking.calibrate(rec, "dynamic-confidence", tolerance=0.002)
>>> spiking.apply_rule(spiking.record(snn, test, 32), "dynamic-confidence", cal.threshold)
>>> spiking.run_live(snn, test.x, "dynamic-confidence", cal.threshold, steps=32)
"""

from ._calibrate import Calibration, calibrate, candidate_thresholds, pareto_front, sweep
from ._direct import SURROGATES, DirectTask, direct_net
from ._faults import (
                     NEURON_KINDS,
                     LeakDrift,
                     NeuronFaultMap,
                     NeuronStuck,
                     ThresholdDrift,
                     inject_neuron_faults,
                     neuron_layers,
                     neuron_shapes,
                     sample_neuron_faults,
                     with_neuron_faults,
)
from ._graph_snn import GraphSpikingNet
from ._live import LiveResult, run_live
from ._qcfs import ARCHITECTURES, QCFS, qcfs_net, with_qcfs
from ._record import Recording, record
from ._rules import (
                     RULES,
                     Exit,
                     StoppingRule,
                     apply_rule,
                     dynamic_confidence_rule,
                     fixed_steps,
                     get_rule,
                     oracle_any,
                     oracle_stay,
)
from ._snn import ENCODINGS, SpikingNet, convert

__all__ = [
                     "ARCHITECTURES",
                     "ENCODINGS",
                     "NEURON_KINDS",
                     "QCFS",
                     "RULES",
                     "SURROGATES",
                     "Calibration",
                     "DirectTask",
                     "Exit",
                     "GraphSpikingNet",
                     "LeakDrift",
                     "LiveResult",
                     "NeuronFaultMap",
                     "NeuronStuck",
                     "Recording",
                     "SpikingNet",
                     "StoppingRule",
                     "ThresholdDrift",
                     "apply_rule",
                     "calibrate",
                     "candidate_thresholds",
                     "convert",
                     "direct_net",
                     "dynamic_confidence_rule",
                     "fixed_steps",
                     "get_rule",
                     "inject_neuron_faults",
                     "neuron_layers",
                     "neuron_shapes",
                     "oracle_any",
                     "oracle_stay",
                     "pareto_front",
                     "qcfs_net",
                     "record",
                     "run_live",
                     "sample_neuron_faults",
                     "sweep",
                     "with_neuron_faults",
                     "with_qcfs",
]
