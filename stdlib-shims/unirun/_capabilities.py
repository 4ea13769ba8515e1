"""capabilities(): the facts about this process that decisions depend on."""

from __future__ import annotations

import dataclasses
import os
import sys
import sysconfig

__all__ = ["Capabilities", "capabilities"]


@dataclasses.dataclass(frozen=True)
class Capabilities:
    python_version: str
    free_threaded_build: bool
    gil_enabled: bool  # now: an extension can re-enable the GIL on a free-threaded build
    own_gil_interpreters: bool  # subinterpreter workers with their own GIL can be had here
    interpreter_backend: str  # "unirun" (native), "stdlib" (3.14's InterpreterPoolExecutor) or "none"
    under_launcher: bool
    runtime_tag: str  # the launcher's runtime tag, or "" under plain python
    cpu_count: int  # CPUs this process may use
    # On a free-threaded build whose GIL is on: the extension module whose import enabled it
    # (unirun.ledger()), "" if none is known.
    gil_enabled_by: str = ""
    # Dask's distributed scheduler is importable: the distributed flavor can be had.
    distributed: bool = False

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _usable_cpus() -> int:
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        return count() or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _native():
    try:
        import _unirun
    except ImportError:
        return None
    return _unirun if hasattr(_unirun, "Pool") else None


def capabilities() -> Capabilities:
    """What this process can do now (computed on each call: the GIL state can change)."""
    native = _native()
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    gil_check = getattr(sys, "_is_gil_enabled", None)
    gil_enabled = gil_check() if gil_check is not None else True
    if native is not None and getattr(native, "OWN_GIL_INTERPRETERS", True):
        backend = "unirun"
    elif native is not None:
        backend = "none"  # a runtime without own-GIL subinterpreters (3.11), under the launcher
    elif sys.version_info >= (3, 14):
        backend = "stdlib"
    else:
        backend = "none"
    tag = ""
    if native is not None:
        tag = native.runtime_info().get("tag", "")
    enabled_by = ""
    if free_threaded and gil_enabled:
        from ._ledger import gil_enabled_by

        found = gil_enabled_by()
        enabled_by = found[0] if found else ""
    return Capabilities(
        python_version="%d.%d.%d" % sys.version_info[:3],
        free_threaded_build=free_threaded,
        gil_enabled=gil_enabled,
        own_gil_interpreters=backend != "none",
        interpreter_backend=backend,
        under_launcher=native is not None,
        runtime_tag=tag,
        cpu_count=_usable_cpus(),
        gil_enabled_by=enabled_by,
        distributed=_importable("distributed"),
    )


def _importable(name: str) -> bool:
    if name in sys.modules:
        return True
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
