"""Issue 12: unirun.metrics() and its exports, the --timeline, the import ledger, lifecycle logs.

Runs under unirun-python in both thread modes and under plain python; what needs the native
scheduler is skipped under plain python with the reason, what plain python offers (partial
metrics of the standard library's executors, the ledger's declarations) is tested there too.
Programs whose files or GIL state matter run as child processes of the interpreter under test.
"""

import concurrent.futures as cf
import gc
import json
import logging
import os
import pathlib
import subprocess
import sys
import sysconfig
import textwrap
import threading

import pytest

import unirun
from unirun import _metrics

try:
    import _unirun
except ImportError:
    _unirun = None

import native_tasks as tasks
from runtime_support import needs_native_interpreters

needs_launcher = pytest.mark.skipif(_unirun is None, reason="needs unirun-python: the native scheduler keeps the metrics")
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
HERE = pathlib.Path(__file__).resolve().parent


def run_program(source, *launcher_args, env=None, timeout=120):
    """Run source under the interpreter under test (with unirun's options first when it is the
    launcher); returns the completed process."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("UNIRUN_METRICS")
                 and not k.startswith("UNIRUN_TIMELINE")}
    child_env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parents[1] / "stdlib-shims")])
    child_env.update(env or {})
    args = list(launcher_args) if _unirun is not None else []
    return subprocess.run([sys.executable, *args, "-c", textwrap.dedent(source)], capture_output=True,
                          text=True, env=child_env, timeout=timeout)


def entry_for(snapshot, executor, live=None):
    found = [e for e in snapshot["executors"] if e["executor"] == executor and (live is None or e["live"] == live)]
    assert len(found) == 1, [(e["executor"], e["live"]) for e in snapshot["executors"]]
    return found[0]


# --- metrics() ------------------------------------------------------------------------------

@needs_launcher
def test_counters_and_timers_follow_what_the_tasks_did():
    gate = threading.Event()
    with cf.ThreadPoolExecutor(2, thread_name_prefix="counted") as ex:
        ok = [ex.submit(tasks.square, i) for i in range(50)]
        bad = [ex.submit(tasks.fail, "no") for _ in range(5)]
        blockers = [ex.submit(gate.wait, 60) for _ in range(2)]
        queued = [ex.submit(tasks.square, 1) for _ in range(3)]
        cf.wait(ok + bad)
        for future in queued:
            assert future.cancel()
        for _ in range(3000):  # until both workers hold a blocker (no timing asserted)
            live = entry_for(unirun.metrics(), "counted", live=True)
            if live["executor.active"] == 2:
                break
            threading.Event().wait(0.01)
        assert live["executor.pool.max"] == 2 and live["executor.active"] == 2
        assert live["executor.queued"] == 3  # cancelled, still in the queue until a worker skips them
        gate.set()
        cf.wait(blockers)
    with pytest.raises(RuntimeError):
        ex.submit(tasks.square, 1)
    entry = entry_for(unirun.metrics(), "counted", live=True)
    assert entry["flavor"] == "threads" and entry["runtime"] == _unirun.runtime_info()["tag"]
    assert entry["gil_enabled"] == (sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else True)
    assert entry["executor.completed"] == 52 and entry["executor.failed"] == 5
    assert entry["executor.cancelled"] == 3 and entry["executor.rejected"] == 1
    assert entry["executor.submitted"] == 60 and entry["executor.active"] == 0
    assert entry["executor.worker.started"] == 2 == entry["executor.worker.stopped"]
    for name in ("executor.queue.wait", "executor.task.duration"):
        timer = entry[name]
        assert timer["count"] == 57, name
        assert 0 < timer["p50"] <= timer["p90"] <= timer["p99"]
        assert timer["buckets"][-1] == [float("inf"), 57]
        assert all(a[1] <= b[1] for a, b in zip(timer["buckets"], timer["buckets"][1:]))
    assert entry["executor.worker.startup"]["count"] == 2


@needs_launcher
def test_finished_pools_fold_into_one_entry_per_label_set():
    def run_one():
        with cf.ThreadPoolExecutor(1) as ex:  # default prefix ThreadPoolExecutor-N: one series
            ex.submit(tasks.square, 2).result()

    before = [e for e in unirun.metrics()["executors"] if e["executor"] == "ThreadPoolExecutor" and not e["live"]]
    done_before = before[0]["executor.completed"] if before else 0
    pools_before = before[0]["pools"] if before else 0
    for _ in range(3):
        run_one()
    gc.collect()
    folded = entry_for(unirun.metrics(), "ThreadPoolExecutor", live=False)
    assert folded["pools"] - pools_before >= 3
    assert folded["executor.completed"] - done_before >= 3
    assert folded["executor.pool.size"] == 0 and folded["id"] == 0


@needs_launcher
@pytest.mark.parametrize("flavor", ["interpreters", "processes"])
def test_every_flavor_is_measured(flavor):
    if flavor == "interpreters" and not getattr(_unirun, "OWN_GIL_INTERPRETERS", True):
        pytest.skip("no unirun interpreter workers on this runtime")
    from unirun._executors import InterpreterExecutor, ProcessExecutor

    kind = InterpreterExecutor if flavor == "interpreters" else ProcessExecutor
    with kind(1, thread_name_prefix="measured-" + flavor) as ex:
        assert [f.result() for f in [ex.submit(tasks.square, i) for i in range(10)]] == [i * i for i in range(10)]
    entry = entry_for(unirun.metrics(), "measured-" + flavor)
    assert entry["flavor"] == flavor and entry["executor.completed"] == 10
    assert entry["executor.task.duration"]["count"] == 10
    assert entry["executor.worker.startup"]["count"] == 1


@needs_launcher
def test_a_dead_process_worker_counts_as_broken():
    from concurrent.futures.process import BrokenProcessPool

    from unirun._executors import ProcessExecutor

    with ProcessExecutor(1, thread_name_prefix="breaks") as ex:
        ex.submit(tasks.square, 1).result()
        with pytest.raises(BrokenProcessPool):
            ex.submit(os._exit, 3).result(timeout=60)
        ex.submit(tasks.square, 1).result()
    entry = entry_for(unirun.metrics(), "breaks")
    assert entry["executor.worker.broken"] == 1 and entry["executor.failed"] == 1


def test_quantiles_interpolate_within_their_bucket():
    bounds = (1.0, 2.0, 5.0)
    assert _metrics.quantile(bounds, [0, 0, 0, 0], 0.5) is None
    assert _metrics.quantile(bounds, [0, 10, 0, 0], 0.5) == pytest.approx(1.5)
    assert _metrics.quantile(bounds, [10, 0, 0, 10], 0.99) == 5.0  # above the last bound
    assert _metrics.quantile(bounds, [5, 5, 0, 0], 0.9) == pytest.approx(1.8)


@pytest.mark.skipif(_unirun is not None, reason="under unirun-python the native entries are tested above")
def test_plain_python_lists_the_standard_librarys_executors_partially():
    with unirun.Run("threads", max_workers=3, name="plainly") as ex:
        ex.submit(tasks.square, 2).result()
        snapshot = unirun.metrics()
        entry = entry_for(snapshot, "plainly")
        assert snapshot["partial"] and not snapshot["native"]
        assert entry["partial"] and entry["executor.pool.max"] == 3 and entry["executor.pool.size"] >= 1
        assert "executor.completed" not in entry


# --- exports ------------------------------------------------------------------------------

PROGRAM = """
    import concurrent.futures as cf, os, sys, time, json
    sys.path[:0] = os.environ["PYTHONPATH"].split(os.pathsep)
    import native_tasks as tasks
    def work(ex, n):
        return [f.result() for f in [ex.submit(tasks.square, i) for i in range(n)]]
    with cf.ThreadPoolExecutor(2, thread_name_prefix="exported") as ex:
        work(ex, 40)
        try:
            ex.submit(tasks.fail, "x").result()
        except ValueError:
            pass
"""


@needs_launcher
def test_prometheus_text_parses_with_prometheus_client(tmp_path):
    parser = pytest.importorskip("prometheus_client.parser", reason="prometheus_client is a test dependency "
                                 "(scripts/bootstrap installs it into each runtime)")
    path = tmp_path / "metrics.prom"
    proc = run_program(PROGRAM, f"--metrics={path}")
    assert proc.returncode == 0, proc.stderr
    families = {f.name: f for f in parser.text_string_to_metric_families(path.read_text())}
    completed = families["unirun_executor_completed_tasks"]
    assert completed.type == "counter"
    samples = [s for s in completed.samples if s.labels["executor"] == "exported"]
    assert samples[0].name == "unirun_executor_completed_tasks_total" and samples[0].value == 40
    assert set(samples[0].labels) == {"executor", "flavor", "runtime", "gil_enabled"}
    failed = [s for s in families["unirun_executor_failed_tasks"].samples if s.labels["executor"] == "exported"]
    assert failed[0].value == 1
    wait = families["unirun_executor_queue_wait_seconds"]
    assert wait.type == "histogram"
    mine = [s for s in wait.samples if s.labels["executor"] == "exported"]
    count = [s.value for s in mine if s.name.endswith("_count")]
    inf = [s.value for s in mine if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"]
    assert count == [41] == inf


@needs_launcher
def test_json_metrics_at_exit_and_every_interval(tmp_path):
    path = tmp_path / "metrics.json"
    source = PROGRAM + f"""
    deadline = time.monotonic() + 60
    while not os.path.exists({str(path)!r}) and time.monotonic() < deadline:
        time.sleep(0.02)  # the interval writer runs while the program does
    print(os.path.exists({str(path)!r}))
    """
    proc = run_program(source, f"--metrics={path}", "--metrics-interval=0.05")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True"]
    snapshot = json.loads(path.read_text())
    entry = entry_for(snapshot, "exported")
    assert entry["executor.completed"] == 40 and entry["executor.task.duration"]["count"] == 41
    assert not list(tmp_path.glob("*.tmp"))  # written whole, by rename


@needs_launcher
def test_metrics_off_still_counts_but_times_nothing():
    proc = run_program(PROGRAM + """
    import unirun
    e = [e for e in unirun.metrics()["executors"] if e["executor"] == "exported"][0]
    print(e["executor.completed"], e["executor.task.duration"]["count"])
    """, "--metrics=off")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["40", "0"]


def test_opentelemetry_instruments_read_the_snapshot():
    reader_module = pytest.importorskip("opentelemetry.sdk.metrics.export", reason="opentelemetry-sdk is a "
                                        "test dependency (scripts/bootstrap installs it into each runtime)")
    from opentelemetry.sdk.metrics import MeterProvider

    reader = reader_module.InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    unirun.instrument_opentelemetry(provider)
    with unirun.Run("threads", max_workers=2, name="otel") as ex:
        [f.result() for f in [ex.submit(tasks.square, i) for i in range(7)]]
        data = reader.get_metrics_data()
    points = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "unirun"
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    if point.attributes.get("executor") == "otel":
                        points[metric.name] = point.value
    assert points["unirun.executor.pool.max"] == 2
    if _unirun is not None:
        assert points["unirun.executor.completed"] == 7
        assert points["unirun.executor.task.duration.count"] == 7


def test_opentelemetry_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match="pip install opentelemetry-api"):
        unirun.instrument_opentelemetry()


# --- the timeline ---------------------------------------------------------------------------

@needs_launcher
def test_timeline_is_trace_event_json_with_a_span_per_task(tmp_path):
    path = tmp_path / "timeline.json"
    proc = run_program(PROGRAM + """
    import unirun
    with unirun.Run("threads", max_workers=1, name="decided") as ex:
        ex.submit(tasks.square, 3).result()
    """, f"--timeline={path}")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(path.read_text())
    events = document["traceEvents"]
    spans = [e for e in events if e["ph"] == "X" and e["args"]["executor"] == "exported"]
    assert len(spans) == 41
    assert {e["name"] for e in spans} == {"square", "fail"}
    assert all(e["dur"] >= 0 and e["ts"] >= 0 and e["args"]["flavor"] == "threads" for e in spans)
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {names[e["tid"]] for e in spans} <= {"exported_0", "exported_1"}
    instants = [e["name"] for e in events if e["ph"] == "i"]
    for name in ("pool.start", "worker.start", "worker.stop", "pool.shutdown", "decision.decided"):
        assert name in instants
    # Spans on one worker do not overlap: one task at a time.
    by_tid = {}
    for e in spans:
        by_tid.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
    for runs in by_tid.values():
        runs.sort()
        assert all(end <= nxt + 1e-3 for (_, end), (nxt, _) in zip(runs, runs[1:]))
    assert document["otherData"]["dropped_events"] == 0


@needs_launcher
def test_timeline_is_bounded_and_counts_what_it_dropped(tmp_path):
    path = tmp_path / "timeline.json"
    proc = run_program(PROGRAM, f"--timeline={path}", env={"UNIRUN_TIMELINE_LIMIT": "10"})
    assert proc.returncode == 0, proc.stderr
    document = json.loads(path.read_text())
    recorded = [e for e in document["traceEvents"] if e["ph"] in "Xi"]
    assert len(recorded) == 10
    assert document["otherData"]["dropped_events"] > 30


@needs_launcher
def test_children_do_not_overwrite_the_parents_files(tmp_path):
    path = tmp_path / "metrics.json"
    proc = run_program("""
        import os, subprocess, sys
        print(os.environ.get("UNIRUN_METRICS"))
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    """, f"--metrics={path}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["None"]
    assert json.loads(path.read_text())["runtime"]


# --- the import ledger ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def gil_needing(tmp_path_factory):
    """The directory holding gil_needing, built for the runtime under test."""
    out = tmp_path_factory.mktemp("ext")
    include = sysconfig.get_paths()["include"]
    target = out / ("gil_needing" + sysconfig.get_config_var("EXT_SUFFIX"))
    source = HERE / "programs" / "gil_needing.c"
    compiler = os.environ.get("CC", "cc")
    proc = subprocess.run([compiler, "-shared", "-fPIC", f"-I{include}", str(source), "-o", str(target)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not target.exists():
        pytest.skip(f"cannot build a test extension here ({compiler}, headers in {include}): {proc.stderr[-300:]}")
    return out


def test_ledger_lists_extension_modules_with_their_declarations():
    import _decimal  # noqa: F401  (multi-phase from 3.13, declaring both slots)
    import array  # noqa: F401  (multi-phase on every supported Python)

    entries = {e["module"]: e for e in unirun.ledger()}
    assert entries["array"]["multi_phase"] and entries["array"]["loaded"]
    decimal = entries["_decimal"]
    assert decimal["loaded"] and not decimal["builtin"]
    assert decimal["multi_phase"] == (sys.version_info >= (3, 13))  # converted in 3.13
    if sys.version_info >= (3, 13):
        assert decimal["gil"] == "not_used" and decimal["gil_declared"]
    assert decimal["multiple_interpreters"] == ("per_interpreter_gil" if sys.version_info >= (3, 13)
                                                else "not_supported")  # single-phase before
    assert entries["sys"]["builtin"]
    assert all(isinstance(e["enabled_gil"], bool) for e in entries.values())


LEDGER_PROGRAM = """
    import json, sys
    sys.path.insert(0, {ext!r})
    import unirun
    from unirun import _decide, _config, _capabilities
    was = sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else True
    import gil_needing
    entry = [e for e in unirun.ledger() if e["module"] == "gil_needing"][0]
    trace = _decide.decide(_decide.Request(cpu_bound=True), _config.RuntimeConfig.from_env(),
                           _capabilities.capabilities())
    print(json.dumps({{"was": was, "entry": entry, "code": trace.reason_code, "reason": trace.reason,
                      "flavor": trace.resolved_flavor}}))
"""


@pytest.mark.skipif(not FREE_THREADED, reason="only a free-threaded runtime can have its GIL re-enabled")
def test_the_import_that_enables_the_gil_is_named_and_decide_avoids_threads(gil_needing, tmp_path):
    trace = tmp_path / "trace.jsonl"
    proc = run_program(LEDGER_PROGRAM.format(ext=str(gil_needing)), env={"UNIRUN_TRACE": str(trace)})
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["was"] is False
    assert got["entry"]["gil"] == "used" and not got["entry"]["multi_phase"]
    assert got["code"].startswith("gil-reenabled-") and got["flavor"] != "threads"
    assert "gil_needing" in got["reason"]
    if _unirun is not None:
        assert got["entry"]["enabled_gil"]  # seen as it happened
        events = [json.loads(line) for line in trace.read_text().splitlines()]
        assert any(e.get("event") == "gil.enabled" and e["fields"]["module"] == "gil_needing" for e in events)


@needs_native_interpreters
def test_a_module_refused_by_a_subinterpreter_worker_is_listed(gil_needing):
    from unirun._executors import InterpreterExecutor

    sys.path.insert(0, str(gil_needing))
    try:
        with InterpreterExecutor(1) as ex:
            with pytest.raises(ImportError):
                ex.submit(tasks.import_module, "gil_needing").result()
    finally:
        sys.path.remove(str(gil_needing))
    entry = [e for e in unirun.ledger() if e["module"] == "gil_needing"][0]
    assert "does not support loading in subinterpreters" in entry["refused_in_subinterpreter"]
    assert entry["multiple_interpreters"] == "not_supported"


# --- structured lifecycle logs --------------------------------------------------------------

@needs_launcher
def test_lifecycle_events_are_structured_log_records(tmp_path, monkeypatch):
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            if hasattr(record, "unirun"):
                records.append(record.unirun)

    trace = tmp_path / "trace.jsonl"
    monkeypatch.setenv("UNIRUN_TRACE", str(trace))
    logger = logging.getLogger("unirun")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with cf.ThreadPoolExecutor(1, thread_name_prefix="logged") as ex:
            ex.submit(tasks.square, 2).result()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    mine = [r for r in records if r.get("executor") == "logged"]
    assert [r["event"] for r in mine] == ["pool.start", "worker.start", "pool.shutdown", "worker.stop"]
    assert all(r["flavor"] == "threads" and isinstance(r["pool"], int) for r in mine)
    assert mine[1]["thread"] == "logged_0"
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [e["event"] for e in lines if e.get("fields", {}).get("executor") == "logged"] == \
        [r["event"] for r in mine]
