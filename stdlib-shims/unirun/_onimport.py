"""Adjust a module right after it is first imported, whoever imports it.

One finder at the front of sys.meta_path serves every adjustment (compat's executors, the
launcher's venv support): for a registered name it asks the other finders for the spec and wraps
the loader, so the module runs as it would, then the adjustment runs on it. Unregistered names
cost one dictionary lookup.
"""

import sys
import _thread

_lock = _thread.RLock()
_adjustments = {}  # module name -> callable(module)


class _AdjustingLoader:
    """The real loader, then the adjustment."""

    def __init__(self, loader, adjust):
        self._loader = loader
        self._adjust = adjust

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _resolve(self._adjust)(module)

    def __getattr__(self, name):  # get_resource_reader, is_package, get_code, ...
        return getattr(self._loader, name)


class _Finder:
    def find_spec(self, fullname, path, target=None):
        adjust = _adjustments.get(fullname)
        if adjust is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _AdjustingLoader(spec.loader, adjust)
                return spec
        return None


_finder = _Finder()


def _resolve(adjust):
    """A callable, or "module:function" imported only when first needed."""
    if isinstance(adjust, str):
        import importlib

        module_name, _, function = adjust.partition(":")
        adjust = getattr(importlib.import_module(module_name), function)
    return adjust


def start():
    """Called by unirun-python at start-up: the launcher's own adjustments, loaded lazily so a
    program that never imports them pays nothing (venv: docs/launcher.md)."""
    register("venv", "unirun._venv:adjust")
    if "venv" in sys.modules:  # imported before start-up finished (a .pth file, sitecustomize)
        _resolve("unirun._venv:adjust")(sys.modules["venv"])


def register(name, adjust):
    """Run adjust(module) once `name` is imported from now on (idempotent per name); adjust is a
    callable or "module:function"."""
    with _lock:
        _adjustments[name] = adjust
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def unregister(name):
    with _lock:
        _adjustments.pop(name, None)
        if not _adjustments and _finder in sys.meta_path:
            sys.meta_path.remove(_finder)


def registered(name):
    return _adjustments.get(name) is not None and _finder in sys.meta_path
