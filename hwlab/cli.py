"""The ``hwlab`` command line: list and run studies, show or export results, start the dashboard.

::

    hwlab list
    hwlab run STUDY [--model M] [--dataset D] [--seed S] [--store PATH] [--executor SPEC]
                    [--quick] [study options ...]
    hwlab results [--study S] [--store PATH] [--format csv|parquet] [--out PATH]
    hwlab figure STUDY [--model M] [--dataset D] [--store PATH] --out FILE.{svg,pdf,png}
    hwlab dashboard [--port P] [--store PATH]

Study options are built from the study's Config fields (``snake_case`` -> ``--snake-case``; tuples
comma-separated; bools as ``--flag`` / ``--no-flag``). An unknown study or option, or a bad value,
is a one-line error on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from hwlab.errors import HwlabError, check

__all__ = ["main"]

_COMMON = ("model", "dataset", "seed", "weights")  # flags every study accepts (make_config)
_NEGATIVE = re.compile(r"-(\d|\.\d|inf|nan)", re.IGNORECASE)  # "-1e-4", "-.5", "-inf", lists
STOP_GRACE_S = 3.0  # the dashboard server gets this long after SIGTERM, then SIGKILL


class _UsageError(Exception):
    """A command-line mistake: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise _UsageError(f"{self.prog}: error: {message}")


def _base_parser() -> _Parser:
    parser = _Parser(prog="hwlab", description="Hardware-aware DNN reliability and efficiency "
                     "lab: run studies, read results, open the dashboard.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list the registered studies")
    run = sub.add_parser("run", help="run a study (see `hwlab run STUDY --help`)")
    run.add_argument("study")
    res = sub.add_parser("results", help="print or export stored results")
    res.add_argument("--study", help="only this study's results")
    res.add_argument("--store", help="store file (default $HWLAB_HOME/hwlab.sqlite)")
    res.add_argument("--format", choices=("csv", "parquet"),
                     help="write this format (to --out, or CSV to stdout)")
    res.add_argument("--out", help="file to write (format from --format or the suffix)")
    res.add_argument("--module", help="only this module's results (faultlab, spiking, ...)")
    res.add_argument("--run", help="only this run's results (a run id)")
    res.add_argument("--model", help="only this model's results")
    res.add_argument("--dataset", help="only this dataset's results")
    res.add_argument("--columns", help="comma-separated result columns to show (default all)")
    res.add_argument("--by", help="comma-separated columns: print one line per group (rows, "
                     "and count and mean of each metric) computed by the store")
    res.add_argument("--limit", type=int, help="print at most this many rows")
    fig = sub.add_parser("figure", help="draw a study's key figure from the store (SVG/PDF/PNG)")
    fig.add_argument("study")
    fig.add_argument("--model", help="model of the rows drawn (default: the most rows)")
    fig.add_argument("--dataset", help="dataset of the rows drawn (default: the most rows)")
    fig.add_argument("--store", help="store file (default $HWLAB_HOME/hwlab.sqlite)")
    fig.add_argument("--out", required=True, help="FILE.svg, FILE.pdf or FILE.png; a folder: "
                     "named after study, model, dataset and run date")
    dash = sub.add_parser("dashboard", help="start the Streamlit dashboard on 127.0.0.1")
    dash.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    dash.add_argument("--store", help="store file the dashboard reads (sets HWLAB_STORE)")
    return parser


def _run_parser(study) -> _Parser:
    """The parser of ``hwlab run STUDY``, with one flag per Config field."""
    parser = _Parser(prog=f"hwlab run {study.name}", description=study.description,
                     argument_default=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", default=False)
    parser.add_argument("--store", default=None, help="store file (default "
                        "$HWLAB_HOME/hwlab.sqlite)")
    parser.add_argument("--executor", default="serial", help="serial (default), process:N, "
                        "dask-local:N or dask:ADDRESS")
    parser.add_argument("--quick", action="store_true", default=False,
                        help=f"the quick configuration {dict(study.quick)}")
    options = study.options()
    declared = study.constraints()
    group = parser.add_argument_group(f"options of {study.name}")
    for name, tp in options.items():
        flag = "--" + name.replace("_", "-")
        c = declared[name]
        shown = c["default"]
        shown = ",".join(map(str, shown)) if isinstance(shown, tuple) else shown
        words = f"{c['help']} " if c["help"] else ""
        if tp is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                               help=f"{words}(default: {shown})")
            continue
        metavar = name.upper()
        if c["choices"] is not None:  # checked by the Config (one message), listed here
            metavar = "{" + ",".join(map(str, c["choices"])) + "}"
            metavar += ",..." if c["is_tuple"] else ""
        group.add_argument(flag, dest=name, metavar=metavar,
                           help=f"{words}(default: {shown}; {c['text']})".replace("%", "%%"))
    for name in _COMMON:  # --model for a Config with `models`, ...
        if name not in options:
            if f"{name}s" in options:
                group.add_argument(f"--{name}", dest=name, help=f"same as --{name}s {name}")
            else:
                group.add_argument(f"--{name}", dest=name, help=argparse.SUPPRESS)
    return parser


def _progress_bar(desc: str):
    from tqdm.auto import tqdm

    bar = tqdm(total=0, desc=desc, unit="item", dynamic_ncols=True, file=sys.stderr)

    def progress(done: int, total: int, message: str = "") -> None:
        bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(str(message)[-40:], refresh=False)
        bar.refresh()

    return bar, progress


def _readable(df):
    """Drop columns that are empty everywhere and the long ids, for printing."""
    keep = [c for c in df.columns if c not in ("run_id", "extra") and df[c].notna().any()]
    return df[keep]


def _cmd_list() -> int:
    from hwlab.studies import get_study, list_studies

    names = list_studies()
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:<{width}}  {get_study(name).description}")
    return 0


def _join_negative_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``--rates -1e-4`` -> ``--rates=-1e-4``: argparse would read ``-1e-4`` as an option, so
    the value would never reach the Config's validator (which names the allowed range)."""
    takes_value = {s for a in parser._actions if a.nargs is None and a.option_strings
                   and not isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                                          argparse.BooleanOptionalAction))
                   for s in a.option_strings}
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        if tok in takes_value and i + 1 < len(argv) and _NEGATIVE.match(argv[i + 1]):
            out.append(f"{tok}={argv[i + 1]}")
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


def _cmd_run(argv: list[str]) -> int:
    from hwlab.executors import parse_spec
    from hwlab.store import Store
    from hwlab.studies import get_study, run_study

    study = get_study(argv[0])
    parser = _run_parser(study)
    args = vars(parser.parse_args(_join_negative_values(argv[1:], parser)))
    verbose, quick = args.pop("verbose"), args.pop("quick")
    store_path, executor = args.pop("store"), args.pop("executor")
    if verbose:  # hwlab's progress and the study's own package (e.g. quantum's verdict)
        for name in {"hwlab", study.module} - {""}:
            logging.getLogger(name).setLevel(logging.INFO)
    study.make_config(quick=quick, **args)  # bad options fail here, before any work
    parse_spec(executor)
    store = Store(store_path)
    bar, progress = _progress_bar(study.name)
    try:
        run_id = run_study(study, store=store, quick=quick, executor=executor,
                           progress=progress, **args)
    finally:
        bar.close()
    df = store.results(run_id=run_id)
    print(f"run {run_id}: {len(df)} result rows in {store.path}")
    if len(df):
        print(_readable(df).to_string(index=False, max_rows=40))
    return 0


def _cmd_results(args) -> int:
    import pandas as pd

    from hwlab.store import METRIC_COLUMNS, Store

    store = Store(args.store)
    filters = {"study": args.study, "module": args.module, "run_id": args.run,
               "where": {k: v for k, v in (("model", args.model), ("dataset", args.dataset))
                         if v is not None}}
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    check(args.limit is None or args.limit >= 0, "--limit", "hwlab results",
          "a non-negative integer", args.limit)
    if args.out:
        out = Path(args.out)
        if args.format:
            out = out if out.suffix.lower() == f".{args.format}" else Path(f"{out}.{args.format}")
        narrowed = any(v for k, v in filters.items() if k != "study") or columns
        if narrowed:  # the selected rows and columns only
            suffix = out.suffix.lower()
            check(suffix in (".csv", ".parquet"), "--out", "hwlab results",
                  "a file name ending in .csv or .parquet", str(out))
            df = store.select(columns, limit=args.limit, **filters)
            df.to_csv(out, index=False) if suffix == ".csv" else df.to_parquet(out, index=False)
            print(f"wrote {len(df)} rows to {out}")
            return 0
        path = store.export(out, study=args.study)
        print(f"wrote {store.count(study=args.study)} rows to {path}")
        return 0
    if args.format == "parquet":
        raise _UsageError("hwlab results: error: --format parquet needs --out PATH")
    if args.by:
        by = [c.strip() for c in args.by.split(",") if c.strip()]
        values = [c for c in (columns or METRIC_COLUMNS) if c not in by]
        agg = store.aggregate(by, values, **filters)
        df = agg[[*by, "rows"]].copy()
        for v in values:
            if agg[f"{v}_n"].sum() > 0:
                df[f"{v} n"] = agg[f"{v}_n"].astype("int64")
                df[f"{v} mean"] = agg[f"{v}_sum"] / agg[f"{v}_n"]
        df = df.sort_values(by, ignore_index=True).head(args.limit) if args.limit is not None \
            else df.sort_values(by, ignore_index=True)
    else:
        df = store.select(columns, limit=args.limit, **filters)
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
        return 0
    if df.empty:
        print(f"no results in {store.path}" + (f" for study {args.study}" if args.study else ""))
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print((df if args.by else _readable(df)).to_string(index=False))
    return 0


def _cmd_figure(args) -> int:
    from hwlab import figures
    from hwlab.store import Store

    out = Path(args.out)
    check(out.is_dir() or out.suffix.lower() in figures.FORMATS, "--out", "hwlab figure",
          "a folder or a file name ending in .svg, .pdf or .png", args.out)
    store = Store(args.store)
    described = figures._study(args.study)
    if described.figure is figures.fault_sweep and store.count(study=args.study) > 0:
        # a fault sweep is drawn from the store's sums per point (same curves and intervals),
        # so a million-row campaign is never read row by row
        from hwlab._figure_data import study_points

        chart, stem = figures.figure_rows(study_points(store, args.study), store.runs(),
                                          args.study, args.model, args.dataset)
    else:
        chart, stem = figures.figure(store, args.study, model=args.model, dataset=args.dataset)
    path = figures.save(chart, out / f"{stem}.svg" if out.is_dir() else out)
    print(f"wrote {path}")
    return 0


def _cmd_dashboard(args) -> int:
    check(1 <= args.port <= 65535, "--port", "hwlab dashboard", "an integer in [1, 65535]",
          args.port)
    spec = importlib.util.find_spec("app")  # locates the package without importing it
    main_py = Path(spec.origin).parent / "main.py" if spec and spec.origin else None
    check(main_py is not None and main_py.is_file(), "app", "hwlab dashboard",
          "an installed package with main.py", str(main_py))
    env = dict(os.environ)
    if args.store:
        from hwlab.store import Store

        env["HWLAB_STORE"] = str(Store(args.store).path.resolve())  # refuses foreign files
    cmd = [sys.executable, "-m", "streamlit", "run", str(main_py),
           "--server.address", "127.0.0.1", "--server.port", str(args.port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "minimal"]
    print(f"hwlab dashboard on http://127.0.0.1:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    return _serve(cmd, env)


class _Stop(Exception):
    """A termination signal reached ``hwlab dashboard``."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGKILL when hwlab dies, even by SIGKILL (PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve(cmd: list[str], env: dict) -> int:
    """Run the server in its own process group; stop the whole group when hwlab stops.

    SIGTERM, SIGINT and SIGHUP to hwlab are forwarded as SIGTERM to the group; whatever is
    still alive after :data:`STOP_GRACE_S` gets SIGKILL (Streamlit can take seconds to honour
    SIGTERM). On Linux the server also dies with hwlab if hwlab itself is SIGKILLed.
    """
    linux = sys.platform.startswith("linux")
    proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                            preexec_fn=_die_with_parent if linux else None)  # noqa: PLW1509

    def on_signal(signum, frame):
        raise _Stop(signum)

    caught = [s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if s]
    previous = {s: signal.signal(s, on_signal) for s in caught}
    try:
        return proc.wait()
    except _Stop as stop:
        return 128 + stop.signum
    except KeyboardInterrupt:
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    def kill(sig):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    if proc.poll() is None:
        kill(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    kill(signal.SIGKILL)  # the server and anything it started, if still there
    if proc.poll() is None:
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hwlab`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="hwlab: %(levelname)s: %(message)s")
    try:
        if argv and argv[0] == "run" and len(argv) > 1 and not argv[1].startswith("-"):
            return _cmd_run(argv[1:])
        args = _base_parser().parse_args(argv)
        if args.verbose:
            logging.getLogger("hwlab").setLevel(logging.INFO)
        if args.command == "list":
            return _cmd_list()
        if args.command == "results":
            return _cmd_results(args)
        if args.command == "figure":
            return _cmd_figure(args)
        if args.command == "dashboard":
            return _cmd_dashboard(args)
        raise _UsageError("hwlab run: error: a study name is required (see `hwlab list`)")
    except (_UsageError, HwlabError) as exc:
        msg = " ".join(str(exc).split())  # one line
        print(f"hwlab: error: {msg}" if isinstance(exc, HwlabError) else msg, file=sys.stderr)
        return 2
