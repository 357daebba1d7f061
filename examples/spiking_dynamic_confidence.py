"""Dynamic Confidence on a converted SNN, end to end on sklearn digits (about 10 s on one core).

Train a QCFS ANN with the one training loop, convert it to an integrate-and-fire SNN, record val
and test once to T_max, pick the confidence threshold on val, compare with fixed T and the
oracles on test, then run the live early-exit runner and check it agrees with the offline result.
"""

import torch

import spiking as sp
from hwlab.data import load
from hwlab.train import TrainConfig, fit

torch.set_num_threads(1)
torch.manual_seed(0)
train, val, test = (load("digits", s, seed=0) for s in ("train", "val", "test"))

ann = sp.qcfs_net("mlp", train.in_shape, train.num_classes, levels=4)
fit(ann, train, TrainConfig(epochs=10, batch_size=64, seed=0))
snn = sp.convert(ann.eval())  # a new module; ann is unchanged

T_MAX = 16
rec_val, rec_test = sp.record(snn, val, T_MAX), sp.record(snn, test, T_MAX)
curve = rec_test.accuracy_curve()
print("fixed-T test accuracy:", " ".join(f"T{t + 1}={a:.3f}" for t, a in enumerate(curve)))

for rule in ("dynamic-confidence", "entropy", "margin"):
    cal = sp.calibrate(rec_val, rule, tolerance=0.002)
    e = sp.apply_rule(rec_test, rule, cal.threshold)
    print(f"{rule:>18}: threshold {cal.threshold:.4f} -> test acc {e.accuracy:.3f} "
          f"at {e.mean_steps:.2f} mean steps")
for name, oracle in (("oracle-any", sp.oracle_any), ("oracle-stay", sp.oracle_stay)):
    e = oracle(rec_test)
    print(f"{name:>18}: test acc {e.accuracy:.3f} at {e.mean_steps:.2f} mean steps")

cal = sp.calibrate(rec_val, "dynamic-confidence")
live = sp.run_live(snn, test.x, "dynamic-confidence", cal.threshold, steps=T_MAX)
offline = sp.apply_rule(rec_test, "dynamic-confidence", cal.threshold)
full = sp.run_live(snn, test.x, None, steps=T_MAX)
print(f"live == offline: {torch.equal(live.predictions, offline.predictions)}; "
      f"wall clock {live.seconds * 1e3:.1f} ms vs {full.seconds * 1e3:.1f} ms for all {T_MAX} steps")
