"""Lifecycle events of pools and workers: structured records on the "unirun" logger (DEBUG), JSON Lines
in the --trace file (UNIRUN_TRACE), instants on the --timeline.

Each record carries its fields as attributes (record.unirun = {"event": ..., ...}), so a
handler or a JSON formatter reads them without parsing the message. Events: pool.start,
pool.shutdown, worker.start, worker.stop, worker.broken, gil.enabled, interpreter.refused.
"""

from __future__ import annotations

import logging
import os
import threading
import time

# json loads only when an event is written somewhere (the --trace file, the timeline): the
# first pool of a program otherwise pays for its import (measured: bench interp_rss).

__all__ = ["emit", "pool_event"]

logger = logging.getLogger("unirun")
_file_lock = threading.Lock()


def emit(event: str, **fields) -> None:
    """Publish one lifecycle event; never raises into the program's work."""
    fields = {"event": event, **fields}
    try:
        # DEBUG, as asyncio's own chatter: a program that turns on INFO logging for itself
        # sees under unirun-python what it sees under python.
        if logger.isEnabledFor(logging.DEBUG):
            detail = " ".join("%s=%s" % (k, v) for k, v in fields.items() if k != "event")
            logger.debug("%s %s", event, detail, extra={"unirun": fields})
        path = os.environ.get("UNIRUN_TRACE")
        if path:
            import json

            line = json.dumps({"event": event, "time": time.time(), "fields": fields}, default=str) + "\n"
            with _file_lock, open(path, "a", encoding="utf-8") as out:
                out.write(line)
        try:
            import _unirun
        except ImportError:
            return
        if _unirun.timeline_on():
            import json

            _unirun.timeline_instant(event, json.dumps(fields, default=str))
    except Exception:  # a full disk or a broken handler must not break a worker
        pass


def pool_event(pool, event: str, **fields) -> None:
    """An event of a _unirun.Pool, labelled as its metrics are."""
    emit(event, pool=pool.id, flavor=pool.kind, executor=pool.label,
         thread=threading.current_thread().name, **fields)
