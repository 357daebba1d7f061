"""Studies: named, configurable, resumable experiments that write result rows to a store.

A study is a module-level constant instance of a :class:`Study` subclass, registered under the
``hwlab.studies`` entry-point group (so ``hwlab`` imports no method package). One contract::

    @dataclass(frozen=True)
    class Config(StudyConfig):                       # validates itself in __post_init__
        model: str = param("lenet5", "model spec", kind="model")  # the reference CNN
        trials: int = param(10, "fault maps", range=(1, None))     # a +-3% interval

    @dataclass(frozen=True)
    class Item:                                      # work items: frozen dataclasses
        model: str
        trial: int

    class MyStudy(Study):
        name, module, description = "faultlab.demo", "faultlab", "One line for `hwlab list`."
        Config = Config                    # its Config.study is set to `name` (written once)
        quick = {"trials": 2}
        figure = figures.fault_sweep       # how it is seen: the key figure, ...
        figure_title = "accuracy vs BER"
        latency_kind = "trial_ms"          # ... what latency_ms / memory_bytes mean, ...
        page = "faults"                    # ... the dashboard page that shows its rows

        def run(self, config, store, progress=None, executor=None):
            with self.open_run(store, config) as run_id:      # run_context: done / failed
                items = {f"trial={t}": Item(config.model, t) for t in range(config.trials)}
                run_items(store, run_id, items, _one_trial, executor, progress)
            return run_id

    DEMO_STUDY = MyStudy()

A study describes itself: its figure, the meaning of its ``latency_ms`` / ``memory_bytes`` and
its dashboard page are class attributes that ``hwlab figure``, the figure data and the dashboard
read from the registry, so a new study needs no edit anywhere else. A script, a notebook or a
test adds one with :func:`register_study` (the entry-point loader checks a study the same way).

The CLI flags and the dashboard form are built from :meth:`Study.constraints`. :func:`run_items`
is the resumable engine: it skips the keys already stored, runs the rest inline or on an
executor and writes the rows in batches (one transaction per ``flush_rows`` rows or
``flush_seconds``), so a killed study loses at most the open batch and the running items and,
started again with the same config, ends with the same table. :func:`run_context` is the one
place where a run's status is decided.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import time
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from hwlab._config import StudyConfig, constraints, convert, param
from hwlab.errors import HwlabError, check, check_int, check_number, fail, is_int, is_number
from hwlab.executors import SerialExecutor
from hwlab.seeds import derive_seed  # re-exported: hwlab.studies.derive_seed still works

__all__ = ["LATENCY_KINDS", "MEMORY_KINDS", "Study", "StudyConfig", "all_studies", "derive_seed",
           "find_study", "get_study", "list_studies", "param", "register_study", "run_context",
           "run_items", "run_study", "unregister_study"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hwlab.studies"
Progress = Callable[..., None]  # progress(done: int, total: int, message: str = "")
# What a stored latency_ms can mean: per-sample inference, one campaign trial, one training step.
LATENCY_KINDS = ("inference_ms", "trial_ms", "train_step_ms")
# What a stored memory_bytes can mean: the weights as stored (check bits included), or the peak
# training memory (activations saved for backward + parameters, gradients, optimizer state).
MEMORY_KINDS = ("model_bytes", "train_memory_bytes")
FIGURE_MODELS = ("one", "all")  # a key figure per (model, dataset), or all models of a dataset


class Study:
    """Base class of a study; subclasses set the class attributes and implement :meth:`run`."""

    name: str = ""  # registry name, "<module>.<study>", e.g. "faultlab.campaign"
    module: str = ""  # the package that contributes it: hwlab, faultlab, spiking, ...
    description: str = ""  # one line, shown by `hwlab list`
    Config: type = None  # a frozen dataclass whose every field has a default
    quick: Mapping[str, Any] = types.MappingProxyType({})  # overrides for --quick (~1 min)

    # -- how it is seen: read from the registry by `hwlab figure`, the figure data and the app --
    # Its key figure: builder(rows) -> Altair chart from its rows of one model and dataset (the
    # builders shared by several studies are in hwlab.figures); None: it has no key figure.
    figure: Callable | None = None
    figure_title: str = ""  # what the key figure shows (its subtitle), e.g. "accuracy vs BER"
    figure_models: str = "one"  # "one": a figure per (model, dataset); "all": every model of a
    # dataset in one figure (a model comparison such as hwlab.zoo)
    # What its latency_ms means (one of LATENCY_KINDS); None: per row, from the row's
    # extra.latency_kind, else fault-free rows are inference and faulty rows trial time
    # (module localtrain: a training step), so two meanings never share an axis.
    latency_kind: str | None = None
    # What its memory_bytes means (one of MEMORY_KINDS); None: the row's extra.memory_kind,
    # else weight storage (module localtrain: peak training memory).
    memory_kind: str | None = None
    # The dashboard page that shows its rows (app/app_pages/PAGE.py, e.g. "faults"; its "no rows
    # yet" message names the studies of the page); "figures": the Key figures page, which draws
    # the key figure of any study; None: only the Overview and Runs pages.
    page: str | None = "figures"
    # Wall-clock seconds of its --quick run as measured (shown before the dashboard runs it),
    # None: not measured. The built-in ones: once on the 2-core development machine shared with
    # other jobs (load 8-11), zoo weights already cached (a first zoo training adds to it).
    quick_seconds: float | None = None

    def __init_subclass__(cls, **kwargs):
        """Check what a study says about itself when its class is defined (so a wrong kind is
        an error at import, which the registry reports), and write its name once: a
        :class:`StudyConfig` without its own ``study`` gets the study's ``name``."""
        super().__init_subclass__(**kwargs)
        builder = cls.__dict__.get("figure")
        if isinstance(builder, types.FunctionType):  # a function as class attribute: no method
            cls.figure = staticmethod(builder)
        _check_description(cls, cls.__name__)
        config = cls.__dict__.get("Config")
        if cls.name and isinstance(config, type) and issubclass(config, StudyConfig):
            own = config.__dict__.get("study", "")
            if own and own != cls.name:
                raise TypeError(f"{cls.__name__}.Config.study is {own!r}, not the study's name "
                                f"{cls.name!r}: leave it out, the name is written once")
            if not own:
                config.study = cls.name  # "PARAM of study NAME must be ..."

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- configuration -----------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """Config field name -> resolved type (the CLI builds its flags from this)."""
        hints = typing.get_type_hints(self.Config)
        return {f.name: hints[f.name] for f in dataclasses.fields(self.Config)}

    def make_config(self, quick: bool = False, **overrides):
        """The Config with the quick overrides (if asked) and then ``overrides`` applied.

        Values are checked against the field types; strings (from the CLI) are converted: ints,
        floats, bools (true/false/1/0/yes/no), and tuples as comma-separated lists. ``model``,
        ``dataset`` and ``seed`` may be given for a Config whose field is the plural tuple
        (``models`` ...). An unknown name or a bad value is an error in the hwlab template.
        """
        options = self.options()
        values = dict(self.quick) if quick else {}
        for name, value in overrides.items():
            if value is None and name in ("model", "dataset", "seed", "weights"):
                continue  # a common CLI flag that was not given
            if name not in options and f"{name}s" in options:
                name, value = f"{name}s", value if isinstance(value, (tuple, list)) else (value,)
            check(name in options, "option", f"study {self.name}",
                  f"one of {', '.join(sorted(options))}", name)
            values[name] = value
        converted = {n: convert(v, options[n], n, f"study {self.name}")
                     for n, v in values.items()}
        return self.Config(**converted)  # a StudyConfig validates itself in __post_init__

    def constraints(self) -> dict[str, dict]:
        """Field -> declared constraints (type, default, help, choices, range, ...): the CLI
        flags and the dashboard form are built from this (see :func:`hwlab._config.constraints`).
        """
        return constraints(self.Config)

    # -- running -----------------------------------------------------------------------------
    def open_run(self, store, config, fingerprint: str | None = None):
        """Context manager: open (or resume) this study's run; see :func:`run_context`. The
        store also records what this study's latency / memory columns mean."""
        if hasattr(store, "set_study_kinds"):
            store.set_study_kinds(self.name, self.latency_kind, self.memory_kind)
        return run_context(store, self.name, config, fingerprint)

    def run(self, config, store, progress: Progress | None = None,
            executor: Executor | None = None) -> str:
        """Run the study for ``config``, write rows to ``store``, return the run id."""
        raise NotImplementedError(f"{type(self).__name__} must implement run()")


@contextmanager
def run_context(store, study: str, config, fingerprint: str | None = None) -> Iterator[str]:
    """Open (or resume) the run of ``study`` for ``config``; yield its id; record how it ended.

    The one place where a run's status is decided:

    * the block ends: the run is ``done``;
    * the block raises a :class:`~hwlab.errors.HwlabError` (a refused input, e.g. a resume whose
      weights or data differ) before any result row was written: the store is put back as it
      was (a resumed run gets its earlier status, e.g. stays ``done``; a new run is deleted);
    * anything else (also Ctrl-C, or a refusal after rows were written): ``failed``.
    """
    prior_id = store.find_run(study, config, fingerprint)
    prior = store.run_state(prior_id) if prior_id is not None else None
    run_id = store.open_run(study, config, fingerprint)
    try:
        yield run_id
    except HwlabError:
        n_before = prior["n_results"] if prior else 0
        if store.run_state(run_id)["n_results"] == n_before:
            store.revert_run(run_id, prior)
        else:
            store.finish_run(run_id, "failed")
        raise
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    store.finish_run(run_id, "done")


def _check_description(study, where: str) -> None:
    """What a study says about itself is usable: kinds from the known ones, a callable figure."""
    def bad(attr, expected):
        raise TypeError(f"{where}.{attr} must be {expected}, got {getattr(study, attr)!r}")

    if study.latency_kind not in (None, *LATENCY_KINDS):
        bad("latency_kind", f"None or one of {', '.join(LATENCY_KINDS)}")
    if study.memory_kind not in (None, *MEMORY_KINDS):
        bad("memory_kind", f"None or one of {', '.join(MEMORY_KINDS)}")
    if study.figure is not None and not callable(study.figure):
        bad("figure", "None or a callable rows -> chart")
    if study.figure_models not in FIGURE_MODELS:
        bad("figure_models", f"one of {', '.join(FIGURE_MODELS)}")
    if not isinstance(study.figure_title, str):
        bad("figure_title", "a string")
    if study.page is not None and not (isinstance(study.page, str)
                                       and study.page.isidentifier()):
        bad("page", "None or a page name (app/app_pages/PAGE.py)")
    seconds = study.quick_seconds
    if seconds is not None and not is_number(seconds, 0, finite=False):
        bad("quick_seconds", "None or a number of seconds >= 0")


def _check_study(study, name: str, source: str) -> Study:
    """A registered study: a :class:`Study` called ``name`` whose self-description is usable.

    The one check of :func:`register_study` and of the entry-point loader (``source`` names
    where the study came from in the error).
    """
    if not isinstance(study, Study):
        raise TypeError(f"{source} is {type(study).__name__}, not a Study")
    if study.name != name:
        raise TypeError(f"{source} holds the study named {study.name!r}, not {name!r}: a "
                        "study is registered under its name")
    check(isinstance(study.Config, type) and dataclasses.is_dataclass(study.Config), "Config",
          f"study {name}", "a dataclass", study.Config)
    _check_description(study, type(study).__name__)
    return study


# -- registry --------------------------------------------------------------------------------
_REGISTERED: dict[str, Study] = {}  # added in this process by register_study


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The installed ``hwlab.studies`` entry points by name (discovered once per process)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _names() -> list[str]:
    return sorted(set(_entry_points()) | set(_REGISTERED))


def _load(name: str) -> Study:
    """Load one study (registered in this process, else its entry point); raises whatever the
    import raises, and a TypeError for an object that is not a usable study of that name."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    study = _entry_points()[name].load()
    return _check_study(study, name, f"entry point {name!r}")


def register_study(study: Study) -> Study:
    """Register ``study`` (a :class:`Study` instance) in this process under its ``name``.

    The same as an entry point of the ``hwlab.studies`` group, for a script, a notebook or a
    test: ``hwlab list``, ``hwlab run``, ``hwlab figure`` and the dashboard (started in this
    process) see it. The study is checked as the entry-point loader checks one; a name that is
    registered already (another study object) is refused. Returns ``study``.
    """
    if not isinstance(study, Study):
        raise fail("study", "register_study", "a Study instance", study)
    name = study.name
    check(isinstance(name, str) and bool(name), "name", "register_study",
          "a non-empty string", name)
    _check_study(study, name, f"study {name!r}")
    taken = name in _entry_points() or (name in _REGISTERED and _REGISTERED[name] is not study)
    check(not taken, "name", "register_study", "a name no other study has", name)
    _REGISTERED[name] = study
    return study


def unregister_study(name: str) -> None:
    """Forget a study added by :func:`register_study` (entry points stay registered)."""
    check(name in _REGISTERED, "name", "unregister_study",
          f"a study added by register_study ({', '.join(sorted(_REGISTERED)) or 'none'})", name)
    del _REGISTERED[name]


def list_studies() -> list[str]:
    """Names of the registered studies that import; the others are skipped with a warning."""
    names = []
    for name in _names():
        try:
            _load(name)
        except Exception as exc:  # noqa: BLE001 - a method package still being written, or broken
            log.warning("skipping study %s: %s: %s", name, type(exc).__name__, exc)
            continue
        names.append(name)
    return names


def get_study(name: str | Study) -> Study:
    """The registered study called ``name`` (a :class:`Study` instance is returned as is)."""
    if isinstance(name, Study):
        return name
    known = _names()
    check(name in known, "name", "get_study", f"one of {', '.join(known)}", name)
    try:
        return _load(name)
    except Exception as exc:
        raise fail("name", "get_study", f"a study that loads ({type(exc).__name__}: {exc})",
                   name) from exc


def find_study(name: str) -> Study | None:
    """The registered study called ``name``, or None when there is none or it does not load
    (quietly: for readers of stored rows, whose studies need not be installed here)."""
    if name not in _names():
        return None
    try:
        return _load(name)
    except Exception:  # noqa: BLE001 - reported by list_studies / get_study, not by readers
        return None


def all_studies() -> list[Study]:
    """The registered studies that load, by name (see :func:`list_studies`)."""
    return [_load(name) for name in list_studies()]


def run_study(name: str | Study, store=None, quick: bool = False, executor=None,
              progress: Progress | None = None, **overrides) -> str:
    """Build the config of study ``name``, run it, return the run id.

    ``store`` is a :class:`~hwlab.store.Store`, a path, or None (the default store);
    ``executor`` an Executor, a spec for :func:`hwlab.executors.get_executor` (shut down after
    the run), or None (the study runs inline).
    """
    from hwlab.executors import get_executor
    from hwlab.store import Store

    study = get_study(name)
    config = study.make_config(quick=quick, **overrides)
    if not isinstance(store, Store):
        store = Store(store)
    if isinstance(executor, str):
        with get_executor(executor) as ex:
            return study.run(config, store, progress=progress, executor=ex)
    check(executor is None or isinstance(executor, Executor), "executor", "run_study",
          "None, an executor spec string or a concurrent.futures.Executor", executor)
    return study.run(config, store, progress=progress, executor=executor)


# -- the resumable engine --------------------------------------------------------------------
FLUSH_ROWS = 256  # rows per write transaction: ~1 ms per commit stays far below the item time
FLUSH_SECONDS = 1.0  # ... or fewer, when this long has passed since the last write


def run_items(store, run_id: str, items: Mapping[str, Any], fn: Callable[[Any], dict],
              executor: Executor | None = None, progress: Progress | None = None,
              defaults: Mapping[str, Any] | None = None, max_pending: int | None = None,
              flush_rows: int = FLUSH_ROWS, flush_seconds: float = FLUSH_SECONDS,
              many: bool = False, shared=None, chunksize: int | None = None,
              batch: int | None = None) -> int:
    """Run ``fn(item)`` for every item whose key is not stored yet; write the rows in batches.

    ``items`` maps a result key to the one argument of ``fn`` (a frozen dataclass when there are
    several values); ``fn`` must be a top-level function (picklable) returning one result row
    dict. The row gets ``key`` (the item's) and the ``defaults`` it lacks. Finished rows are
    buffered and written in one transaction once ``flush_rows`` have gathered or
    ``flush_seconds`` have passed since the last write, and at the end (also when an item
    fails or on Ctrl-C), so a kill, even SIGKILL, loses at most the rows of the open batch and
    the running items; started again, only those are computed. With an executor, at most
    ``max_pending`` items (default: all) are submitted at once. Progress is reported as
    ``progress(done, total, key)`` after each finished item. An item that raises stops the run
    (pending items are cancelled, finished ones are written) and its key is named in the error;
    a :class:`~hwlab.errors.HwlabError` (a refused input) is raised as it is.

    ``many=True``: ``fn`` returns a list of rows, each keyed ``"ITEMKEY|..."``; the rows of one
    item are always written in the same transaction, and an item counts as done when any of
    its rows is stored.

    On a process pool or Dask, items go in chunks (``chunksize``, default decreasing sizes:
    large first, small last, so the workers finish together) through :func:`hwlab.executors.map_chunked`. ``shared``: a handle from
    :func:`hwlab.executors.share` (the model and data sent once per worker, set up once
    there); ``fn`` is then called as ``fn(state, item)``, also inline. ``batch=B``: ``fn`` takes
    a list of up to B items and returns their rows as a list (one per item, same order).

    Returns the number of rows newly written.
    """
    check(isinstance(items, Mapping), "items", "run_items", "a mapping of key -> argument",
          items)
    check(callable(fn), "fn", "run_items", "a callable", fn)
    bad = [k for k in items if not (isinstance(k, str) and k)]
    check(not bad, "items", "run_items", "keyed by non-empty strings", bad[:3])
    check(max_pending is None or is_int(max_pending, 1), "max_pending", "run_items",
          "None or an integer >= 1", max_pending)
    flush_rows = check_int(flush_rows, "flush_rows", "run_items", 1)
    flush_seconds = check_number(flush_seconds, "flush_seconds", "run_items", 0, finite=False)
    total = len(items)
    done = store.done_keys(run_id)
    if many:  # an item is done when any row "ITEMKEY|..." is stored
        done = {"|".join(d.split("|")[:i]) for d in done for i in range(1, d.count("|") + 1)}
    todo = [k for k in items if k not in done]
    sink = _Sink(store, run_id, defaults or {}, flush_rows, flush_seconds, progress, total,
                 total - len(todo), many)
    if progress is not None:
        progress(sink.finished, total, f"{sink.finished} stored")
    try:
        if shared is None and batch is None and (executor is None
                                                 or isinstance(executor, SerialExecutor)):
            for key in todo:  # inline
                sink.add(key, _call(fn, items[key], key))
        else:
            from hwlab.executors import map_chunked

            for key, row in map_chunked(executor, fn, {k: items[k] for k in todo}, shared,
                                        chunksize, "run_items", sink.seconds, sink.flush,
                                        max_pending, batch):
                sink.add(key, row)
    finally:
        sink.flush()
    return sink.written


class _Sink:
    """Finished rows waiting for their write: flushed by count, by age and at the end."""

    def __init__(self, store, run_id, defaults, rows, seconds, progress, total, finished, many):
        self.store, self.run_id, self.defaults, self.many = store, run_id, defaults, many
        self.rows, self.seconds, self.progress, self.total = rows, seconds, progress, total
        self.finished, self.written = finished, 0
        self.buffer: list[list[dict]] = []  # the rows of each finished item
        self.n_rows = 0
        self.last = time.monotonic()

    def add(self, key: str, row: Any) -> None:
        if self.many:
            ok = isinstance(row, (list, tuple)) and len(row) > 0 and all(
                isinstance(r, dict) and str(r.get("key", "")).startswith(f"{key}|") for r in row)
            check(ok, f"result for {key!r}", "run_items",
                  f"a non-empty list of rows keyed '{key}|...' (many=True)", row)
            rows = [{**self.defaults, **r} for r in row]
        else:
            if not isinstance(row, dict):
                raise fail(f"result for {key!r}", "run_items", "a dict (one row)", row)
            if row.get("key", key) != key:
                raise fail(f"key of the row for {key!r}", "run_items", f"absent or {key!r}",
                           row.get("key"))
            rows = [{**self.defaults, **row, "key": key}]
        self.buffer.append(rows)
        self.n_rows += len(rows)
        self.finished += 1
        if self.n_rows >= self.rows or time.monotonic() - self.last >= self.seconds:
            self.flush()
        if self.progress is not None:
            self.progress(self.finished, self.total, key)

    def flush(self) -> None:
        if self.buffer:
            items, self.buffer, self.n_rows = self.buffer, [], 0
            try:
                self.written += self.store.add_results(self.run_id,
                                                       [r for rows in items for r in rows])
            except HwlabError:  # a bad row: keep every good item, then name the bad one
                for rows in items:
                    self.written += self.store.add_results(self.run_id, rows)
                raise
        self.last = time.monotonic()


def _call(fn: Callable, arg: Any, key: str, call_bare: bool = False) -> Any:
    try:
        return fn() if call_bare else fn(arg)
    except HwlabError:
        log.debug("item %r of run_items refused its input", key)
        raise
    except Exception as exc:
        raise RuntimeError(f"item {key!r} of run_items failed: {type(exc).__name__}: {exc}") \
            from exc
