"""Python half of the native scheduler (_unirun): what is simpler said in Python.

Called from C: starting worker threads, logging for futures, and moving calls, results and
exceptions between interpreters. Nothing here is public API.
"""

import _thread
import pickle
import sys

# Interpreter workers import this module: it imports little, so a worker costs little memory
# (bench: interp_worker_rss_vs_stdlib). threading, traceback and runpy load only when needed.

__all__ = []

# --- worker threads ---------------------------------------------------------------------

_live_pools = None  # weakref.WeakSet of pools to stop at interpreter exit, made on first use
_live_pools_lock = _thread.allocate_lock()


def start_worker(pool, name):
    """Start one worker thread of `pool`, visible to threading like any other thread."""
    import threading

    import _unirun

    exiting = not _register_exit()
    _live_pools.add(pool)
    if pool.kind == "interpreters":
        _prepare_for_fork()
    if pool.initializer is None or pool.kind != "threads":  # the others run it where they work
        thread = threading.Thread(target=_unirun._work, args=(pool,), name=name)
    else:
        thread = threading.Thread(target=_initialize_then_work, args=(pool,), name=name)
    if pool.kind == "processes":
        prestart_process_child(pool)
        thread = threading.Thread(target=_work_then_leave, args=(pool,), name=name)
    if exiting:
        # The first worker of the process, started while the interpreter exits (by another
        # library's exit hook): nothing will shut its pool down now, so it must not hold the
        # exit up once its work is done.
        thread.daemon = True
    try:
        thread.start()  # last: once the thread runs, the pool counts it
    except BaseException as exc:
        handle = getattr(thread, "_handle", None)
        if isinstance(exc, Exception) or not getattr(handle, "ident", 0):
            if pool.kind == "processes":
                _drop_prestarted(pool)
            raise  # it never started
        # It runs (a signal handler raised while start() waited for it): it counts, and the
        # submit that started it raises the interrupt once its task is queued.
        return thread, exc
    return thread, None


def pool_event(pool, event):
    """Called from C: a pool or worker lifecycle event (unirun._events)."""
    from . import _events

    _events.pool_event(pool, event)


def _work_then_leave(pool):
    """A process worker's thread: once it leaves, its pool forgets it (as the stdlib's process
    pool keeps no handle on its helper threads once shut down)."""
    import threading

    import _unirun

    try:
        _unirun._work(pool)
    finally:
        pool.forget_thread(threading.current_thread())


def _initialize_then_work(pool):
    import _unirun

    try:
        ok = pool.initializer()
    except BaseException:
        ok = False
    if ok is False:  # the initializer reported its failure (and broke the executor)
        pool.worker_start_failed()
        return
    _unirun._work(pool)


_exit_hook = None  # whether _stop_all_pools is registered (None: not tried yet)


def _register_exit():
    """Registers _stop_all_pools once; False if the interpreter was already exiting."""
    global _live_pools, _exit_hook
    if _exit_hook is not None:
        return _exit_hook
    with _live_pools_lock:  # two first workers may start at once
        if _exit_hook is None:
            import threading
            import weakref

            _live_pools = weakref.WeakSet()
            # Runs before threading joins non-daemon threads (as ThreadPoolExecutor's hook
            # does): workers finish what is queued, then leave, and the join returns.
            try:
                threading._register_atexit(_stop_all_pools)
                _exit_hook = True
            except RuntimeError:  # "can't register atexit after shutdown"
                _exit_hook = False
    return _exit_hook


def _stop_all_pools():
    for pool in list(_live_pools):
        pool.shutdown(False)


_fork_prepared = False


def _prepare_for_fork():
    """Once subinterpreter workers exist, fork() cannot give a child that works the way the
    parent does: CPython cannot carry subinterpreters into a forked child. So, as 3.14 chose:
    multiprocessing's default start method becomes forkserver (unless the program already fixed
    one), and a direct os.fork() warns beforehand. (The runtime also keeps such a child from
    crashing on the interpreters it cannot have: fork_child.c.)"""
    global _fork_prepared
    if _fork_prepared:
        return
    _fork_prepared = True
    import os

    os.register_at_fork(before=_warn_fork)
    try:
        from multiprocessing import context
    except ImportError:
        return
    default = context._default_context
    fork = context._concrete_contexts.get("fork")
    forkserver = context._concrete_contexts.get("forkserver")
    if default._actual_context is None and default._default_context is fork and forkserver:
        default._default_context = forkserver


def _interpreter_workers_alive():
    if _live_pools is None:
        return 0
    return sum(pool.counters()["workers_alive"] for pool in list(_live_pools)
               if pool.kind == "interpreters")


def _warn_fork():
    alive = _interpreter_workers_alive()
    if alive:
        import warnings

        warnings.warn(
            f"unirun: fork() while {alive} subinterpreter worker(s) exist: the child gets "
            "none of them (its pools start new workers) and anything they held is unusable "
            "there; use multiprocessing's forkserver or spawn start method, or fork before "
            "starting interpreter workers", RuntimeWarning, stacklevel=2)


# --- futures ----------------------------------------------------------------------------


def log_callback_error(future, exception):
    from concurrent.futures._base import LOGGER

    LOGGER.error("exception calling callback for %r", future, exc_info=exception)


def log_unexpected_state(future, state):
    from concurrent.futures._base import LOGGER

    LOGGER.critical("Future %s in unexpected state: %s", id(future), state)


def broken_error(message, processes=False):
    """The exception of a task whose worker could not start or whose worker process died:
    BrokenProcessPool for process workers, BrokenInterpreterPool for interpreter workers. A
    message may carry, after NULs, a note (how the process ended) and the text of its cause,
    which becomes a concurrent.futures.process._RemoteTraceback as the stdlib's (3.15) gives."""
    message, _, rest = message.partition("\0")
    detail, _, cause = rest.partition("\0")
    if processes:
        from concurrent.futures.process import BrokenProcessPool as broken
    else:
        from unirun.compat.interpreter_pool import BrokenInterpreterPool as broken
    error = broken(message)
    if detail:
        error.add_note(detail)
    if cause:
        from concurrent.futures.process import _RemoteTraceback

        error.__cause__ = _RemoteTraceback(f"\n'''\n{cause}'''")
    return error


# --- moving calls between interpreters --------------------------------------------------

_HOW_TO_FIX = (
    "{workers} receive the callable and its arguments by pickle (functions without "
    "closures, defaults or globals also by their code): define the function at module level "
    "in an importable module or the main script, pass picklable arguments, or use the threads "
    "flavor"
)
_WORKERS = {"interpreters": ("an interpreter worker", "interpreter workers"),
            "processes": ("a worker process", "worker processes")}

try:  # the error CPython's own interpreters raise for what cannot cross (3.13+)
    from _interpreters import NotShareableError
except ImportError:
    class NotShareableError(ValueError):
        """An object cannot be sent to another interpreter."""


class CannotSendError(TypeError):
    """A call that cannot be sent to an interpreter worker or a worker process (raised by
    submit)."""


def dumps_call(fn, args, kwargs, strict=False, kind="interpreters"):
    """Pickle a call for an interpreter worker when plain pickle cannot (C tries that first).

    Objects that cross between CPython's own interpreters (3.14) though pickle refuses them
    travel another way: functions without closures, defaults or globals by their code (local
    functions and lambdas, as 3.14's InterpreterPoolExecutor shares them), memoryviews as a
    copy of their bytes. Anything else that cannot be pickled is named in the error. strict
    (compat's process pool): no other way; the error is caused by pickle's own."""
    try:
        if strict:
            return pickle.dumps((fn, args, kwargs), protocol=5)
        return _dumps_with_fallbacks((fn, args, kwargs))
    except Exception as exc:
        worker, workers = _WORKERS.get(kind, _WORKERS["interpreters"])
        if strict:
            raise CannotSendError(f"cannot send the call to {worker}: {exc}") from exc
        how_to_fix = _HOW_TO_FIX.format(workers=workers)
        parts = [("callable", fn)]
        parts += [(f"argument {i}", a) for i, a in enumerate(args)]
        parts += [(f"keyword argument {k!r}", v) for k, v in (kwargs or {}).items()]
        for what, value in parts:
            try:
                _dumps_with_fallbacks(value)
            except Exception as inner:
                raise CannotSendError(
                    f"cannot send {what} {_short_repr(value)} to {worker}: "
                    f"{_why_not_sent(value, inner)}; {how_to_fix}"
                ) from inner
        raise CannotSendError(f"cannot send the call to {worker}: {exc}; {how_to_fix}") from exc


def _dumps_with_fallbacks(obj):
    import io

    buffer = io.BytesIO()
    _CallPickler(buffer, protocol=5).dump(obj)
    return buffer.getvalue()


LARGE_BUFFER = 1 << 16  # from this size bytes-like arguments travel beside the pickle


def dumps_call_oob(fn, args, kwargs, strict=False, own_only=False):
    """Called from C when an argument is a large bytes-like object: (the pickled call, the
    C-contiguous memoryviews of its large buffers), which travel beside the pickle (protocol 5
    out-of-band buffers) instead of being copied into it. A worker process receives them raw; an
    interpreter worker reads them in place and copies each once, into its own object: own_only
    (interpreters) keeps other objects' buffers (a NumPy array's, say, which would go on using
    the memory) in the pickle."""
    import io

    buffers = []
    ours = set()

    def out_of_band(buffer):
        if own_only and id(buffer) not in ours:
            return True
        try:
            buffers.append(buffer.raw())
        except BufferError:  # not contiguous: in the pickle after all
            return True
        return False

    data = io.BytesIO()
    pickler = _CallPickler(data, protocol=5, buffer_callback=out_of_band)
    pickler.strict = strict
    pickler.ours = ours
    # pickle never asks reducer_override about bytes: large ones go in a wrapper that does.
    args = tuple(_Large(a) if _large(a) else a for a in args)
    if kwargs:
        kwargs = {k: _Large(v) if _large(v) else v for k, v in kwargs.items()}
    try:
        pickler.dump((fn, args, kwargs))
    except Exception:
        kind = "processes" if not own_only else "interpreters"
        return dumps_call(fn, args, kwargs, strict, kind), []  # names what cannot be sent
    return data.getvalue(), buffers


def raise_error(exc):
    """Runs in a worker: fails the task with `exc` (compat's process pool sends an error it
    met before the task could start, as the stdlib's pool reports it from its worker side)."""
    raise exc


def _large(value):
    return type(value) in (bytes, bytearray) and len(value) >= LARGE_BUFFER


class _Large:
    """A large bytes or bytearray argument on its way out of band (see _CallPickler)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def _bytes_from_buffer(buffer):
    # A bytes object a worker process read the buffer into is used as it is.
    return buffer if type(buffer) is bytes else bytes(buffer)


def _bytearray_from_buffer(buffer):
    # A worker process reads a writable buffer into a bytearray: used as it is.
    return buffer if type(buffer) is bytearray else bytearray(buffer)


class _CallPickler(pickle.Pickler):
    strict = False  # compat's process pool: pickle's own rules, only large buffers beside

    def reducer_override(self, obj):
        kind = type(obj)
        if kind is _Large:
            obj = obj.value
            kind = type(obj)
        if kind is bytes or kind is bytearray:
            if len(obj) >= LARGE_BUFFER and self._buffer_callback_set():
                maker = _bytes_from_buffer if kind is bytes else _bytearray_from_buffer
                return maker, (self._own(pickle.PickleBuffer(obj)),)
            return NotImplemented
        if self.strict:
            return NotImplemented
        if kind is _FunctionType:
            by_code = function_by_code(obj)
            if by_code is not None:
                return _function_from_code, (by_code[0],)
        elif kind is memoryview:
            data = obj.tobytes()
            if len(data) >= LARGE_BUFFER and self._buffer_callback_set():
                data = self._own(pickle.PickleBuffer(data))
            return _memoryview_from, (data, obj.readonly, obj.format, obj.shape)
        return NotImplemented

    def _buffer_callback_set(self):
        return getattr(self, "_oob", False)

    def _own(self, buffer):
        ours = getattr(self, "ours", None)
        if ours is not None:
            ours.add(id(buffer))
            self._keep = getattr(self, "_keep", []) + [buffer]  # ids stay unique while pickling
        return buffer

    def __init__(self, file, protocol=None, *, buffer_callback=None):
        super().__init__(file, protocol, buffer_callback=buffer_callback)
        self._oob = buffer_callback is not None


_FunctionType = type(lambda: None)


def function_by_code(fn):
    """Called from C once per code object: (the marshalled code by which `fn` crosses to an
    interpreter worker, the builtin names it reads), or None if it cannot. CPython 3.14's rule for sharing a
    function between interpreters: no closure, no defaults, and every global name it reads is a
    builtin. It then runs with the worker's own __main__ globals, as it would under the
    stdlib. (C checks each function's globals against the names: a module may shadow one.)"""
    if type(fn) is not _FunctionType:
        return None
    reason, names = _stateless(fn)
    if reason is not None:
        return None
    import marshal

    return marshal.dumps(fn.__code__), tuple(sorted(names))


def _importable(fn):
    """Whether pickle can name `fn` (module-level, found under its qualified name)."""
    target = sys.modules.get(getattr(fn, "__module__", None) or "")
    for part in fn.__qualname__.split("."):
        target = getattr(target, part, None)
    return target is fn


def _why_not_stateless(fn):
    """None when `fn` can be rebuilt from its code alone; else the reason."""
    return _stateless(fn)[0]


def _stateless(fn):
    """(None, the builtin names it reads) when `fn` can be rebuilt from its code alone (no
    closure, no defaults, every global name it or a function nested in it reads is a
    builtin); else (the reason, None)."""
    import builtins
    import dis

    if fn.__closure__:
        return "it is a closure (it uses variables of the function that defined it)", None
    if fn.__defaults__ or fn.__kwdefaults__:
        return "it has default argument values", None
    available = getattr(fn, "__builtins__", None)
    available = available if isinstance(available, dict) else builtins.__dict__
    names = set()
    codes = [fn.__code__]
    while codes:
        code = codes.pop()
        for instruction in dis.get_instructions(code):
            if instruction.opname == "LOAD_GLOBAL":  # as CPython counts: reads, not writes
                name = instruction.argval
                if name in fn.__globals__ or name not in available:
                    return f"it uses the global {name!r}", None
                names.add(name)
        codes.extend(c for c in code.co_consts if isinstance(c, type(code)))
    return None, names


def _why_not_sent(value, error):
    if type(value) is _FunctionType and not _importable(value):
        return f"{error}, and it cannot cross by its code either: {_why_not_stateless(value)}"
    return str(error)


_functions_from_code = {}  # in a worker: marshalled code -> the function rebuilt from it
_worker_globals = None  # in a worker: its own __main__'s namespace, taken before any loading


def _function_from_code(data):
    """In the worker: the function rebuilt from its code, with the worker's own __main__
    globals (as CPython 3.14 rebuilds it); rebuilt once per code."""
    fn = _functions_from_code.get(data)
    if fn is None:
        import marshal

        code = marshal.loads(data)
        namespace = _worker_globals
        if namespace is None:
            namespace = sys.modules["__main__"].__dict__
        fn = _FunctionType(code, namespace)
        if len(_functions_from_code) >= 1024:
            _functions_from_code.clear()
        _functions_from_code[data] = fn
    return fn


def _memoryview_from(data, readonly, fmt, shape):
    if type(data) is not bytes:  # an out-of-band buffer
        data = _bytes_from_buffer(data)
    view = memoryview(data if readonly else bytearray(data))
    return view.cast("B").cast(fmt, shape) if fmt != "B" or len(shape) != 1 else view


def _short_repr(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class RemoteTraceback(Exception):
    """The worker's formatted traceback, attached as __cause__ of a re-raised exception."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


class WorkerError(Exception):
    """Stands for a worker's exception that could not be sent back as itself."""


def exception_outcome(exc, loading, origin="interpreter"):
    """In a worker (an interpreter's, or a worker process when `origin` is "process"): the
    bytes that carry `exc` (and its traceback) back."""
    _explain(exc, loading, origin)
    return _dumps_exception(exc, origin)


def dumps_value(result):
    """In an interpreter worker: a result plain pickle refused, pickled the way calls cross
    (functions by their code, memoryviews as bytes); raises if that fails too."""
    return _dumps_with_fallbacks(result)


def value_outcome_error(result, exc, origin="interpreter"):
    """In a worker: the error for a result that cannot be pickled."""
    where = "worker process" if origin == "process" else "interpreter worker"
    error = TypeError(f"the result {_short_repr(result)} cannot be sent back from the "
                      f"{where}: {exc}")
    error.__cause__ = exc
    return _dumps_exception(error, origin)


def _explain(exc, loading, origin="interpreter"):
    """Add what to do to the errors that only interpreter workers raise."""
    if isinstance(exc, ImportError) and "does not support loading in subinterpreters" in str(exc):
        import re

        named = re.search(r"module (\S+) does not support", str(exc))
        name = exc.name or (named.group(1) if named else "?")
        exc.msg = (f"module {name!r} cannot be imported in a subinterpreter ({exc.msg}); "
                   "run this task with the threads or processes flavor instead, e.g. "
                   "unirun.thread_executor() or unirun.process_executor()")
        exc.args = (exc.msg,)
    if loading:
        try:
            exc._unirun_stage = "load"  # pickled with the exception: the call never started
        except AttributeError:
            pass
    if loading and isinstance(exc, (AttributeError, ImportError)) and "subinterpreter" not in str(exc):
        where = "worker process" if origin == "process" else "interpreter worker"
        exc.add_note(f"unirun: the {where} could not load the callable; functions must "
                     "be importable by name (code given with -c or typed at the REPL is not)")


def _dumps_exception(exc, origin="interpreter"):
    import traceback

    tb = "".join(traceback.format_exception(exc))
    try:
        data = pickle.dumps((exc, tb, origin), protocol=5)
        pickle.loads(data)  # some exceptions pickle but cannot be rebuilt: find out here
        return data
    except Exception:
        stand_in = WorkerError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
        if getattr(exc, "_unirun_stage", None):
            stand_in._unirun_stage = exc._unirun_stage
        return pickle.dumps((stand_in, tb, origin), protocol=5)


def loads_outcome(ok, data):
    """In the caller's interpreter: a task's exception, caused by what the worker saw (as
    CPython's interpreters report it where they can: concurrent.interpreters.ExecutionFailed,
    3.14+). A call the worker could not even load fails as CPython's InterpreterPoolExecutor
    reports it: NotShareableError, caused by the error that stopped it. (Values are decoded in
    C: marshal for simple built-in types, else pickle.)"""
    exc, tb, origin = pickle.loads(data)
    if origin == "process":
        # As the stdlib's process pool: the worker's traceback as the cause. A call the worker
        # could not load fails with the error that stopped it.
        from concurrent.futures.process import _RemoteTraceback

        exc.__cause__ = _RemoteTraceback(f'\n"""\n{tb}"""')
        return exc
    exc.__cause__ = _remote_cause(exc, tb)
    if getattr(exc, "_unirun_stage", None) != "load":
        return exc
    middle = NotShareableError("object could not be unpickled")
    middle.__cause__ = exc
    outer = NotShareableError("args not shareable")
    outer.__cause__ = middle
    outer._unirun_stage = "load"
    return outer


_execution_failed = None  # concurrent.interpreters.ExecutionFailed, or False where none


def _remote_cause(exc, tb):
    global _execution_failed
    if _execution_failed is None:
        try:
            from concurrent.interpreters import ExecutionFailed as _execution_failed
        except ImportError:
            _execution_failed = False
    if not _execution_failed:
        return RemoteTraceback(f'\n"""\n{tb}"""')
    import traceback
    import types

    kind = type(exc)
    excinfo = types.SimpleNamespace(
        type=types.SimpleNamespace(__name__=kind.__name__, __qualname__=kind.__qualname__,
                                   __module__=kind.__module__),
        msg=str(exc),
        formatted="".join(traceback.format_exception_only(exc)).rstrip("\n").split("\n")[-1],
        errdisplay=tb.rstrip("\n"),
    )
    return _execution_failed(excinfo)


def adopt_worker_thread(name):
    """In a worker's subinterpreter, once threading is imported there: make threading see this
    OS thread under the worker's name (as its creator sees it), instead of as a dummy thread.
    A dummy's self-removal hook would also run while the subinterpreter is torn down, after
    threading itself is gone; the stand-in has none. Called from C."""
    import threading

    ident = threading.get_ident()
    if type(threading._active.get(ident)).__name__ == "_WorkerThread":
        return
    local = getattr(threading, "_thread_local_info", None)  # 3.13+: dummies remove themselves
    if hasattr(local, "_track_dummy_thread_ref"):
        del local._track_dummy_thread_ref  # the dummy leaves _active now, while threading works

    class _WorkerThread(threading._DummyThread):
        def __init__(self, name):
            threading.Thread.__init__(self, name=name, daemon=threading._daemon_threads_allowed())
            self._started.set()
            self._set_ident()
            if hasattr(threading, "_make_thread_handle"):  # 3.13+ (3.12 has no handles)
                self._handle = threading._make_thread_handle(self._ident)
            if threading._HAVE_THREAD_NATIVE_ID:
                self._set_native_id()
            with threading._active_limbo_lock:
                threading._active[self._ident] = self

    _WorkerThread(name)


# --- starting an interpreter worker -----------------------------------------------------


def worker_init_info(initializer=None):
    """What a new subinterpreter needs from its creator (marshalled by C)."""
    main = sys.modules.get("__main__")
    main_path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    main_name = spec.name if spec is not None else None
    if main_path is not None and not isinstance(main_path, str):
        main_path = None
    sys.modules.setdefault("__mp_main__", main)  # results may name classes of __mp_main__
    import threading

    worker_name = threading.current_thread().name
    init = None
    if initializer is not None:
        try:
            init = _dumps_with_fallbacks(initializer)
        except Exception as exc:
            error = NotShareableError(f"the initializer {_short_repr(initializer)} cannot be "
                                      f"sent to an interpreter worker: {exc}")
            raise error from exc
    return (tuple(p for p in sys.path if isinstance(p, str)), main_path, main_name, worker_name, init)


_main_to_load = None  # in a worker: how to load the program's __main__, until it is needed
_main_failure = None  # in a worker: why loading it failed


class _PerPool:
    """A table pool -> value that holds its pools weakly, made on first use."""

    def __init__(self):
        self._table = None

    def set(self, pool, value):
        with _live_pools_lock:
            if self._table is None:
                import weakref

                self._table = weakref.WeakKeyDictionary()
            self._table[pool] = value

    def get(self, pool):
        table = self._table
        return table.get(pool) if table is not None else None


_start_failure_handlers = _PerPool()  # pool -> handler(exception)


def on_worker_start_failure(pool, handler):
    """Have handler(exception) called (in the pool's creator) when a worker of `pool` fails to
    start: its initializer raised or could not be sent."""
    _start_failure_handlers.set(pool, handler)


def worker_start_failed(pool, exc):
    """Called from C, in the creator's interpreter: a worker of `pool` could not start because
    of `exc`. Returns the message of the BrokenInterpreterPool its tasks fail with."""
    try:
        from . import _events

        pool.note_worker_broken()
        _events.pool_event(pool, "worker.broken", reason=f"{type(exc).__name__}: {exc}")
    except Exception:
        pass
    handler = _start_failure_handlers.get(pool)
    if handler is not None:
        try:
            handler(exc)
        except Exception as error:
            sys.unraisablehook(_Unraisable(error, "reporting an interpreter worker's failed start"))
    what = "a worker process" if pool.kind == "processes" else "an interpreter worker"
    return f"{what} could not start: {type(exc).__name__}: {exc}"


# --- process workers (runtime/python/process.cpp, unirun/_process_child.py) -------------

_process_settings = _PerPool()  # pool -> _ProcessSettings


class _ProcessSettings:
    """How the children of one process pool start and behave (set_process_settings)."""

    def __init__(self, context, strict):
        self.context = context
        self.strict = strict
        self.children = {}  # pid -> multiprocessing Process, while it runs (compat's _processes)
        self.prestarted = []  # children started by a submit, for the worker thread it starts


def set_process_settings(pool, context=None, strict=False):
    """Children of `pool` start with `context` (a multiprocessing context; default forkserver
    where available, else spawn: never fork). strict: exactly the stdlib's process pool rules
    (a call the child cannot unpickle, or a result the parent cannot, breaks the pool; no
    functions by code). Returns the settings (their `children` dict is live)."""
    if context is None:
        import multiprocessing

        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
    settings = _ProcessSettings(context, strict)
    _process_settings.set(pool, settings)
    return settings


def _settings_of(pool):
    settings = _process_settings.get(pool)
    return settings if settings is not None else set_process_settings(pool)


def prestart_process_child(pool):
    """In the submitting thread, as the stdlib's pool does: start the child of the worker
    thread this submit starts (so the pool's processes are there when submit returns)."""
    settings = _settings_of(pool)
    child = _start_child(pool, settings)
    with _live_pools_lock:
        settings.prestarted.append(child)


def start_process_child(pool):
    """Called from C on a worker thread of `pool`: the child it drives (one a submit started,
    or a new one): (its multiprocessing Process, the fd to write calls to, the fd to read
    outcomes from, its sentinel)."""
    settings = _settings_of(pool)
    with _live_pools_lock:
        if settings.prestarted:
            return settings.prestarted.pop(0)
    return _start_child(pool, settings)


def _start_child(pool, settings):
    """A child by the pool's multiprocessing context, as the stdlib's pool starts its workers
    (so the initializer and its arguments, a Queue say, travel as its workers' do, with the
    parent's authkey): spawn and forkserver start it through sys.executable, i.e. unirun-python
    on this runtime. Its two pipe ends are passed to it alone; ours are close-on-exec."""
    import os

    from . import _process_child

    context = settings.context
    calls_in, calls_out = context.Pipe(duplex=False)
    outcomes_in, outcomes_out = context.Pipe(duplex=False)
    _widen(calls_out), _widen(outcomes_out)
    try:
        process = context.Process(
            target=_process_child.serve, args=(calls_in, outcomes_out, pool.initializer, settings.strict))
        process.start()
        to_child, from_child = os.dup(calls_out.fileno()), os.dup(outcomes_in.fileno())
    finally:
        for connection in (calls_in, calls_out, outcomes_in, outcomes_out):
            connection.close()
    with _live_pools_lock:
        settings.children[process.pid] = process
    return process, to_child, from_child, process.sentinel


def _drop_prestarted(pool):
    import os

    settings = _settings_of(pool)
    with _live_pools_lock:
        child = settings.prestarted.pop() if settings.prestarted else None
    if child is not None:
        process, to_child, from_child, _ = child
        os.close(to_child)
        os.close(from_child)
        reap_process_child(pool, process, kill=True)


def _widen(connection):
    """Large arguments and results cross in fewer, larger writes (Linux: 1 MiB pipes where the
    system allows; the default 64 KiB otherwise)."""
    try:
        import fcntl

        fcntl.fcntl(connection.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):
        pass


def reap_process_child(pool, process, kill=False):
    """Called from C: wait for a child that was told to leave (or has died); its exit code."""
    if kill:
        process.kill()
    process.join()
    settings = _settings_of(pool)
    with _live_pools_lock:
        if settings.children.get(process.pid) is process:
            del settings.children[process.pid]
    return process.exitcode


_child_death_handlers = _PerPool()  # pool -> handler(error)


def on_child_death(pool, handler):
    """Have handler(error) called (on the worker's thread, in the pool's interpreter) when a
    child of `pool` dies; `error` is the BrokenProcessPool its running task fails with. Without
    a handler the worker starts a new child for its next task (traced)."""
    _child_death_handlers.set(pool, handler)


def describe_exit(pid, returncode):
    if returncode is None:
        return f"the worker process {pid} is still running"
    if returncode < 0:
        import signal

        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the worker process {pid} was killed by {name}"
    return f"the worker process {pid} exited with code {returncode}"


def process_child_died(pool, process, task, cause=None):
    """Called from C: the child of a worker of `pool` ended unasked (its pipe closed), while it
    ran a task if `task`; or (with `cause`) the parent could not decode what it sent, under the
    stdlib's rules. Reaps it and returns the message its task fails with (the stdlib's text,
    then after a NUL how the child ended). The pool's handler (compat: break the pool, as the
    stdlib's does) runs first; without one the worker replaces the child (traced)."""
    returncode = reap_process_child(pool, process, kill=cause is not None)
    detail = describe_exit(process.pid, returncode)
    pool.note_worker_broken()
    try:
        from . import _events

        _events.pool_event(pool, "worker.broken", pid=process.pid, returncode=returncode,
                           during_task=bool(task))
    except Exception:
        pass
    # The cause as the stdlib (3.15) words it: "Process PID terminated abruptly with exit code N".
    why = f"Process {process.pid} terminated abruptly with exit code {returncode}"
    if cause is not None:
        detail = f"its result could not be decoded: {type(cause).__name__}: {cause}"
        why = detail
    if task:
        message = ("A process in the process pool was terminated abruptly while the future was "
                   "running or pending.")
    else:
        message = "A child process terminated abruptly, the process pool is not usable anymore"
    handler = _child_death_handlers.get(pool)
    if handler is not None:
        try:
            handler(broken_error(f"{message}\0unirun: {detail}\0{why}", True))
        except Exception as error:
            sys.unraisablehook(_Unraisable(error, "reporting a worker process's death"))
    else:
        _trace_replacement(pool, detail)
    return f"{message}\0unirun: {detail}\0{why}"


def _trace_replacement(pool, detail):
    try:
        from . import _trace
        from ._capabilities import capabilities
        from ._config import RuntimeConfig
        from ._decide import Request, decide

        config = RuntimeConfig.from_env()
        trace = decide(Request(flavor="processes", name="process-worker-replaced"), config,
                       capabilities())
        trace.kind, trace.reason_code = "worker", "process-worker-replaced"
        trace.reason = f"{detail}; its task failed with BrokenProcessPool and the next task " \
                       "starts a new worker process"
        trace.backend = "unirun.ProcessExecutor"
        _trace.record(trace, path=config.trace_path)
    except Exception as error:
        sys.unraisablehook(_Unraisable(error, "tracing a worker process's replacement"))


class _Unraisable:
    """What sys.unraisablehook takes."""

    def __init__(self, exc, message):
        self.exc_type, self.exc_value, self.exc_traceback = type(exc), exc, exc.__traceback__
        self.err_msg, self.object = f"Exception ignored while {message}", None


def prepare_worker(info):
    """In a new subinterpreter: remember how to load the program's main module (loaded only
    when a call needs something of it, as CPython 3.14's interpreters do: importing everything
    the main script imports could fail in a subinterpreter, or cost what the task never
    needs), then run the executor's initializer, if any."""
    global _main_to_load, _worker_globals
    _, main_path, main_name, _, init = info
    _main_to_load = (main_path, main_name)
    _worker_globals = sys.modules["__main__"].__dict__
    watch_refusals()
    if init is not None:
        loads(init)()  # the executor's initializer, in this worker's interpreter


def watch_refusals():
    """In a subinterpreter worker: note each extension module that refuses to load here (it
    does not declare subinterpreter support), for unirun.ledger() in the main interpreter."""
    loader = getattr(sys.modules.get("_frozen_importlib_external"), "ExtensionFileLoader", None)
    if loader is None:
        return
    original = loader.create_module

    def create_module(self, spec):
        try:
            return original(self, spec)
        except ImportError as exc:
            if "does not support loading in subinterpreters" in str(exc):
                import _unirun

                _unirun.ledger_note("interpreter-refused", spec.name, str(exc))
            raise

    loader.create_module = create_module


def loads(data, buffers=()):
    """pickle.loads in a worker, loading the program's __main__ first if the data needs it."""
    try:
        return pickle.loads(data, buffers=buffers)
    except Exception as exc:
        return loads_again(data, exc, buffers)


def loads_again(data, error, buffers=()):
    """pickle.loads(data) failed in a worker with `error`: if what it missed was in the
    program's __main__, load that (once) and try again; else raise `error`."""
    global _main_to_load, _main_failure
    if not _names_main(error):
        raise error
    if _main_to_load is not None:
        main_path, main_name = _main_to_load
        _main_to_load = None
        try:
            _load_main(main_path, main_name)
        except BaseException as exc:
            _main_failure = exc.with_traceback(None)  # kept: no frames (nor their data) with it
            if not isinstance(exc, Exception):
                raise
    if _main_failure is not None:
        error.add_note(f"unirun: the worker could not load the program's main module: "
                       f"{type(_main_failure).__name__}: {_main_failure}")
        raise error from _main_failure
    return pickle.loads(data, buffers=buffers)


def _names_main(error):
    text = str(error)
    return (isinstance(error, AttributeError) and ("'__main__'" in text or "'__mp_main__'" in text)) \
        or (isinstance(error, ImportError) and getattr(error, "name", None) == "__mp_main__")


def _load_main(main_path, main_name):
    """Make the program's __main__ importable, as multiprocessing's spawn does, under the name
    __mp_main__ so its `if __name__ == "__main__"` block stays asleep."""
    if (main_name is None or main_name == "__main__") and not (main_path or "").endswith(".py"):
        return  # -c, stdin or the REPL: nothing importable to load
    import runpy
    import types

    if main_name is not None and main_name != "__main__":
        # Started with -m: run the module under the other name.
        namespace = runpy.run_module(main_name, run_name="__mp_main__", alter_sys=False)
    else:
        namespace = runpy.run_path(main_path, run_name="__mp_main__")
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(namespace)
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module
