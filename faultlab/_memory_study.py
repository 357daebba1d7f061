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

from faultlab._faults import FaultModel
from hwlab import figures
from hwlab.errors import check
from hwlab.studies import Study, StudyConfig, derive_seed, param

__all__ = ["MEMORY_STUDY", "MemoryConfig", "MemoryStudy", "Protected", "summarize"]

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


def _setup(model: str, dataset: str, seed: int, eval_size: int, caller: str):
    from hwlab import zoo
    from hwlab.data import load

    net = zoo.pretrained(model, dataset, seed=seed).eval()
    test = load(dataset, "test", seed=seed)
    test = test.subset(eval_size) if eval_size < len(test) else test
    return net, test


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
class Protected(FaultModel):
    """``member`` thinned from ``top``'s candidates (one nested draw per trial) over the 72-bit
    words of ``MemoryLayout()``, read through ``protection`` (the study's fault point).

    Every protection reads the same raw faults of a trial: unprotected reads the data bits as
    they are (faults on the 8 check bits it does not have are ignored)."""

    protection: str
    member: FaultModel
    top: FaultModel

    rate = property(lambda self: self.member.rate)
    count = None
    bits = None
    asymmetric = True  # drawn by _sample_map, never the plain path
    nominal_rate = property(lambda self: self.member.nominal_rate)
    label = property(lambda self: f"{self.member.label}@{self.protection}")

    def to_dict(self) -> dict:
        return {**self.member.to_dict(), "fault": self.label}

    def _sample_map(self, model, seed, layers, include_bias, include_norm, caller):
        from faultlab.memory import MemoryLayout
        from faultlab.memory._nested import draw_in_memory

        mem = MemoryLayout().bind(model, 8, layers, include_bias, include_norm, caller)
        fmap = draw_in_memory(mem, _code(self.protection), "zero", self.member, self.top, seed,
                              caller)
        for k in ("code", "policy"):  # the protection is the row's variant
            fmap.extra.pop(k, None)
        if self.protection == "unprotected":
            fmap.extra["code_overhead"] = 0.0  # read without check bits
        return fmap


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
        from faultlab._engine import Trial, evaluation, runner
        from faultlab.memory import MemoryLayout

        c, caller = config, f"study {self.name}"
        net, test = _setup(c.model, c.dataset, c.seed, c.eval_size, caller)
        words = MemoryLayout().bind(net, 8, caller=caller).words
        points = _points(c)
        top = max(r for r, _, _ in points)
        method = (("method", "memory-protection"), ("latency_ms", None))  # no timing here
        plan = {}
        for p in c.protections:
            bits = 64 if p == "unprotected" else 72
            stored = (("variant", p), ("memory_bytes", words * bits // 8))
            plan[f"clean|{p}"] = Trial((), 0, c.seed, columns=(*method, *stored,
                                                                ("fault_model", None)),
                                       extra=(("code_overhead", (bits - 64) / 64),))
            for f in c.faults:
                for rate, volt, energy in points:
                    at = f"v={volt!r}" if volt is not None else f"{rate!r}"
                    fault = Protected(p, _primitive(f, rate, c), _primitive(f, top, c))
                    for t in range(c.trials):
                        seed = derive_seed(c.seed, f"{f}|trial={t}")  # not by rate/protection
                        volts = () if volt is None else (
                            ("voltage", volt), ("ber", rate), ("relative_energy", energy))
                        plan[f"{p}|{f}|{at}|trial={t}"] = Trial(
                            (fault,), t, seed, map_seed=seed, fingerprint=True, extra=volts,
                            columns=(*method, *stored, ("fault_model", f), ("fault_rate", rate)))
        ev = evaluation(net, test, ("accuracy",), batch_size=500, model_name=c.model,
                        caller=caller)
        defaults = {"model": c.model, "dataset": c.dataset}
        with self.open_run(store, config) as run_id, runner(ev, executor) as run:
            run.run(store, run_id, plan, progress, defaults)
        return run_id


def summarize(results):
    """Mean accuracy per (fault model, rate) with one column per protection (+ clean)."""
    faulty = results[results.fault_model.notna()]
    table = faulty.pivot_table(index=["fault_model", "fault_rate"], columns="variant",
                               values="accuracy", aggfunc="mean")
    clean = results[results.fault_model.isna()]
    table["clean"] = float(clean.accuracy.iloc[0]) if len(clean) else float("nan")
    return table.reset_index()


MEMORY_STUDY = MemoryStudy()
