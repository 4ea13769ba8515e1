"""unirun: one native scheduler for every concurrent.futures executor.

    from unirun import Run

    with Run("interpreters", cpu_bound=True) as executor:
        results = list(executor.map(work, items))

Under unirun-python the threads and interpreters flavors run on the native scheduler
(_unirun); under plain python they fall back to the standard library, and every choice is
recorded in a decision trace. See docs/guide.md.

Submodules load on first use: interpreter workers import unirun._native, which must stay small.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "Run": "_scope",
    "current_scope": "_scope",
    "RuntimeConfig": "_config",
    "capabilities": "_capabilities",
    "Capabilities": "_capabilities",
    "decide": "_decide",
    "Request": "_decide",
    "DecisionTrace": "_decide",
    "DecisionError": "_decide",
    "REASONS": "_decide",
    "last_decision": "_trace",
    "add_listener": "_trace",
    "remove_listener": "_trace",
    "thread_executor": "_helpers",
    "process_executor": "_helpers",
    "interpreter_executor": "_helpers",
    "to_thread": "_helpers",
    "to_interpreter": "_helpers",
    "to_process": "_helpers",
    "InlineExecutor": "_backends",
    "metrics": "_metrics",
    "instrument_opentelemetry": "_metrics",
    "ledger": "_ledger",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'unirun' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
