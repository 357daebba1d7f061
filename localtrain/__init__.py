"""localtrain: supervised local learning that saves training memory.

A network (a zoo model or any model ``hwlab.graph`` can trace) is cut into K gradient-isolated
local modules (:func:`split`, at graph cut points for non-Sequential models); each
rule is an ``hwlab.train.Task`` (:func:`make_rule`) that trains them with local losses through the
one training loop, ``hwlab.train.fit``:

- ``e2e``: end-to-end backpropagation (the baseline);
- ``checkpoint``: E2E with ``torch.utils.checkpoint`` at the K module cuts (Chen et al. 2016);
- ``dgl``: a small classifier head per module (Belilovsky et al. 2020);
- ``infopro``: reconstruction decoder + classifier head, weights interpolated (Wang et al. 2021);
- ``man``: InfoPro head fed through EMA(next block) + a learnable bias block (Su et al. 2024);
- ``auglocal``: auxiliary nets from uniformly sampled later layers (Ma et al. 2024);
- ``featrecon``: each module reconstructs its input features (Pathak et al. 2022), for ViTs;
- ``sgr``: DGL's heads + successive gradient reconciliation (Yang et al., ICML 2024).

Memory is read with ``hwlab.meters.training_memory`` and ``hwlab.meters.live_memory``
(:func:`measure_step`); :func:`paper_memory_table` measures it at the papers' setting. The study
``localtrain.compare`` compares the rules (see docs/localtrain.md).
"""

from localtrain._auglocal import AugLocal, auglocal_depths, auglocal_layer_indices
from localtrain._base import LocalRule, interpolate_weight
from localtrain._checkpoint import Checkpoint, KeepBuffers
from localtrain._man import MAN, ema_update
from localtrain._measure import measure_step
from localtrain._rules import (
    DGL,
    E2E,
    INFOPRO_LAMBDAS,
    FeatRecon,
    InfoPro,
    infopro_lambdas,
    list_rules,
    make_rule,
)
from localtrain._sgr import SGR
from localtrain._split import Partition, as_chain, partition, split, unit_saved_bytes

__all__ = [
    "DGL",
    "E2E",
    "INFOPRO_LAMBDAS",
    "MAN",
    "SGR",
    "AugLocal",
    "Checkpoint",
    "FeatRecon",
    "InfoPro",
    "KeepBuffers",
    "LocalRule",
    "Partition",
    "as_chain",
    "auglocal_depths",
    "auglocal_layer_indices",
    "ema_update",
    "infopro_lambdas",
    "interpolate_weight",
    "list_rules",
    "make_rule",
    "measure_step",
    "partition",
    "split",
    "unit_saved_bytes",
]
