"""--timeline=PATH: every task as a span on its worker, in Chrome's Trace Event format.

The native scheduler records spans (scheduler/metrics.hpp: start and end on the worker thread,
the callable's qualified name) and instants (worker start/stop, pool start/shutdown, decisions,
the GIL being enabled) into a buffer with a cap; past it events are counted, not kept. At exit
this writes {"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}, which Perfetto
and chrome://tracing open: one row per worker thread, named after it.
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["start", "write"]


def start(path: str) -> None:
    import atexit

    atexit.register(_write_at_exit, path)


def _write_at_exit(path: str) -> None:
    from ._metrics import write_at_exit

    write_at_exit(write, path, "timeline")


def events() -> tuple[list, int]:
    """The Trace Event objects recorded so far (taken: the buffer empties) and how many were
    dropped over the cap."""
    import _unirun

    raw, dropped = _unirun.timeline_take()
    pid = os.getpid()
    pools, threads, out = {}, {}, []
    for phase, pool_id, tid, ts, dur, name, fields in raw:
        if phase == "i":
            args = json.loads(fields) if fields else {}
            if name == "pool.start":
                pools[args.get("pool")] = (args.get("executor", ""), args.get("flavor", ""))
            if name == "worker.start" and "thread" in args:
                threads[tid] = args["thread"]
            out.append({"name": name, "cat": "unirun", "ph": "i", "s": "t", "pid": pid, "tid": tid,
                        "ts": ts, "args": args})
            continue
        executor, flavor = pools.get(pool_id, ("", ""))
        out.append({"name": name, "cat": flavor or "task", "ph": "X", "pid": pid, "tid": tid,
                    "ts": ts, "dur": dur, "args": {"executor": executor, "flavor": flavor, "pool": pool_id}})
    # Spans of a pool made before its pool.start was read: label them now that all are known.
    for event in out:
        if event["ph"] == "X" and not event["args"]["executor"] and event["args"]["pool"] in pools:
            event["args"]["executor"], event["args"]["flavor"] = pools[event["args"]["pool"]]
            event["cat"] = event["args"]["flavor"]
    names = [{"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}
             for tid, name in threads.items()]
    process = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                "args": {"name": "unirun-python " + " ".join(sys.argv[:1])}}]
    return process + names + out, dropped


def write(path: str) -> None:
    """Write what the timeline holds to path (whole, or not at all)."""
    trace_events, dropped = events()
    document = {
        "traceEvents": trace_events,
        "displayTimeUnit": "ms",
        "otherData": {"producer": "unirun", "dropped_events": dropped, "pid": os.getpid()},
    }
    from ._metrics import write_whole

    write_whole(path, json.dumps(document, separators=(",", ":")))
