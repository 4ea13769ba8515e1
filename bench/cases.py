"""One benchmark case, run in its own process: `unirun-python bench/cases.py CASE REPEATS`.

Prints one JSON object: {"case": ..., "samples": {name: [seconds, ...]}, ...}. Contenders of
a case run interleaved, repeat by repeat, in the same process, so they share the machine's
state of the moment; bench/run.py takes medians and ratios.
"""

import concurrent.futures as cf
import json
import os
import sys
import time

import tasks

TINY_THREAD_TASKS = 20_000
TINY_INTERP_TASKS = 5_000
CPU_TASKS = 16
WORKERS = 2


def submit_all(executor, n, fn=tasks.noop):
    start = time.perf_counter()
    futures = [executor.submit(fn) for _ in range(n)]
    for future in futures:
        future.result()
    return time.perf_counter() - start


def warm(executor):
    submit_all(executor, 200)


def interleave(repeats, contenders):
    """contenders: {name: callable() -> seconds}; run each once per repeat, in turn."""
    samples = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, measure in contenders.items():
            samples[name].append(measure())
    return samples


def case_threads_tiny(repeats):
    from unirun._executors import ThreadExecutor

    assert cf.ThreadPoolExecutor.__module__ == "concurrent.futures.thread", "run with --compat=off"
    stdlib = cf.ThreadPoolExecutor(WORKERS)
    unirun = ThreadExecutor(WORKERS)
    warm(stdlib), warm(unirun)
    samples = interleave(repeats, {
        "ThreadPoolExecutor": lambda: submit_all(stdlib, TINY_THREAD_TASKS),
        "unirun.threads": lambda: submit_all(unirun, TINY_THREAD_TASKS),
    })
    stdlib.shutdown(), unirun.shutdown()
    return {"samples": samples, "tasks": TINY_THREAD_TASKS}


def case_observability(repeats):
    """Tiny tasks on unirun's thread workers: timing each task (the default: unirun.metrics())
    against a pool made with it off, and the --timeline recording on top."""
    import _unirun

    from unirun._executors import ThreadExecutor

    _unirun.configure_observability(False, 0)
    untimed = ThreadExecutor(WORKERS)
    _unirun.configure_observability(True, 0)
    timed = ThreadExecutor(WORKERS)
    warm(untimed), warm(timed)

    def measured(executor):
        # Each contender's workers are woken by a warm-up of their own first: two pools take
        # turns here, and a measurement must not start with the other pool's workers still
        # spinning (on the free-threaded runtime that alone moved the ratio by 2x).
        warm(executor)
        return submit_all(executor, TINY_THREAD_TASKS)

    def with_timeline():
        warm(timed)
        _unirun.configure_observability(True, TINY_THREAD_TASKS + 1000)
        try:
            return submit_all(timed, TINY_THREAD_TASKS)
        finally:
            _unirun.configure_observability(True, 0)
            _unirun.timeline_take()  # every repeat records into an empty buffer

    samples = interleave(repeats, {
        "metrics off": lambda: measured(untimed),
        "metrics on": lambda: measured(timed),
        "timeline on": with_timeline,
    })
    untimed.shutdown(), timed.shutdown()
    return {"samples": samples, "tasks": TINY_THREAD_TASKS}


def case_interp_tiny(repeats):
    from interpreters_backport.concurrent.futures import InterpreterPoolExecutor
    from unirun._executors import InterpreterExecutor

    return tiny_tasks(repeats, {
        "ProcessPoolExecutor": cf.ProcessPoolExecutor(WORKERS),
        "InterpreterPoolExecutor(backport)": InterpreterPoolExecutor(WORKERS),
        "unirun.interpreters": InterpreterExecutor(WORKERS),
    })


def tiny_tasks(repeats, executors):
    """TINY_INTERP_TASKS no-op tasks on each executor, interleaved; shuts them down."""
    for executor in executors.values():
        warm(executor)
    samples = interleave(repeats, {
        name: (lambda e=executor: submit_all(e, TINY_INTERP_TASKS)) for name, executor in executors.items()
    })
    for executor in executors.values():
        executor.shutdown()
    return {"samples": samples, "tasks": TINY_INTERP_TASKS}


def case_process_tiny(repeats):
    from unirun._executors import ProcessExecutor

    assert cf.ProcessPoolExecutor.__module__ == "concurrent.futures.process", "run with --compat=off"
    return tiny_tasks(repeats, {
        "ProcessPoolExecutor": cf.ProcessPoolExecutor(WORKERS),
        "unirun.processes": ProcessExecutor(WORKERS),
    })


PAYLOAD_BYTES = 64 * 1024 * 1024


def case_payload(repeats):
    """64 MB to a worker and 64 MB back (tasks.echo), against two plain copies of 64 MB here."""
    from unirun._executors import InterpreterExecutor, ProcessExecutor

    data = os.urandom(PAYLOAD_BYTES)
    executors = {
        "ProcessPoolExecutor": cf.ProcessPoolExecutor(1),
        "unirun.processes": ProcessExecutor(1),
        "unirun.interpreters": InterpreterExecutor(1),
    }

    def round_trip(executor):
        start = time.perf_counter()
        back = executor.submit(tasks.echo, data).result()
        elapsed = time.perf_counter() - start
        assert len(back) == PAYLOAD_BYTES
        return elapsed

    def two_copies():
        start = time.perf_counter()
        there = bytearray(data)
        back = bytes(there)
        elapsed = time.perf_counter() - start
        assert len(back) == PAYLOAD_BYTES
        return elapsed

    for executor in executors.values():
        executor.submit(tasks.echo, b"warm").result()
    contenders = {"two copies": two_copies}
    contenders.update({name: (lambda e=executor: round_trip(e)) for name, executor in executors.items()})
    samples = interleave(repeats, contenders)
    for executor in executors.values():
        executor.shutdown()
    return {"samples": samples, "bytes": PAYLOAD_BYTES}


def cpu_scaling(repeats, make_executor):
    iterations = tasks.calibrate()
    executor = make_executor()
    warm(executor)

    def sequential():
        start = time.perf_counter()
        for _ in range(CPU_TASKS):
            tasks.spin(iterations)
        return time.perf_counter() - start

    def parallel():
        start = time.perf_counter()
        list(executor.map(tasks.spin, [iterations] * CPU_TASKS))
        return time.perf_counter() - start

    samples = interleave(repeats, {"sequential": sequential, "unirun": parallel})
    executor.shutdown()
    return {"samples": samples, "iterations": iterations, "tasks": CPU_TASKS}


def case_cpu_interpreters(repeats):
    from unirun._executors import InterpreterExecutor

    return cpu_scaling(repeats, lambda: InterpreterExecutor(WORKERS))


def case_cpu_threads(repeats):
    from unirun._executors import ThreadExecutor

    return cpu_scaling(repeats, lambda: ThreadExecutor(WORKERS))


def case_cpu_threadpool(repeats):
    return cpu_scaling(repeats, lambda: cf.ThreadPoolExecutor(WORKERS))


def case_interp_start(repeats):
    """Time from a new executor to the result of its first task: one worker's start-up."""
    import _interpreters

    from unirun._executors import InterpreterExecutor

    def unirun_start():
        executor = InterpreterExecutor(1)
        start = time.perf_counter()
        executor.submit(tasks.noop).result()
        elapsed = time.perf_counter() - start
        executor.shutdown()
        return elapsed

    def stdlib_start():
        start = time.perf_counter()
        interp = _interpreters.create("isolated")
        _interpreters.exec(interp, "import pickle, os")
        elapsed = time.perf_counter() - start
        _interpreters.destroy(interp)
        return elapsed

    return {"samples": interleave(repeats, {"unirun": unirun_start, "stdlib": stdlib_start})}


def rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def case_interp_rss(repeats):
    """Memory per live worker against per stdlib subinterpreter (own GIL, pickle and os
    imported), each measured as the RSS growth of starting several, in a fresh process."""
    import subprocess

    count = 4
    code = {
        "unirun": f"""
import sys, time, json
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
import tasks
from unirun._executors import InterpreterExecutor
from cases import rss_bytes
ex = InterpreterExecutor({count})
ex.submit(tasks.noop).result()  # the first worker also pays for anything lazily imported here
before = rss_bytes()
fs = [ex.submit(tasks.sleep, 0.3) for _ in range({count})]
[f.result() for f in fs]
assert ex.stats()["workers_started"] == {count}
print(json.dumps((rss_bytes() - before) / ({count} - 1)))
ex.shutdown()
""",
        "stdlib": f"""
import sys, json, _interpreters
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from cases import rss_bytes
first = _interpreters.create("isolated"); _interpreters.exec(first, "import pickle, os")
before = rss_bytes()
others = [_interpreters.create("isolated") for _ in range({count} - 1)]
for interp in others:
    _interpreters.exec(interp, "import pickle, os")
print(json.dumps((rss_bytes() - before) / ({count} - 1)))
""",
    }

    def measure(name):
        out = subprocess.run([sys.executable, "-c", code[name]], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    return {"samples": interleave(repeats, {name: (lambda n=name: measure(n)) for name in code}),
            "unit": "bytes"}


def case_startup(repeats):
    """`-c pass` under unirun-python (compat managed, as users run it) against the runtime's own
    python: the launcher, the hand-off and the compat hook together."""
    import subprocess

    launcher = os.environ.get("UNIRUN_BENCH_LAUNCHER", sys.executable)
    python = sys._base_executable
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIRUN_")}

    def timed(argv):
        runs = 10
        start = time.perf_counter()
        for _ in range(runs):
            subprocess.run(argv, check=True, env=env)
        return (time.perf_counter() - start) / runs

    return {"samples": interleave(repeats, {
        "unirun-python": lambda: timed([launcher, "-c", "pass"]),
        "python": lambda: timed([python, "-c", "pass"]),
    })}


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}

if __name__ == "__main__":
    name, repeats = sys.argv[1], int(sys.argv[2])
    result = CASES[name](repeats)
    result["case"] = name
    result["runtime"] = {"version": sys.version.split()[0], "gil_enabled": sys._is_gil_enabled()}
    print(json.dumps(result))
