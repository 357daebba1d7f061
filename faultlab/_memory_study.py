"""The ``faultlab.memory`` study: unprotected vs parity vs SEC-DED weight memory, same faults.

For a zoo model, every (fault model, trial) draws ONE nested set of raw faults over the 72-bit
words of a DIMM-style memory (``MemoryLayout()``: 64 data + 8 check bits per word, 1 KiB data
rows, 16 banks), seeded by ``derive_seed(seed, "<fault>|trial=<t>")`` (not by the rate, not by
the protection): the map at each rate keeps the candidates whose uniform is below that rate
(Stutz et al.'s nested maps), and each protection reads the same raw faults:

* ``unprotected``: the data bits as they are (faults on the 8 check bits are ignored: an
  unprotected memory does not have them, and the data-bit faults are Bernoulli per bit either way);
* ``parity-zero``: byte parity, a word with a detected error reads 0;
* ``secded72_64``: Hsiao (72,64) SEC-DED, a detected-uncorrectable word reads 0.

Fault models (x axis ``rate`` = the BER the point stands for): ``bitflip`` (uniform flips at
rate), ``burst`` (events of ``burst_length`` adjacent cells along the row at rate /
burst_length: the same expected faulty bits as bitflip), ``row`` (whole rows flipped, per-row
probability rate x ``row_rate_scale``), ``asym`` (a stored 1 flips with rate, a stored 0 with
rate x ``asym_ratio``; the asymmetric thinning reads each code's stored check bits, so check-bit
faults differ between codes while data-bit faults are shared). With ``voltages`` and a ``curve``
(CSV of voltage,ber) the rates come from ``BERCurve(curve).ber(v)`` and rows store the voltage,
BER and relative dynamic energy ``(V / V_nominal)^2`` (``faultlab.memory.relative_energy``).

Rows: one per (protection, fault, rate, trial) with ``accuracy``, ``variant`` = protection,
``fault_model``, ``fault_rate``, ``memory_bytes`` (stored bytes of the eligible weights, check
bits included) and ``extra`` (corrected / detected / miscorrected / silent words, raw faulty
bits, code overhead, n_faults); one ``clean`` row per protection.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from hwlab import figures
from hwlab.errors import check
from hwlab.studies import Study, StudyConfig, derive_seed, param, run_items

__all__ = ["MEMORY_STUDY", "MemoryConfig", "MemoryStudy", "summarize"]

PROTECTIONS = ("unprotected", "parity-zero", "secded72_64")
FAULTS = ("bitflip", "burst", "row", "asym")


@dataclass(frozen=True)
class MemoryConfig(StudyConfig):
    model: str = param("lenet5", "model: zoo name, module:callable or hwlab.models entry point",
                       kind="model")  # the reference network
    dataset: str = param("mnist5k", "dataset spec", kind="dataset")  # 5,000 MNIST digits
    seed: int = param(0, "zoo weights, test split and fault maps", range=(0, None))
    protections: tuple[str, ...] = param(PROTECTIONS, "memory protections compared",
                                         choices=PROTECTIONS, nonempty=True)  # the three
    faults: tuple[str, ...] = param(FAULTS, "fault models", choices=FAULTS, nonempty=True)
    rates: tuple[float, ...] = param(  # spans SEC-DED's knee on a 2 M-bit model
        (1e-6, 1e-5, 1e-4, 1e-3), "per-bit error rates (BER)", range=(0, 1),
        inclusive=(False, True), nonempty=True)
    trials: int = param(10, "nested fault maps per fault model", range=(1, None))  # Stutz: 50
    burst_length: int = param(4, "adjacent cells per burst event", range=(1, 72))  # > 1 bit/word
    row_rate_scale: float = param(  # 1 = as many faulty bits as bitflip, i.e. ~0 rows here
        100.0, "per-row fault probability = rate x this", range=(0, None), inclusive=(False, True))
    asym_ratio: float = param(  # illustrative, not measured: give your chip's ratio
        0.1, "0->1 rate / 1->0 rate of the asymmetric model", range=(0, 1))
    eval_size: int = param(500, "test images per evaluation", range=(1, None))  # all of mnist5k's
    voltages: tuple[float, ...] = param((), "operating points (V); needs curve", range=(0, None),
                                        inclusive=(False, True))
    curve: str = param("", "CSV of voltage,ber points for voltages", kind="path")
    nominal_voltage: float = param(0.0, "V of relative energy 1; 0 = the curve's highest",
                                   range=(0, None))

    def __post_init__(self):
        super().__post_init__()
        check(not self.voltages or self.curve, "curve", f"study {self.study}",
              "a CSV of voltage,ber points when voltages are given", self.curve)


@lru_cache(maxsize=2)
def _setup(model: str, dataset: str, seed: int, eval_size: int):
    from hwlab import zoo
    from hwlab.data import load

    net = zoo.pretrained(model, dataset, seed=seed).eval()
    test = load(dataset, "test", seed=seed)
    test = test.subset(eval_size) if eval_size < len(test) else test
    return net, test.x, test.y


def _accuracy(net, x, y) -> float:
    import torch

    with torch.no_grad():
        hits = sum(int((net(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum())  # b x classes
                   for i in range(0, x.shape[0], 500))
    return hits / x.shape[0]


def _primitive(fault: str, rate: float, c: MemoryConfig):
    from faultlab._faults import BitFlip
    from faultlab.memory import Burst, RowFault

    if fault == "bitflip":
        return BitFlip(rate=rate)
    if fault == "burst":
        return Burst(rate=rate / c.burst_length, length=c.burst_length)
    if fault == "row":
        return RowFault(rate=min(1.0, rate * c.row_rate_scale))
    return BitFlip(rate_1to0=rate, rate_0to1=rate * c.asym_ratio)


def _code(protection: str):
    from faultlab.memory._codes import BARE_72_64, CODES

    return {"unprotected": BARE_72_64, "parity-zero": CODES["parity"],
            "secded72_64": CODES["secded72_64"]}[protection]


@dataclass(frozen=True)
class MemoryItem:
    config: MemoryConfig
    protection: str
    fault: str
    rate: float  # this point's BER
    top: float  # the largest BER of the sweep: the nested family's candidates
    trial: int
    voltage: float | None = None


def _memory_row(item: MemoryItem) -> dict:
    """One (protection, fault, rate, trial) evaluation (top-level: runs on any executor)."""
    from faultlab import inject
    from faultlab.memory import MemoryLayout
    from faultlab.memory._nested import draw_in_memory

    c = item.config
    net, x, y = _setup(c.model, c.dataset, c.seed, c.eval_size)
    mem = MemoryLayout().bind(net, 8, caller=f"study {c.study}")
    seed = derive_seed(c.seed, f"{item.fault}|trial={item.trial}")
    code = _code(item.protection)
    fmap = draw_in_memory(mem, code, "zero", _primitive(item.fault, item.rate, c),
                          _primitive(item.fault, item.top, c), seed, f"study {c.study}")
    with inject(net, fmap):
        acc = _accuracy(net, x, y)
    extra = {k: v for k, v in fmap.extra.items() if k not in ("code", "policy")}
    if item.protection == "unprotected":
        extra["code_overhead"] = 0.0
    extra.update(n_faults=len(fmap), map=fmap.fingerprint())
    if item.voltage is not None:
        extra.update(voltage=item.voltage, ber=item.rate)
    return {"variant": item.protection, "fault_model": item.fault, "fault_rate": item.rate,
            "trial": item.trial, "seed": seed, "accuracy": acc,
            "memory_bytes": (mem.words * (64 if item.protection == "unprotected" else 72)) // 8,
            "extra": extra}


def _clean_row(item: MemoryItem) -> dict:
    from faultlab.memory import MemoryLayout

    c = item.config
    net, x, y = _setup(c.model, c.dataset, c.seed, c.eval_size)
    mem = MemoryLayout().bind(net, 8)
    bits = 64 if item.protection == "unprotected" else 72
    return {"variant": item.protection, "fault_rate": 0.0, "trial": 0, "seed": c.seed,
            "accuracy": _accuracy(net, x, y), "memory_bytes": mem.words * bits // 8,
            "extra": {"code_overhead": (bits - 64) / 64}}


def _points(c: MemoryConfig):
    """[(rate, voltage or None, relative energy or None)] of the sweep."""
    if not c.voltages:
        return [(r, None, None) for r in c.rates]
    from faultlab.memory import BERCurve, relative_energy

    curve = BERCurve.load(c.curve)
    nominal = c.nominal_voltage or curve.voltages[1]
    return [(curve.ber(v), v, relative_energy(v, nominal)) for v in c.voltages]


class MemoryStudy(Study):
    """Unprotected / parity / SEC-DED(72,64) weight memory under four hardware error models."""

    name = "faultlab.memory"
    module = "faultlab"
    description = ("Weight memory protection (none, byte parity, Hsiao SEC-DED 72/64) under "
                   "uniform flips, bursts, row faults and asymmetric errors, on the same nested "
                   "fault maps; optional voltage sweep with a BER curve and relative energy.")
    Config = MemoryConfig
    figure = figures.fault_sweep  # key figure
    figure_title = "accuracy vs BER per memory protection and error model"
    memory_kind = "model_bytes"  # the weights as stored, check bits included
    page = "memory"
    quick_seconds = 32  # measured once (see Study.quick_seconds)
    quick = {"rates": (1e-5, 1e-4, 1e-3), "trials": 3}  # noqa: RUF012 - about 10 s on 2 cores

    def run(self, config: MemoryConfig, store, progress=None, executor=None) -> str:
        points = _points(config)
        top = max(r for r, _, _ in points)
        items, clean = {}, {}
        for p in config.protections:
            clean[f"clean|{p}"] = MemoryItem(config, p, "", 0.0, top, 0)
            for f in config.faults:
                for rate, volt, _ in points:
                    at = f"v={volt!r}" if volt is not None else f"{rate!r}"
                    for t in range(config.trials):
                        items[f"{p}|{f}|{at}|trial={t}"] = MemoryItem(config, p, f, rate, top,
                                                                      t, volt)
        energy = {v: e for _, v, e in points if v is not None}
        defaults = {"module": "faultlab", "method": "memory-protection", "model": config.model,
                    "dataset": config.dataset}
        with self.open_run(store, config) as run_id:
            run_items(store, run_id, clean, _clean_row, None, None, defaults=defaults)
            run_items(store, run_id, items, _memory_row_energy(energy), executor, progress,
                      defaults=defaults)
        return run_id


class _memory_row_energy:
    def __init__(self, energy: dict):
        self.energy = energy

    def __call__(self, item: MemoryItem) -> dict:
        row = _memory_row(item)
        if item.voltage is not None:
            row["extra"]["relative_energy"] = self.energy[item.voltage]
        return row


def summarize(results):
    """Mean accuracy per (fault model, rate) with one column per protection (+ clean)."""
    faulty = results[results.fault_model.notna()]
    table = faulty.pivot_table(index=["fault_model", "fault_rate"], columns="variant",
                               values="accuracy", aggfunc="mean")
    clean = results[results.fault_model.isna()]
    table["clean"] = float(clean.accuracy.iloc[0]) if len(clean) else float("nan")
    return table.reset_index()


MEMORY_STUDY = MemoryStudy()
