"""What 3.14's InterpreterPoolExecutor does with what a program hands it: functions of the main
script (the worker loads the script only then, once), self-contained local functions and
lambdas (they cross by their code), closures and local classes (NotShareableError on the
future), a task's exception (caused by ExecutionFailed), an initializer that fails or cannot
cross (the pool breaks), map with buffersize. Printed the same under python 3.14+ and under
unirun-python (tests/python/test_compat.py)."""
import concurrent.futures as cf
import itertools
import logging
import operator

logging.disable(logging.CRITICAL)  # the initializer failures are logged: not compared here

STATUS = "uninitialized"


def init(value):
    global STATUS
    STATUS = value
    STATUS  # reads a global: it crosses by reference (see CPython's test_init_with___main___global)


def status():
    return STATUS


def fail(kind, message):
    raise kind(message)


def outcome(future):
    try:
        return repr(future.result(timeout=60))
    except Exception as exc:
        cause = exc.__cause__
        return f"{type(exc).__name__}({exc}) cause {type(cause).__name__}"


if __name__ == "__main__":
    with cf.InterpreterPoolExecutor(1, initializer=init, initargs=("initialized",)) as ex:
        print("global set by the initializer:", outcome(ex.submit(status)), "here:", STATUS)
        print("operator.mul:", outcome(ex.submit(operator.mul, 6, 7)))
        print("lambda:", outcome(ex.submit(lambda: sum(range(10)))))

        def local(a, b):
            return [a] * b

        print("local function:", outcome(ex.submit(local, "x", 3)))
        counter = 0

        def closure():
            return counter

        print("closure:", type(ex.submit(closure).exception(timeout=60)).__name__)

        class Local:
            def method(self):
                return 1

        print("local class:", type(ex.submit(Local).exception(timeout=60)).__name__)
        print("bound method:", type(ex.submit(Local().method).exception(timeout=60)).__name__)
        failed = ex.submit(fail, KeyError, "spam").exception(timeout=60)
        cause = failed.__cause__
        print("exception:", repr(failed), type(cause).__name__, cause.excinfo.type.__name__,
              cause.excinfo.msg)
        print("map buffersize:", list(itertools.islice(
            ex.map(operator.neg, itertools.count(), buffersize=3), 5)))
        print("pool still works:", outcome(ex.submit(operator.add, 1, 2)))

    for initializer, initargs in ((fail, (ValueError, "no")), (lambda: counter, ())):
        ex = cf.InterpreterPoolExecutor(1, initializer=initializer, initargs=initargs)
        print("failing initializer:", outcome(ex.submit(operator.add, 1, 2)).split("(")[0])
        try:
            ex.submit(operator.add, 1, 2)
        except Exception as exc:
            print("then submit:", type(exc).__name__)
        ex.shutdown()
    print("end")
