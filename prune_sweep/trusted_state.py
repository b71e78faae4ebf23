"""What ``--resume`` reads back from the storage, read without running code from it.

Ray Tune keeps a sweep's state as pickles in the experiment directory: ``tuner.pkl``, the values
of ``experiment_state-*.json`` that JSON cannot hold (``CLOUDPICKLE_FALLBACK`` hex, and each
trial's non-JSON fields), ``basic-variant-state-*.json`` (a pickle despite its name),
``search_gen_state-*.json``, ``searcher-state-*.pkl`` (Optuna's, through the standard ``pickle``)
and ``callback-states-*.pkl``. An ordinary unpickler runs whatever a file names, so anyone who can
write the storage could run code on the driver that resumes. Inside ``guarded`` every
``pickle.load(s)`` and ``ray.cloudpickle.load(s)`` of this thread goes through ``Unpickler``
instead, which takes only the globals of ``ALLOWED``, each used only as a sweep's own state uses
it (collected from the pickles of grid, random, Optuna TPE and NSGA-II sweeps with the FIFO, ASHA
and MO-ASHA schedulers and every logger; ARCHITECTURE.md, contract 16). Nothing is signed, so a
driver killed between two writes leaves nothing to disagree. Ray is imported inside functions
only: the allowlist is checked without it.

Usage::

    with trusted_state.guarded(exp):  # a refused file: SweepError naming it, when the block ends
        tuner = tune.Tuner.restore(exp.location, trainable=...)
"""

from __future__ import annotations

import argparse
import functools
import importlib
import io
import pickle
import threading
import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from prune_sweep.checks import SweepError
from prune_sweep.storage import Store

CALL, BUILD, NAME = "call", "build", "name"
HELP = 'someone else may have written it: see README "Who may write to the storage"'


@dataclass(frozen=True)
class Use:
    """How a sweep's saved state uses one global. ``CALL``: the pickle runs it with arguments of
    its own (a class: its constructor); ``BUILD``: a class whose instances are made without running
    ``__init__`` and then given their saved attributes (``__setstate__``); ``NAME``: a value
    only, never run while loading."""

    how: str
    check: Optional[Callable[..., Optional[str]]] = None  # CALL: the arguments, BUILD: the state -> why refused
    stand_in: Optional[Callable[..., Any]] = None  # CALL: runs instead of the global (cloudpickle's helpers)


def _uses(how: str, *names: str, **kwargs: Any) -> Dict[str, Use]:
    return {name: Use(how, **kwargs) for name in names}


def _local_filesystem(uri: Any = None, *rest: Any) -> Optional[str]:
    # pyarrow's LocalFileSystem pickles as FileSystem._from_uri("file:///_"); another URI would
    # open a connection (s3://, hdfs://, fsspec+...) while the file loads
    return None if isinstance(uri, str) and uri.startswith("file://") and not rest else "a non-local filesystem URI"


def _bit_generator(kind: Any = "MT19937", *rest: Any) -> Optional[str]:
    import numpy.random as npr

    known = (npr.MT19937, npr.PCG64, npr.PCG64DXSM, npr.Philox, npr.SFC64)
    names = {c.__name__ for c in known}
    ok = not rest and (kind in known if isinstance(kind, type) else isinstance(kind, str) and kind in names)
    return None if ok else "something other than one of numpy's bit generators"


def _random_state(bit_generator: Any = None, *rest: Any) -> Optional[str]:
    # numpy's helper calls its second argument when the first is not a bit generator: only the first
    import numpy.random as npr

    return None if isinstance(bit_generator, npr.BitGenerator) and not rest else "something other than a bit generator"


def _optuna_db(state: Any) -> Optional[str]:
    # RDBStorage.__setstate__ connects to its URL and creates tables there: only the study's own
    # SQLite file (prune_sweep.driver.make_searcher), with no engine options (a ``creator`` is run)
    url = state.get("url") if isinstance(state, dict) else None
    ok = isinstance(url, str) and url.startswith("sqlite:///") and url.endswith("/optuna.db")
    return None if ok and not state.get("engine_kwargs") else "a database other than the study's optuna.db"


SUBIMPORTS = ("mlflow",)  # modules a saved state holds: ray's MLflow helper keeps the mlflow module


def _subimport(name: Any) -> Any:
    if name not in SUBIMPORTS:
        raise Refused(f"imports {name!r}, which a sweep's saved state never does")
    return importlib.import_module(name)


class _Code:
    """A code object as a pickle describes it, never made into one: ``_known_function`` reads only
    the qualified name it claims (CodeType's 13th argument since Python 3.11)."""

    def __init__(self, *fields: Any):
        self.qualname = fields[12] if len(fields) > 12 and isinstance(fields[12], str) else "?"


def _code_type(name: Any) -> Any:
    if name != "CodeType":
        raise Refused(f"asks cloudpickle for the type {name!r}, which a sweep's saved state never does")
    return _Code


@functools.lru_cache(maxsize=None)
def _argparse_identity() -> Callable[[str], str]:
    # argparse's default ``type``, a nested function that cloudpickle stores by value; the parser of
    # Tune's basic-variant-state holds it. The real one is taken from a new parser (once: each
    # parser makes its own).
    return argparse.ArgumentParser(add_help=False)._registries["type"][None]


# functions a saved state holds by value (code inside the pickle), by qualified name: the pickle's
# code is never used, the function named here is returned in its place
KNOWN_FUNCTIONS: Dict[str, Callable[[], Callable]] = {
    "ArgumentParser.__init__.<locals>.identity": _argparse_identity,
}


def _known_function(code: Any, *rest: Any) -> Any:
    qualname = code.qualname if isinstance(code, _Code) else "?"
    if qualname in KNOWN_FUNCTIONS:
        return KNOWN_FUNCTIONS[qualname]()
    raise Refused(f"holds code (a function {qualname[:80]!r} pickled by value), which a sweep's saved state "
                  "never does")


def _keep_function(func: Any, *rest: Any) -> None:
    # cloudpickle's _function_setstate would set the function's globals, defaults and closure
    # from the pickle: a known function keeps its own
    if not any(func is make() for make in KNOWN_FUNCTIONS.values()):
        raise Refused("sets the state of a function, which a sweep's saved state never does")


# Every global a sweep's saved state may name, and how it may use it. Collected with a recording
# unpickler over tuner.pkl, experiment_state-*.json (its CLOUDPICKLE_FALLBACK values and trial
# fields), basic-variant-state-*.json, search_gen_state-*.json and searcher-state-*.pkl of finished
# and SIGKILLed sweeps (grid with 2 seeds; random + ASHA with the tensorboard, mlflow and wandb
# loggers; Optuna TPE + ASHA with points to evaluate; NSGA-II + MO-ASHA), plus pickles of what a
# cloud storage and other search spaces put there (marked). Never builtins.getattr, eval, exec or
# __import__, cloudpickle's function and class builders, or a module by prefix.
ALLOWED: Dict[str, Use] = {
    # Tune's configuration and bookkeeping (tuner.pkl, experiment_state-*.json)
    **_uses(BUILD, "ray.tune:RunConfig", "ray.tune:CheckpointConfig", "ray.tune:FailureConfig", "ray.train:SyncConfig",
            "ray.tune.tune_config:TuneConfig", "ray.tune:Checkpoint", "ray.tune.stopper.noop:NoopStopper",
            "ray.tune.execution.placement_groups:PlacementGroupFactory", "ray.tune.experiment.experiment:Experiment",
            "ray.train._internal.checkpoint_manager:_CheckpointManager", "ray.train._internal.session:_TrainingResult",
            "ray.train._internal.storage:StorageContext", "ray.train._internal.storage:_FilesystemSyncer",
            "ray.air._internal.mlflow:_MLflowLoggerUtil", "uuid:UUID"),
    **_uses(CALL, "ray.air._internal.usage:AirEntrypoint", "collections:deque", "datetime:datetime", "datetime:date"),
    # the syncer's last command, kept as a value; it is never called while loading (it copies files)
    **_uses(NAME, "ray.train._internal.storage:_upload_to_fs_path"),
    "pyarrow._fs:FileSystem._from_uri": Use(CALL, check=_local_filesystem),
    # cloud storage (--storage s3://, gs://): each trial's storage context holds the bucket's filesystem
    **_uses(CALL, "pyarrow._s3fs:S3FileSystem._reconstruct", "pyarrow._gcsfs:GcsFileSystem._reconstruct"),
    # searchers and schedulers: Tune's grid/random generator with its argparse parser, Tune's ASHA
    **_uses(BUILD, *(f"ray.tune.{c}" for c in (
        "search.basic_variant:BasicVariantGenerator", "search.basic_variant:_TrialIterator",
        "search.basic_variant:_VariantIterator", "search.sample:Categorical", "search.sample:Categorical._Uniform",
        "search.sample:_BackwardsCompatibleNumpyRng", "schedulers.trial_scheduler:FIFOScheduler",
        "schedulers.async_hyperband:AsyncHyperBandScheduler", "schedulers.async_hyperband:_Bracket"))),
    **_uses(BUILD, *(f"argparse:{c}" for c in (
        "ArgumentParser", "HelpFormatter", "_ArgumentGroup", "_AppendAction", "_AppendConstAction", "_CountAction",
        "_ExtendAction", "_HelpAction", "_StoreAction", "_StoreConstAction", "_StoreFalseAction", "_StoreTrueAction",
        "_SubParsersAction", "_VersionAction"))),
    **_uses(NAME, "builtins:int", "builtins:str", "json:loads", "ray.tune.resources:json_to_resources"),
    "re:_compile": Use(CALL),  # the parser's compiled patterns
    "ray.cloudpickle.cloudpickle:_builtin_type": Use(CALL, stand_in=_code_type),
    "ray.cloudpickle.cloudpickle:_make_function": Use(CALL, stand_in=_known_function),
    "ray.cloudpickle.cloudpickle:_function_setstate": Use(CALL, stand_in=_keep_function),
    "ray.cloudpickle.cloudpickle:subimport": Use(CALL, stand_in=_subimport),
    # Optuna's searcher (tuner.pkl, searcher-state-*.pkl): study, storage, samplers, trials
    **_uses(BUILD, *(f"optuna.{c}" for c in (
        "study.study:Study", "storages._cached_storage:_CachedStorage", "storages._cached_storage:_StudyInfo",
        "trial._frozen:FrozenTrial", "trial._trial:Trial", "pruners._nop:NopPruner",
        "distributions:FloatDistribution", "distributions:CategoricalDistribution",
        "distributions:IntDistribution",  # randint in a sweep's space
        "search_space.intersection:IntersectionSearchSpace", "samplers._random:RandomSampler",
        "samplers._lazy_random_state:LazyRandomState", "samplers._tpe.sampler:TPESampler",
        "samplers._tpe.parzen_estimator:_ParzenEstimatorParameters",
        "samplers.nsgaii._after_trial_strategy:NSGAIIAfterTrialStrategy",
        "samplers.nsgaii._child_generation_strategy:NSGAIIChildGenerationStrategy",
        "samplers.nsgaii._crossovers._uniform:UniformCrossover",
        "samplers.nsgaii._elite_population_selection_strategy:NSGAIIElitePopulationSelectionStrategy"))),
    "optuna.storages._rdb.storage:RDBStorage": Use(BUILD, check=_optuna_db),
    **_uses(CALL, "optuna.study._study_direction:StudyDirection", "optuna.trial._state:TrialState"),
    **_uses(NAME, "optuna.samplers._tpe.parzen_estimator:_ParzenEstimator",
            "optuna.samplers._tpe.sampler:default_weights", "optuna.samplers._tpe.sampler:default_gamma"),
    # numpy: arrays and the samplers' random states
    **_uses(CALL, "numpy:dtype", "numpy._core.multiarray:_reconstruct", "numpy._core.numeric:_frombuffer"),
    **_uses(NAME, "numpy:ndarray", "numpy.random._mt19937:MT19937"),
    "numpy.random._pickle:__bit_generator_ctor": Use(CALL, check=_bit_generator),
    "numpy.random._pickle:__randomstate_ctor": Use(CALL, check=_random_state),
    # this project's objects: the sweep, its searcher, scheduler and callbacks (trackers)
    **_uses(BUILD, "prune_sweep.driver:StopWhenStorageFull", "prune_sweep.driver:SweepOptunaSearch",
            "prune_sweep.driver:TrialTable", "prune_sweep.expand:OptunaSpace", "prune_sweep.loggers:Logger",
            "prune_sweep.moasha:MOASHAScheduler", "prune_sweep.samplers:PicklableNSGAII",
            "prune_sweep.trackers:TensorBoardCallback", "prune_sweep.trackers:MLflowCallback",
            "prune_sweep.trackers:WandbCallback", *(f"prune_sweep.spec:{c}" for c in (
                "Sweep", "Search", "Scheduler", "Resources", "Entry", "Dist"))),
    **_uses(NAME, "prune_sweep.trial:trial_dirname", "tensorboardX.writer:SummaryWriter"),
}


class Refused(pickle.UnpicklingError):
    """A pickle that names or uses a global as no sweep's saved state does; nothing of it ran."""


class Unpickler(pickle._Unpickler):
    """``pickle.Unpickler`` that takes only the globals of ``ALLOWED``, each only as its ``Use``
    says. It is the standard library's pure-Python unpickler (``pickle._Unpickler``), whose opcodes
    can be checked one by one: a global is resolved from its exact name (nothing is imported for a
    name not listed), called (``REDUCE``, ``INST``, ``OBJ``) only when ``CALL``, instantiated
    (``NEWOBJ``) only when ``CALL`` or ``BUILD``, and never given attributes itself (``BUILD`` on a
    class or function would replace its methods or code)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, **kwargs: Any):
        super().__init__(file, **kwargs)
        self._handed: Dict[int, Tuple[str, Any, Use]] = {}  # id -> (name, object, use) of what find_class gave

    def find_class(self, module: str, name: str) -> Any:
        shown = f"{module}.{name}"
        use = ALLOWED.get(f"{module}:{name}")
        if use is None:
            raise Refused(f"refers to {shown}, which a sweep's saved state never holds")
        obj = use.stand_in
        if obj is None:
            obj = importlib.import_module(module)
            for part in name.split("."):
                obj = getattr(obj, part)
        self._remember(shown, obj, use)
        return obj

    def _remember(self, shown: str, obj: Any, use: Use) -> None:
        self._handed[id(obj)] = (shown, obj, use)

    def _called(self, func: Any, args: Tuple) -> Any:
        shown, _, use = self._handed.get(id(func), (f"an object of type {type(func).__name__}", None, None))
        if use is None or use.how != CALL:
            raise Refused(f"runs {shown} while loading, which a sweep's saved state never does")
        why = use.check(*args) if use.check is not None else None
        if why is not None:
            raise Refused(f"calls {shown} with {why}, which a sweep's saved state never does")
        result = func(*args)
        if result is _Code:  # cloudpickle's CodeType: our record of one, which may be called
            self._remember("types.CodeType", _Code, Use(CALL))
        return result

    def _new(self, cls: Any, args: Tuple, kwargs: Dict) -> Any:
        shown, _, use = self._handed.get(id(cls), (f"an object of type {type(cls).__name__}", None, None))
        if use is None or use.how == NAME or not isinstance(cls, type):
            raise Refused(f"creates {shown} while loading, which a sweep's saved state never does")
        return cls.__new__(cls, *args, **kwargs)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._called(self.stack[-1], tuple(args))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, tuple(args), {}))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, tuple(args), dict(kwargs)))

    def _instantiate(self, klass: Any, args: List) -> None:  # INST and OBJ (protocols 0 and 1)
        if args or not isinstance(klass, type) or hasattr(klass, "__getinitargs__"):
            self.append(self._called(klass, tuple(args)))
        else:
            self.append(self._new(klass, (), {}))

    def load_build(self) -> None:
        inst = self.stack[-2]
        handed = self._handed.get(id(inst))
        if handed is not None or isinstance(inst, (type, types.FunctionType, types.BuiltinFunctionType,
                                                   types.ModuleType)):
            shown = handed[0] if handed else f"an object of type {type(inst).__name__}"
            raise Refused(f"changes {shown} itself, which a sweep's saved state never does")
        state = self.stack[-1]
        parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
        special = [k for part in parts if isinstance(part, dict) for k in part
                   if isinstance(k, str) and k.startswith("__") and k.endswith("__")]
        if special:  # an instance's own __setstate__ would be what the next BUILD on it runs
            raise Refused(f"sets {special[0]} on an object, which a sweep's saved state never does")
        cls = self._handed.get(id(type(inst)))
        if cls is not None and cls[2].check is not None:
            why = cls[2].check(state)
            if why is not None:
                raise Refused(f"gives {cls[0]} {why}, which a sweep's saved state never does")
        super().load_build()

    def load_ext(self) -> None:  # copyreg's extension codes resolve through a process-wide cache
        raise Refused("uses a copyreg extension code, which a sweep's saved state never does")

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.EXT1[0]] = dispatch[pickle.EXT2[0]] = dispatch[pickle.EXT4[0]] = load_ext
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


def loads(data: Any, **kwargs: Any) -> Any:
    """``pickle.loads`` through the allowlist: raises ``Refused`` before anything outside it runs."""
    return Unpickler(io.BytesIO(data), **kwargs).load()


def load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` through the allowlist."""
    return Unpickler(file, **kwargs).load()


class StateRefused(SweepError):
    """A file of the saved state that ``guarded`` did not load: one line naming it and why."""


_LOCAL = threading.local()  # .guard: the guard of this thread, if one is open
_PATCH_LOCK = threading.Lock()
_PATCHES: List[Tuple[Any, str, Any]] = []  # (owner, attribute, original) while any guard is open
_OPEN = [0]  # guards open, in every thread


def _read_through(original: Callable, restricted: Callable) -> Callable:
    def read(source: Any, *args: Any, **kwargs: Any) -> Any:
        guard = getattr(_LOCAL, "guard", None)
        if guard is None or guard.paused:
            return original(source, *args, **kwargs)
        return guard.read(restricted, source, args, kwargs)

    read.__wrapped__ = original  # type: ignore[attr-defined]
    return read


def _paused(original: Callable) -> Callable:
    def call(*args: Any, **kwargs: Any) -> Any:
        guard = getattr(_LOCAL, "guard", None)
        if guard is None:
            return original(*args, **kwargs)
        guard.paused += 1
        try:
            return original(*args, **kwargs)
        finally:
            guard.paused -= 1

    return call


def _install() -> None:
    with _PATCH_LOCK:
        _OPEN[0] += 1
        if _OPEN[0] > 1:
            return
        import ray.cloudpickle
        from ray.tune import registry

        # Tune's and Optuna's loads look these up on the module at each call (``import
        # ray.cloudpickle as pickle``; ``pickle.load``). Tune's trainable registry reads what this
        # process registered, from Ray's own in-memory store (a by-value class): it keeps the
        # unrestricted loads.
        for owner, attr, new in ((pickle, "load", load), (pickle, "loads", loads), (ray.cloudpickle, "load", load),
                                 (ray.cloudpickle, "loads", loads)):
            original = getattr(owner, attr)
            _PATCHES.append((owner, attr, original))
            setattr(owner, attr, _read_through(original, new))
        original = registry._Registry.__dict__["get"]
        _PATCHES.append((registry._Registry, "get", original))
        registry._Registry.get = _paused(original)


def _uninstall() -> None:
    with _PATCH_LOCK:
        _OPEN[0] -= 1
        if _OPEN[0] > 0:
            return
        while _PATCHES:
            owner, attr, original = _PATCHES.pop()
            setattr(owner, attr, original)


def _file_holding(exp: Store, data: bytes) -> Optional[str]:
    """The file at the top of the experiment directory that is ``data``, or whose JSON holds it as
    hex (a CLOUDPICKLE_FALLBACK value, a trial's field); looked for only once a load failed."""
    import pyarrow.fs as pafs

    try:
        infos = exp.fs.get_file_info(pafs.FileSelector(exp.path()))
        for info in sorted(infos, key=lambda i: i.path, reverse=True):  # the newest state file first
            if info.type != pafs.FileType.File or not (info.size == len(data) or info.path.endswith(".json")):
                continue
            with exp.fs.open_input_stream(info.path) as f:
                content = f.read()
            if content == data or (info.path.endswith(".json") and data.hex().encode() in content):
                return info.base_name
    except OSError:
        pass
    return None


class guarded:
    """Inside: every pickle this thread loads with ``pickle.load(s)`` or ``ray.cloudpickle.load(s)``
    goes through ``Unpickler`` (Tune's trainable registry aside, see ``_install``). When the block
    ends, a refused file raises ``StateRefused`` naming it, even where Ray caught the refusal itself
    (``Tuner.restore`` ignores an experiment state it cannot read); so does a file that is not a
    whole pickle, where its error ended the block."""

    def __init__(self, exp: Store):
        self.exp = exp
        self.refused: List[str] = []  # the lines, first refusal first
        self.broken: Dict[int, Tuple[BaseException, str]] = {}  # failed loads: id -> (exception, line)
        self.paused = 0
        self._outer: Optional[guarded] = None

    def __enter__(self) -> "guarded":
        _install()
        self._outer, _LOCAL.guard = getattr(_LOCAL, "guard", None), self
        return self

    def __exit__(self, kind: Any, exc: Optional[BaseException], tb: Any) -> None:
        _LOCAL.guard = self._outer
        _uninstall()
        if self.refused:
            raise StateRefused(self.refused[0]) from None
        seen = set()
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            if id(exc) in self.broken and self.broken[id(exc)][0] is exc:
                raise StateRefused(self.broken[id(exc)][1]) from None
            exc = exc.__cause__ or exc.__context__

    def read(self, restricted: Callable, source: Any, args: Tuple, kwargs: Dict) -> Any:
        try:
            return restricted(source, *args, **kwargs)
        except Refused as exc:
            self.refused.append(f"--resume: {self._where(source)} {exc}; it was not loaded ({HELP})")
            raise
        except Exception as exc:  # truncated, garbled, or its objects would not rebuild
            text = " ".join(str(exc).split()) or "no message"
            self.broken[id(exc)] = (exc, f"--resume: {self._where(source)} cannot be loaded "
                                         f"({type(exc).__name__}: {text[:200]})")
            raise

    def _where(self, source: Any) -> str:
        name = getattr(source, "name", None)
        if isinstance(name, str):  # a file Ray opened: its staging copy has the experiment file's name
            return self.exp.uri(name.replace("\\", "/").rsplit("/", 1)[-1])
        found = _file_holding(self.exp, bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else None
        return self.exp.uri(found) if found else f"a pickle of {self.exp.location}"


class guarded_resume:
    """Inside: Tune's controller resumes a saved experiment (``TuneController.resume``: the
    experiment state, the searcher's and the callbacks' state) under ``guarded``, and only that:
    the results of the trials it then runs are Ray's. A refusal ends the block with its line,
    whatever Tune made of it."""

    def __init__(self, exp: Store):
        self.exp = exp
        self.refused: Optional[StateRefused] = None
        self._original: Any = None

    def __enter__(self) -> "guarded_resume":
        from ray.tune.execution.tune_controller import TuneController

        self._original = original = TuneController.__dict__["resume"]

        def resume(controller: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                with guarded(self.exp):
                    return original(controller, *args, **kwargs)
            except StateRefused as exc:
                self.refused = exc
                raise

        TuneController.resume = resume
        return self

    def __exit__(self, *exc: Any) -> None:
        from ray.tune.execution.tune_controller import TuneController

        TuneController.resume = self._original
        if self.refused is not None:
            raise StateRefused(str(self.refused)) from None
