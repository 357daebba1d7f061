"""Language models under faults: token metrics, KV-cache and attention faults, generation.

>>> import faultlab as fl, faultlab.lm as lm
>>> rows = fl.campaign(net, load("pydoc", "val"), [fl.BitFlip(rate=1e-5)], metrics=lm.LM_METRICS)
>>> with lm.kv_faults(net, [lm.KVFault(layer=0, head=1, pos=20, elem=3, bit=30)]):
...     tokens, logits = net.generate(prompts, 32)      # every later step reads the bad entry

See docs/faultlab-lm.md.
"""

from faultlab.lm._acts import ActFault, act_faults, lm_sites
from faultlab.lm._decode import greedy, load_hf, logits_only
from faultlab.lm._kv import KVFault, draw_kv_faults, kv_faults
from faultlab.lm._metrics import LM_METRICS, first_divergence, nonfinite

__all__ = ["LM_METRICS", "ActFault", "KVFault", "act_faults", "draw_kv_faults",
           "first_divergence", "greedy", "kv_faults", "lm_sites", "load_hf", "logits_only",
           "nonfinite"]
