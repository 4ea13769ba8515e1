"""unirun.metrics(): every executor's counters and latency histograms, and their exports.

The numbers are the native scheduler's (scheduler/metrics.hpp): kept per pool with relaxed
atomic adds, folded per label set once a pool is gone. This module names them as Micrometer's
ExecutorServiceMetrics and OpenTelemetry's executor conventions do, and writes them as
Prometheus text or JSON (--metrics=PATH), or registers them with an OpenTelemetry meter.

Under plain python unirun's executors are the standard library's: their entries are partial
(pool size, max and queue length where the executor exposes them; no counters, no timers).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import weakref
from typing import Optional

__all__ = ["metrics", "prometheus_text", "write_metrics", "instrument_opentelemetry"]

# The snapshot's names (Micrometer / OpenTelemetry) -> the native field they come from.
GAUGES = {
    "executor.pool.size": "workers_alive",
    "executor.pool.max": "max_workers",
    "executor.active": "active",
    "executor.queued": "queued",
}
COUNTERS = {
    "executor.submitted": "submitted",
    "executor.completed": "completed",
    "executor.failed": "failed",
    "executor.cancelled": "cancelled",
    "executor.rejected": "rejected",
    "executor.worker.started": "workers_started",
    "executor.worker.stopped": "workers_stopped",
    "executor.worker.broken": "workers_broken",
}
TIMERS = {
    "executor.queue.wait": "queue_wait",          # submit to start
    "executor.task.duration": "task_duration",    # start to end
    "executor.worker.startup": "worker_startup",  # asked for to ready for work
}
QUANTILES = (0.5, 0.9, 0.99)

# Prometheus names: base units, counters end in _total (the exposition adds it).
_PROMETHEUS = {
    "executor.pool.size": ("unirun_executor_pool_size_workers", "gauge", "Workers alive"),
    "executor.pool.max": ("unirun_executor_pool_max_workers", "gauge", "The most workers the pool starts"),
    "executor.active": ("unirun_executor_active_tasks", "gauge", "Tasks running now"),
    "executor.queued": ("unirun_executor_queued_tasks", "gauge", "Tasks waiting for a worker"),
    "executor.submitted": ("unirun_executor_submitted_tasks", "counter", "Tasks submitted"),
    "executor.completed": ("unirun_executor_completed_tasks", "counter", "Tasks that ran and returned"),
    "executor.failed": ("unirun_executor_failed_tasks", "counter", "Tasks that raised, or failed with a broken pool"),
    "executor.cancelled": ("unirun_executor_cancelled_tasks", "counter", "Tasks cancelled before they ran"),
    "executor.rejected": ("unirun_executor_rejected_tasks", "counter", "Submits refused after shutdown"),
    "executor.worker.started": ("unirun_executor_workers_started", "counter", "Workers started"),
    "executor.worker.stopped": ("unirun_executor_workers_stopped", "counter", "Workers that left"),
    "executor.worker.broken": ("unirun_executor_workers_broken", "counter",
                               "Workers that died under their tasks or could not start"),
    "executor.queue.wait": ("unirun_executor_queue_wait_seconds", "histogram", "Submit to start"),
    "executor.task.duration": ("unirun_executor_task_duration_seconds", "histogram", "Start to end"),
    "executor.worker.startup": ("unirun_executor_worker_startup_seconds", "histogram",
                                "A worker's start, from being asked for to taking work"),
}

_fallbacks: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # stdlib executor -> (name, flavor)


from ._capabilities import _native  # the _unirun module under unirun-python, else None


def _runtime_tag() -> str:
    native = _native()
    if native is not None:
        return native.runtime_info().get("tag", "")
    import sysconfig

    free = "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""
    return "cp%d%d%s" % (sys.version_info[0], sys.version_info[1], free)


def _gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return check() if check is not None else True


def quantile(bounds, buckets, q: float) -> Optional[float]:
    """The q-quantile of a fixed-bucket histogram, interpolated within its bucket (the estimate
    Prometheus' histogram_quantile makes); None with no observations."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            lower = bounds[index - 1] if index > 0 else 0.0
            if index >= len(bounds):
                return bounds[-1]  # above the largest bound: that bound is all that is known
            return lower + (bounds[index] - lower) * ((rank - seen) / count)
        seen += count
    return bounds[-1]


def _timer(histogram: dict) -> dict:
    bounds, buckets = histogram["bounds"], histogram["buckets"]
    timer = {"count": sum(buckets), "sum": histogram["sum"]}
    for q in QUANTILES:
        timer["p%d" % round(q * 100)] = quantile(bounds, buckets, q)
    cumulative, running = [], 0
    for bound, count in zip(list(bounds) + [float("inf")], buckets):
        running += count
        cumulative.append([bound, running])
    timer["buckets"] = cumulative  # [upper bound in seconds, observations at or below it]
    return timer


def _entry(raw: dict, runtime: str, gil: bool) -> dict:
    entry = {
        "executor": raw["executor"] or raw["flavor"],
        "flavor": raw["flavor"],
        "runtime": runtime,
        "gil_enabled": gil,
        "id": raw["id"],
        "live": raw["live"],
        "pools": raw["pools"],
    }
    for name, field in {**GAUGES, **COUNTERS}.items():
        entry[name] = raw[field]
    for name, field in TIMERS.items():
        entry[name] = _timer(raw[field])
    return entry


def _fallback_entry(executor, name: str, flavor: str, runtime: str, gil: bool) -> dict:
    workers = getattr(executor, "_threads", None) or getattr(executor, "_processes", None) or ()
    queue = getattr(executor, "_work_queue", None)
    entry = {"executor": name, "flavor": flavor, "runtime": runtime, "gil_enabled": gil,
             "id": id(executor), "live": not getattr(executor, "_shutdown_thread", False)
             and not getattr(executor, "_shutdown", False), "pools": 1, "partial": True}
    entry["executor.pool.size"] = len(workers)
    entry["executor.pool.max"] = getattr(executor, "_max_workers", None)
    entry["executor.queued"] = queue.qsize() if hasattr(queue, "qsize") else None
    if hasattr(executor, "_metrics_fields"):  # the distributed flavor keeps counters
        entry.update(executor._metrics_fields())
        entry["executor.pool.size"] = None
    return entry


def metrics() -> dict:
    """A snapshot of every executor of this process, live and finished.

    {"runtime", "gil_enabled", "native", "partial", "executors": [entry, ...]}: each entry has
    the labels executor, flavor, runtime and gil_enabled, gauges (executor.pool.size,
    executor.pool.max, executor.active, executor.queued), counters (executor.completed,
    .failed, .cancelled, .rejected, .submitted, executor.worker.started/.stopped/.broken) and
    timers (executor.queue.wait, executor.task.duration, executor.worker.startup: count, sum,
    p50, p90, p99 in seconds, and cumulative buckets). Finished pools with the same labels are
    one entry (live False, pools = how many). Under plain python the entries are the standard
    library executors unirun made, partial (see the module's docstring).
    """
    runtime, gil = _runtime_tag(), _gil_enabled()
    native = _native()
    executors = []
    if native is not None:
        executors = [_entry(raw, runtime, gil) for raw in native.metrics_snapshot()]
    for executor, (name, flavor) in list(_fallbacks.items()):
        executors.append(_fallback_entry(executor, name, flavor, runtime, gil))
    return {
        "runtime": runtime,
        "gil_enabled": gil,
        "native": native is not None,
        "partial": native is None,
        "time": time.time(),
        "executors": executors,
    }


def note_fallback(executor, name: str, flavor: str) -> None:
    """A standard-library executor unirun made under plain python: listed by metrics()."""
    try:
        _fallbacks[executor] = (name or type(executor).__name__, flavor)
    except TypeError:
        pass


# --- Prometheus text exposition -----------------------------------------------------------

def _label_text(entry: dict) -> str:
    def escape(value) -> str:
        return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    labels = (("executor", entry["executor"]), ("flavor", entry["flavor"]),
              ("runtime", entry["runtime"]), ("gil_enabled", "true" if entry["gil_enabled"] else "false"))
    return ",".join('%s="%s"' % (key, escape(value)) for key, value in labels)


def _number(value) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


def prometheus_text(snapshot: Optional[dict] = None) -> str:
    """The snapshot in Prometheus' text exposition format (0.0.4). Entries with the same labels
    (a live pool and finished ones named alike) are summed, as one series each."""
    snapshot = snapshot if snapshot is not None else metrics()
    series: dict[str, dict] = {}
    for entry in snapshot["executors"]:
        key = _label_text(entry)
        into = series.setdefault(key, {})
        for name in _PROMETHEUS:
            value = entry.get(name)
            if value is None:
                continue
            if isinstance(value, dict):  # a timer: merge bucket by bucket
                merged = into.setdefault(name, {"count": 0, "sum": 0.0, "buckets": None})
                merged["count"] += value["count"]
                merged["sum"] += value["sum"]
                if merged["buckets"] is None:
                    merged["buckets"] = [list(b) for b in value["buckets"]]
                else:
                    for mine, theirs in zip(merged["buckets"], value["buckets"]):
                        mine[1] += theirs[1]
            else:
                into[name] = into.get(name, 0) + value
    lines = []
    for name, (prom, kind, help_text) in _PROMETHEUS.items():
        samples = [(labels, values[name]) for labels, values in series.items() if name in values]
        if not samples:
            continue
        # A counter's family is named with its _total suffix (text format 0.0.4, as
        # prometheus_client writes it).
        family = prom + "_total" if kind == "counter" else prom
        lines.append("# HELP %s %s" % (family, help_text))
        lines.append("# TYPE %s %s" % (family, kind))
        for labels, value in samples:
            if kind == "counter":
                lines.append("%s_total{%s} %s" % (prom, labels, _number(value)))
            elif kind == "gauge":
                lines.append("%s{%s} %s" % (prom, labels, _number(value)))
            else:
                for bound, count in value["buckets"]:
                    lines.append('%s_bucket{%s,le="%s"} %d' % (prom, labels, _number(bound), count))
                lines.append("%s_sum{%s} %s" % (prom, labels, _number(float(value["sum"]))))
                lines.append("%s_count{%s} %d" % (prom, labels, value["count"]))
    return "\n".join(lines) + "\n"


def write_metrics(path: str, snapshot: Optional[dict] = None) -> None:
    """Write the snapshot to path, whole or not at all (a reader never sees half a file):
    Prometheus text for a *.prom path, JSON otherwise."""
    snapshot = snapshot if snapshot is not None else metrics()
    if str(path).endswith(".prom"):
        text = prometheus_text(snapshot)
    else:
        text = json.dumps(snapshot, indent=1, default=_json_default) + "\n"
    write_whole(path, text)


_write_lock = threading.Lock()


def write_whole(path: str, text: str) -> None:
    """Write text to path through a temporary file and a rename, one writer at a time (the
    interval writer and the one at exit may meet)."""
    import tempfile

    with _write_lock:
        directory, name = os.path.split(os.path.abspath(path))
        handle, partial = tempfile.mkstemp(prefix=name + ".", suffix=".tmp", dir=directory)
        try:
            with open(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(partial, path)
        except BaseException:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise


def _json_default(value):
    if value == float("inf"):
        return "+Inf"
    raise TypeError(type(value).__name__)


# --- OpenTelemetry ------------------------------------------------------------------------

_instrumented = None


def instrument_opentelemetry(meter_provider=None):
    """Register the snapshot's metrics as observable instruments of a meter named "unirun"
    (opentelemetry-api, an optional dependency): gauges and counters as observable gauges and
    counters, each timer as observable counters of its count and sum. Each collection reads a
    fresh snapshot. Returns the meter. Raises ImportError naming the package when it is missing.
    """
    global _instrumented
    try:
        from opentelemetry import metrics as otel_metrics
    except ImportError as exc:
        raise ImportError("unirun.instrument_opentelemetry() needs opentelemetry-api: "
                          "pip install opentelemetry-api (and an SDK to export)") from exc
    provider = meter_provider or otel_metrics.get_meter_provider()
    meter = provider.get_meter("unirun")
    state = {"at": 0.0, "snapshot": None}
    lock = threading.Lock()

    def current():
        # One snapshot serves every instrument of one collection.
        with lock:
            now = time.monotonic()
            if state["snapshot"] is None or now - state["at"] > 0.05:
                state["snapshot"], state["at"] = metrics(), now
            return state["snapshot"]

    def observe(name, pick):
        def callback(options):
            observations = []
            for entry in current()["executors"]:
                value = entry.get(name)
                if value is None:
                    continue
                attributes = {"executor": entry["executor"], "flavor": entry["flavor"],
                              "runtime": entry["runtime"], "gil_enabled": entry["gil_enabled"],
                              "pool.id": entry["id"], "pool.live": entry["live"]}
                observations.append(otel_metrics.Observation(pick(value), attributes))
            return observations
        return [callback]

    for name in GAUGES:
        meter.create_observable_gauge("unirun." + name, callbacks=observe(name, lambda v: v), unit="{worker}"
                                      if "pool" in name else "{task}")
    for name in COUNTERS:
        meter.create_observable_counter("unirun." + name, callbacks=observe(name, lambda v: v),
                                        unit="{worker}" if ".worker." in name else "{task}")
    for name in TIMERS:
        meter.create_observable_counter("unirun." + name + ".count", callbacks=observe(name, lambda v: v["count"]),
                                        unit="{task}")
        meter.create_observable_counter("unirun." + name + ".sum", callbacks=observe(name, lambda v: v["sum"]),
                                        unit="s")
    _instrumented = meter
    return meter


# --- --metrics / --timeline: set up by the runtime at start ------------------------------

_DEFAULT_TIMELINE_CAP = 200_000


def start_from_environment() -> None:
    """What the launcher's --metrics, --metrics-interval and --timeline asked for (through
    UNIRUN_METRICS, UNIRUN_METRICS_INTERVAL, UNIRUN_TIMELINE, UNIRUN_TIMELINE_LIMIT). The files
    are this process's: the variables are taken out of the environment, so child processes
    (process workers, subprocesses) do not overwrite them."""
    global _owner
    _owner = os.getpid()  # a child forked from this process does not write its files
    native = _native()
    path = os.environ.pop("UNIRUN_METRICS", "") or ""
    interval = os.environ.pop("UNIRUN_METRICS_INTERVAL", "") or ""
    timeline = os.environ.pop("UNIRUN_TIMELINE", "") or ""
    limit = os.environ.pop("UNIRUN_TIMELINE_LIMIT", "") or ""
    metrics_on = path != "off"
    timeline = "" if timeline == "off" else timeline
    cap = 0
    if timeline:
        cap = _DEFAULT_TIMELINE_CAP
        if limit:
            try:
                cap = int(limit)
                if cap <= 0:
                    raise ValueError
            except ValueError:
                cap = _DEFAULT_TIMELINE_CAP
                print("unirun-python: warning: UNIRUN_TIMELINE_LIMIT=%s is not a positive number of "
                      "events; the timeline keeps %d" % (limit, cap), file=sys.stderr)
    if native is not None:
        native.configure_observability(metrics_on, cap)
    if timeline:
        from . import _timeline

        _timeline.start(timeline)
    ledger_path = os.environ.pop("UNIRUN_LEDGER", "") or ""
    if ledger_path:  # the canary's runs: what unirun.ledger() says at exit
        import atexit

        atexit.register(_write_ledger_at_exit, ledger_path)
    if path and path != "off":
        import atexit

        atexit.register(_write_at_exit, path)
        if interval:
            seconds = float(interval)
            thread = threading.Thread(target=_write_every, args=(path, seconds), daemon=True,
                                      name="unirun-metrics")
            thread.start()


_owner = None


def owns_files() -> bool:
    """Whether this process is the one --metrics / --timeline were given to (not a fork)."""
    return os.getpid() == _owner


def write_at_exit(write, path: str, what: str) -> None:
    """An exit hook's write of one of this process's files: not in a fork of it, and a failure
    is said on stderr rather than raised (the program's exit status stays its own)."""
    if not owns_files():
        return
    try:
        write(path)
    except OSError as exc:
        print("unirun-python: cannot write the %s %s: %s" % (what, path, exc), file=sys.stderr)


def _write_at_exit(path: str) -> None:
    write_at_exit(write_metrics, path, "metrics file")


def _write_ledger_at_exit(path: str) -> None:
    if not owns_files():
        return
    try:
        from ._ledger import gil_enabled_by, ledger

        write_whole(path, json.dumps({"gil_enabled_by": gil_enabled_by(), "modules": ledger()}) + "\n")
    except Exception as exc:
        print("unirun-python: cannot write the ledger %s: %s" % (path, exc), file=sys.stderr)


def _write_every(path: str, seconds: float) -> None:
    while True:
        time.sleep(seconds)
        if not owns_files():
            return
        try:
            write_metrics(path)
        except Exception as exc:  # the program must not die of its monitoring
            print("unirun-python: cannot write the metrics file %s: %s" % (path, exc), file=sys.stderr)
