"""Runs in each subinterpreter worker of compat's interpreter-backed ProcessPoolExecutor.

Two things a real worker process would show the pool, made visible here:
- os._exit() in a task ends only the worker process, and the stdlib's pool then reports
  BrokenProcessPool. In a subinterpreter it would end the whole program, so here it raises
  ProcessExit, which the pool turns into that same breakage.
- An extension module that refuses to load in a subinterpreter is a reason to run the task in a
  real process, even when the task (or a library around it) catches the ImportError and returns
  normally. Every refusal during a task is recorded, and such a task ends with
  SubinterpreterRefused, which sends it to a real process.
Imports only the standard library: it loads in every worker.
"""

import os

import _imp


class ProcessExit(BaseException):
    """os._exit(code) called by a task on an interpreter worker of a process pool."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


class SubinterpreterRefused(ImportError):
    """A module refused to load in the subinterpreter while the task ran."""


_refused = []  # module names refused during the current task
_create_dynamic = _imp.create_dynamic


def _exit(code):
    raise ProcessExit(code)


def _create_dynamic_recording(spec, *args):
    try:
        return _create_dynamic(spec, *args)
    except ImportError as exc:
        if "subinterpreter" in str(exc):
            _refused.append(getattr(spec, "name", "?"))
        raise


def guard(initializer=None, initargs=()):
    """The workers' initializer: install both guards, then the program's own initializer."""
    os._exit = _exit
    _imp.create_dynamic = _create_dynamic_recording  # importlib looks it up at each import
    if initializer is not None:
        initializer(*initargs)


def run_task(fn, args, kwargs):
    """Runs one task; a task during which a module refused to load needs a real process."""
    _refused.clear()
    try:
        result = fn(*args, **(kwargs or {}))
    except BaseException as exc:
        if _refused and not isinstance(exc, ProcessExit):
            raise _refusal() from exc
        raise
    if _refused:
        raise _refusal()
    return result


def _refusal():
    names = ", ".join(dict.fromkeys(_refused))
    _refused.clear()
    return SubinterpreterRefused(f"module(s) {names} refused to load in a subinterpreter while "
                                 "the task ran", name=names.split(", ")[0])
