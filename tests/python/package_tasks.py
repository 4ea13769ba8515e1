"""Module-level callables for the unirun package tests (importable by every kind of worker)."""

import contextvars
import os
import threading

REQUEST_ID = contextvars.ContextVar("request_id", default="unset")


def square(x):
    return x * x


def read_request_id():
    return REQUEST_ID.get()


def thread_ident():
    return threading.get_ident()


def pid():
    return os.getpid()


def wait_for(event, timeout=30):
    return event.wait(timeout)


def fail(message):
    raise RuntimeError(message)
