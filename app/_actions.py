"""Work the dashboard starts itself (beyond running registered studies), through public APIs."""

from __future__ import annotations

from hwlab.errors import check

__all__ = ["run_vulnerability"]


def run_vulnerability(store, model: str, dataset: str, trials: int = 3, eval_size: int = 300,
                      bits: tuple[int, ...] | None = None, seed: int = 0, progress=None) -> str:
    """Layer x bit analysis of a zoo model (``faultlab.vulnerability``) written as result rows.

    One run of study ``faultlab.vulnerability`` (config = the arguments; the same arguments reuse
    the run and skip the rows already stored), one row per (layer, bit): module ``faultlab``,
    method ``vulnerability``, variant ``unprotected``, fault model ``bitflip`` (one flipped bit
    per trial, faultlab's default), ``accuracy`` = mean over trials, and in ``extra`` the layer,
    bit, field, dtype, 95% half-width, faults per trial, clean accuracy and accuracy drop.
    Returns the run id.
    """
    import faultlab
    from hwlab import data, zoo

    check(isinstance(trials, int) and trials >= 1, "trials", "run_vulnerability",
          "an integer >= 1", trials)
    check(isinstance(eval_size, int) and eval_size >= 1, "eval_size", "run_vulnerability",
          "an integer >= 1", eval_size)
    config = {"model": model, "dataset": dataset, "trials": trials, "eval_size": eval_size,
              "bits": list(bits) if bits else None, "seed": seed, "fault": "one bit flip"}
    run_id = store.open_run("faultlab.vulnerability", config)
    try:
        net = zoo.pretrained(model, dataset, seed=seed)
        test = data.load(dataset, "test", seed=seed)
        table = faultlab.vulnerability(net, test, trials=trials, seed=seed, eval_size=eval_size,
                                       bits=list(bits) if bits else None, progress=progress)
        rows = [{"key": f"{r.layer}|{int(r.bit)}", "module": "faultlab",
                 "method": "vulnerability", "model": model, "dataset": dataset,
                 "variant": "unprotected", "fault_model": "bitflip", "trial": None,
                 "seed": seed, "accuracy": float(r.accuracy),
                 "extra": {"layer": r.layer, "bit": int(r.bit), "field": r.field,
                           "dtype": r.dtype, "ci": float(r.ci), "n_faults": float(r.n_faults),
                           "clean_accuracy": float(r.clean_accuracy),
                           "accuracy_drop": float(r.accuracy_drop)}}
                for r in table.itertuples()]
        store.add_results(run_id, rows)
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    store.finish_run(run_id, "done")
    return run_id
