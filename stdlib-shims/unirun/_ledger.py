"""unirun.ledger(): the extension modules this process loaded and what each declares.

For each: Py_mod_gil (whether it runs without the GIL on a free-threaded build) and
Py_mod_multiple_interpreters (whether it loads in a subinterpreter, and in one with its own
GIL), read from its PyModuleDef; on a free-threaded runtime, which import enabled the GIL;
and the modules a subinterpreter worker refused to load. decide() reads it: a cpu_bound scope
does not pick threads on a free-threaded runtime whose GIL an import re-enabled, and its reason
names that module.

Under unirun-python the import that enables the GIL is seen as it happens (install()); under
plain python it is inferred from the declarations, in import order (said so by "how").
"""

from __future__ import annotations

import _thread
import sys

# Loaded at every free-threaded start-up: nothing heavy at import (no typing, no threading).

__all__ = ["ledger", "gil_enabled_by", "install"]

# Py_mod_gil and Py_mod_multiple_interpreters values (Include/moduleobject.h).
_GIL = {0: "used", 1: "not_used"}
_MULTI = {0: "not_supported", 1: "supported", 2: "per_interpreter_gil"}
_REFUSAL = "does not support loading in subinterpreters"  # CPython's ImportError text


def _free_threaded_build() -> bool:
    import sysconfig

    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

_lock = _thread.allocate_lock()
_local_notes: list[tuple[str, str, str, int]] = []  # plain python: no _unirun to keep them


def _native():
    # Not _capabilities._native: this module loads at every free-threaded start-up, and
    # _capabilities imports dataclasses.
    try:
        import _unirun
    except ImportError:
        return None
    return _unirun if hasattr(_unirun, "ledger_notes") else None


def _note(kind: str, module: str, detail: str) -> None:
    native = _native()
    if native is not None:
        native.ledger_note(kind, module, detail)
    else:
        with _lock:
            _local_notes.append((kind, module, detail, 0))


def _notes() -> list:
    native = _native()
    if native is not None:
        return native.ledger_notes()
    with _lock:
        return list(_local_notes)


def _declarations(module) -> "tuple | None":
    """(multi_phase, gil slot, multiple_interpreters slot, gil in effect) of an extension
    module, or None. The last is known on a free-threaded runtime under unirun-python only."""
    native = _native()
    if native is not None:
        return native.module_declarations(module)
    return _declarations_by_ctypes(module)


def _declarations_by_ctypes(module) -> "tuple | None":
    # Plain python: PyModule_GetDef and the public PyModuleDef layout (the limited API's).
    try:
        import ctypes
    except ImportError:
        return None
    try:
        get_def = ctypes.pythonapi.PyModule_GetDef
    except AttributeError:
        return None
    get_def.restype, get_def.argtypes = ctypes.c_void_p, [ctypes.py_object]
    address = get_def(module)
    if not address:
        return None
    pointer = ctypes.sizeof(ctypes.c_void_p)
    # PyModuleDef_Base: a PyObject header, then m_init, m_index, m_copy; then m_name, m_doc,
    # m_size, m_methods, m_slots.
    slots_at = address + object.__basicsize__ + 3 * pointer + 4 * pointer
    slots = ctypes.c_void_p.from_address(slots_at).value
    gil = multi = None
    if slots:
        entry = slots
        for _ in range(64):  # a def has a handful of slots; stop at a corrupt one
            kind = ctypes.c_int.from_address(entry).value
            value = ctypes.c_void_p.from_address(entry + pointer).value or 0
            if kind == 0:
                break
            if kind == 4:  # Py_mod_gil
                gil = value
            elif kind == 3:  # Py_mod_multiple_interpreters
                multi = value
            entry += 2 * pointer
    return (bool(slots), gil, multi, None)


def ledger() -> list[dict]:
    """Every extension module loaded in this process (builtin ones included), in import order:
    {"module", "origin", "builtin", "multi_phase", "gil", "gil_declared", "multiple_interpreters",
    "multiple_interpreters_declared", "enabled_gil", "refused_in_subinterpreter"}. gil is
    "not_used" or "used"; a single-phase module's PyUnstable_Module_SetGIL counts as its
    declaration where it can be read (free-threaded runtimes under unirun-python), elsewhere a
    single-phase module that declares nothing is "used". multiple_interpreters is
    "not_supported", "supported" (a shared GIL only) or "per_interpreter_gil". Modules only a
    subinterpreter worker tried to load are listed too (loaded False)."""
    notes = _notes()
    enabled = {module: detail for kind, module, detail, _ in notes if kind == "gil-enabled"}
    refused = {module: detail for kind, module, detail, _ in notes if kind == "interpreter-refused"}
    entries, seen = [], set()
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None)
        builtin = origin == "built-in"
        if not builtin and not (isinstance(origin, str) and origin.endswith((".so", ".pyd"))):
            continue
        try:
            declared = _declarations(module)
        except Exception:
            declared = None
        if declared is None:
            continue
        multi_phase, gil, multi, in_effect = declared
        if gil is None and in_effect is not None:
            gil = in_effect  # a single-phase module's PyUnstable_Module_SetGIL
        entry = {
            "module": name,
            "origin": origin,
            "builtin": builtin,
            "loaded": True,
            "multi_phase": multi_phase,
            "gil": _GIL.get(gil, "used") if gil is not None else "used",
            "gil_declared": gil is not None,
            # Multi-phase modules default to "supported"; single-phase ones cannot load in an
            # isolated subinterpreter at all.
            "multiple_interpreters": _MULTI.get(multi, "supported") if multi is not None
            else ("supported" if multi_phase else "not_supported"),
            "multiple_interpreters_declared": multi is not None,
            "enabled_gil": name in enabled,
            "refused_in_subinterpreter": refused.get(name),
        }
        entries.append(entry)
        seen.add(name)
    for name, detail in refused.items():
        if name not in seen:
            entries.append({"module": name, "origin": None, "builtin": False, "loaded": False,
                            "multi_phase": None, "gil": None, "gil_declared": False,
                            "multiple_interpreters": "not_supported", "multiple_interpreters_declared": False,
                            "enabled_gil": False, "refused_in_subinterpreter": detail})
    return entries


def gil_enabled_by() -> "tuple[str, str] | None":
    """On a free-threaded build whose GIL is on: (module, how) for the import that enabled it,
    how being "observed" (seen as it happened) or "inferred" (the first loaded module that
    declares it needs the GIL); None if the GIL is off, the build has one anyway, or no module
    explains it (PYTHON_GIL=1, -X gil=1)."""
    if not _free_threaded_build():
        return None
    check = getattr(sys, "_is_gil_enabled", None)
    if check is None or not check():
        return None
    for kind, module, _detail, _ in _notes():
        if kind == "gil-enabled":
            return module, "observed"
    if _installed:
        return None  # watched since start-up, and no import did it: the GIL was asked for
    for entry in ledger():
        if entry["loaded"] and not entry["builtin"] and entry["gil"] == "used":
            return entry["module"], "inferred"
    return None


# --- watching imports -------------------------------------------------------------------

_installed = False


def install() -> None:
    """Called by the runtime at start on a free-threaded build: watch extension-module imports
    and note the one that enables the GIL. (Subinterpreter workers watch for modules that
    refuse to load: unirun._native.watch_refusals.)"""
    global _installed
    if _installed or not hasattr(sys, "_is_gil_enabled"):
        return
    bootstrap = sys.modules.get("_frozen_importlib_external")
    loader = getattr(bootstrap, "ExtensionFileLoader", None)
    if loader is None:
        return
    original = loader.create_module

    def create_module(self, spec):
        before = sys._is_gil_enabled()
        module = original(self, spec)
        if not before and sys._is_gil_enabled():
            _note("gil-enabled", spec.name, "importing %s enabled the GIL" % spec.name)
            import threading

            _event("gil.enabled", module=spec.name, thread=threading.current_thread().name)
        return module

    create_module.__wrapped__ = original
    create_module.__doc__ = original.__doc__
    loader.create_module = create_module
    _installed = True


def _event(event: str, **fields) -> None:
    try:
        from . import _events

        _events.emit(event, **fields)
    except Exception:
        pass
