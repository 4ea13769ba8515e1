"""Runs first in each subinterpreter worker of compat's interpreter-backed ProcessPoolExecutor.

A task that calls os._exit() in a real worker process ends only that process, and the stdlib's
pool then reports BrokenProcessPool. In a subinterpreter os._exit() would end the whole program,
so here it raises ProcessExit instead, which the pool turns into that same breakage. Imports
only the standard library: it loads in every worker.
"""

import os


class ProcessExit(BaseException):
    """os._exit(code) called by a task on an interpreter worker of a process pool."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def _exit(code):
    raise ProcessExit(code)


def guard_exit(initializer=None, initargs=()):
    """The workers' initializer: install the guard, then the program's own initializer."""
    os._exit = _exit
    if initializer is not None:
        initializer(*initargs)
