"""unirun.compat: unmodified programs get unirun-backed executors.

unirun-python installs it before the program runs (unless --compat=off / UNIRUN_COMPAT=off):

- concurrent.futures.ThreadPoolExecutor is served by the native scheduler's thread workers. It
  subclasses the standard class, so isinstance() checks against it hold, also for references
  taken before the hook was installed; asyncio's default executor (run_in_executor(None, ...),
  asyncio.to_thread) is one of these.
- concurrent.futures.InterpreterPoolExecutor (Python 3.14's API) exists on 3.13 too, served by
  the native scheduler's subinterpreter workers.
- concurrent.futures.ProcessPoolExecutor is served by the native scheduler's process workers
  (--process-pool=processes, the default); --process-pool=interpreters (UNIRUN_PROCESS_POOL)
  asks for subinterpreter workers, with a per-task fallback to a real process pool for work a
  subinterpreter cannot run; --process-pool=stdlib leaves the standard class in place.

The hook is a meta-path finder that lets the standard modules load as they are, then adjusts
them; modules already imported when it is installed are adjusted at once. Nothing is loaded
twice. status() says what is substituted.
"""

from __future__ import annotations

import _thread
import sys

from .. import _onimport

__all__ = ["install", "uninstall", "status", "MODES", "PROCESS_POOL_MODES"]

MODES = ("managed", "off")
PROCESS_POOL_MODES = ("processes", "interpreters", "stdlib", "dask")  # and dask:ADDRESS

# Installed at every start-up of unirun-python: imports nothing beyond sys and _thread until a
# program imports concurrent.futures.
_lock = _thread.RLock()
_state = {
    "mode": "off",
    "process_pool": "processes",
    "patched": {},  # module name -> "at-install" | "on-import"
    "originals": {},  # (module name, attribute) -> original value
}


def _loading(name):
    """True while unirun.compat.NAME is being imported: it imported the stdlib module whose
    adjustment needs it, and finishes that adjustment itself (see the end of each module)."""
    module = sys.modules.get(f"{__name__}.{name}")
    return module is not None and not getattr(module, "_ready", False)


def interpreters_available():
    """Whether this runtime has unirun's own-GIL subinterpreter workers (Python 3.13+, 3.12.4+).
    Without them compat offers no InterpreterPoolExecutor (plain 3.11 and 3.12 have none) and
    --process-pool=interpreters runs every pool on real processes (traced)."""
    import _unirun

    return getattr(_unirun, "OWN_GIL_INTERPRETERS", True)


def _patch_thread(module):
    if _loading("thread_pool"):
        return
    from . import thread_pool

    if module.__dict__.get("ThreadPoolExecutor") is not thread_pool._STDLIB_THREAD_POOL and \
            module.__dict__.get("ThreadPoolExecutor") is not thread_pool.ThreadPoolExecutor:
        # concurrent.futures.thread was reloaded: its class is new, so ours must derive anew
        # (isinstance checks against the new class must hold too).
        import importlib

        thread_pool = importlib.reload(thread_pool)
        for name in ("unirun.compat.interpreter_pool", "unirun.compat.process_pool"):
            if name in sys.modules:
                importlib.reload(sys.modules[name])
        _state["originals"].pop((module.__name__, "ThreadPoolExecutor"), None)
    _swap(module, "ThreadPoolExecutor", thread_pool.ThreadPoolExecutor)


_EXECUTOR_MODULES = {"ThreadPoolExecutor": "thread", "ProcessPoolExecutor": "process",
                     "InterpreterPoolExecutor": "interpreter"}


def _patch_package(module):
    # concurrent.futures resolves its executors lazily (a module __getattr__ up to 3.14, lazy
    # imports from 3.15 on); wrap that, so nothing more is imported until a program asks for
    # an executor.
    original = module.__dict__.get("__getattr__")
    # 3.15: the names are lazy-import objects in the module's namespace. Left there, swapping
    # them would import every executor module now; taken out, our __getattr__ resolves them.
    lazy = {name for name in _EXECUTOR_MODULES
            if type(module.__dict__.get(name)).__name__ == "lazy_import"}
    for name in lazy:
        _swap(module, name, _MISSING)

    def __getattr__(name):
        # 3.14+ records whether _interpreters imported (a program may block it): offer the
        # executor exactly where the stdlib would, and on 3.13 (which has none) wherever
        # unirun's workers exist.
        if name == "InterpreterPoolExecutor" and interpreters_available() and \
                module.__dict__.get("_interpreters", True):
            from .interpreter_pool import InterpreterPoolExecutor

            return InterpreterPoolExecutor
        if name == "ProcessPoolExecutor" and _state["process_pool"] != "stdlib":
            from .process_pool import ProcessPoolExecutor

            return ProcessPoolExecutor
        if name in lazy:  # the standard module's class (the hook adjusts the module on import)
            import importlib

            return getattr(importlib.import_module(f"{module.__name__}.{_EXECUTOR_MODULES[name]}"), name)
        if original is None:
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
        return original(name)

    _swap(module, "__getattr__", __getattr__)
    # Names the package resolved already (before the hook) are replaced in place.
    if "ThreadPoolExecutor" in module.__dict__:
        from . import thread_pool

        _swap(module, "ThreadPoolExecutor", thread_pool.ThreadPoolExecutor)
    if "InterpreterPoolExecutor" in module.__dict__:
        _swap(module, "InterpreterPoolExecutor", __getattr__("InterpreterPoolExecutor"))
    if _state["process_pool"] != "stdlib" and "ProcessPoolExecutor" in module.__dict__:
        _swap(module, "ProcessPoolExecutor", __getattr__("ProcessPoolExecutor"))


def _patch_interpreter(module):
    """3.14+: concurrent.futures.interpreter.InterpreterPoolExecutor is ours too."""
    if _loading("interpreter_pool") or not interpreters_available():
        return
    from . import interpreter_pool
    _swap(module, "InterpreterPoolExecutor", interpreter_pool.InterpreterPoolExecutor)


def _patch_process(module):
    if _state["process_pool"] == "stdlib" or _loading("process_pool"):
        return
    from . import process_pool

    _swap(module, "ProcessPoolExecutor", process_pool.ProcessPoolExecutor)


_PATCHES = {
    "concurrent.futures": _patch_package,
    "concurrent.futures.thread": _patch_thread,
    "concurrent.futures.process": _patch_process,
    "concurrent.futures.interpreter": _patch_interpreter,
}


def _adjusted(module_name):
    """Called at the end of thread_pool and process_pool: adjust the stdlib module they
    imported while loading, if the hook is on."""
    with _lock:
        module = sys.modules.get(module_name)
        if _state["mode"] == "managed" and module is not None:
            _PATCHES[module_name](module)
            _state["patched"].setdefault(module_name, "on-import")


def _swap(module, name, value):
    """Set (or with _MISSING, remove) module.name, keeping the original for uninstall()."""
    key = (module.__name__, name)
    if key not in _state["originals"]:
        _state["originals"][key] = module.__dict__.get(name, _MISSING)
    if value is _MISSING:
        module.__dict__.pop(name, None)
    else:
        setattr(module, name, value)


_MISSING = object()


def _on_import(module):
    """compat's adjustment, run by unirun._onimport when a patched module is first imported."""
    with _lock:
        if _state["mode"] == "managed":
            _PATCHES[module.__name__](module)
            _state["patched"][module.__name__] = "on-import"


def install(mode: str = "managed", process_pool: str = "processes") -> None:
    """Install the hook (idempotent). Called by unirun-python before the program runs."""
    if mode not in MODES:
        raise ValueError(f"compat mode {mode!r} is not valid; use one of: {', '.join(MODES)}")
    if process_pool not in PROCESS_POOL_MODES and not process_pool.startswith("dask:"):
        raise ValueError(f"process pool mode {process_pool!r} is not valid; use one of: "
                         f"{', '.join(PROCESS_POOL_MODES)}, or dask:ADDRESS")
    with _lock:
        if mode == "off":
            uninstall()
            return
        # Checked without importing _unirun: its import loads concurrent.futures, which the
        # hook must not do at start-up.
        if "_unirun" not in sys.builtin_module_names:
            raise RuntimeError("unirun.compat serves executors from unirun's native scheduler, "
                               "which only unirun-python has; run the program with unirun-python")
        _state["mode"] = mode
        _state["process_pool"] = process_pool
        for name in _PATCHES:
            _onimport.register(name, _on_import)
        # Modules imported before the hook (by site or sitecustomize, say): adjust them now,
        # children first so the package sees the adjusted classes.
        for name in ("concurrent.futures.thread", "concurrent.futures.process",
                     "concurrent.futures.interpreter", "concurrent.futures"):
            module = sys.modules.get(name)
            if module is not None and name not in _state["patched"]:
                _PATCHES[name](module)
                _state["patched"][name] = "at-install"


def uninstall() -> None:
    """Remove the hook and restore the standard classes (for tests; programs use --compat=off)."""
    with _lock:
        for name in _PATCHES:
            _onimport.unregister(name)
        for (module_name, name), value in _state["originals"].items():
            module = sys.modules.get(module_name)
            if module is None:
                continue
            if value is _MISSING:
                module.__dict__.pop(name, None)
            else:
                setattr(module, name, value)
        _state["originals"].clear()
        _state["patched"].clear()
        _state["mode"] = "off"


def status() -> dict:
    """What is substituted now, and since when."""
    with _lock:
        managed = _state["mode"] == "managed"
        substituted = {}
        if managed:
            substituted = {
                "concurrent.futures.ThreadPoolExecutor": "unirun native threads",
                "asyncio default executor": "unirun native threads (a ThreadPoolExecutor)",
                "concurrent.futures.InterpreterPoolExecutor": "unirun native interpreters",
                "concurrent.futures.ProcessPoolExecutor": {
                    "processes": "unirun native process workers",
                    "interpreters": "unirun native interpreters, falling back to processes per task",
                    "stdlib": "standard library"}.get(
                        _state["process_pool"], f"a Dask cluster ({_state['process_pool']})"),
            }
            if not interpreters_available():
                import _unirun

                missing = _unirun.OWN_GIL_INTERPRETERS_MISSING
                substituted["concurrent.futures.InterpreterPoolExecutor"] = f"none: {missing}"
                if _state["process_pool"] == "interpreters":
                    substituted["concurrent.futures.ProcessPoolExecutor"] = (
                        f"standard library, traced: {missing}")
        return {
            "mode": _state["mode"],
            "process_pool": _state["process_pool"],
            "hook_installed": _onimport.registered("concurrent.futures"),
            "substituted": substituted,
            "modules_adjusted": dict(_state["patched"]),
        }
