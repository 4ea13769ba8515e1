"""Where decision traces go: last_decision(), listeners, the "unirun" logger, JSON Lines."""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

from ._decide import DecisionTrace

__all__ = ["record", "last_decision", "add_listener", "remove_listener"]

logger = logging.getLogger("unirun")
_lock = threading.Lock()
_last: Optional[DecisionTrace] = None
_listeners: list[Callable[[DecisionTrace], None]] = []


def last_decision() -> Optional[DecisionTrace]:
    """The most recent decision any scope or helper made in this process, or None."""
    return _last


def add_listener(listener: Callable[[DecisionTrace], None]) -> None:
    """Call listener(trace) for every decision from now on (and again when a scope ends)."""
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: Callable[[DecisionTrace], None]) -> None:
    with _lock:
        _listeners.remove(listener)


def record(trace: DecisionTrace, *, path: Optional[str], listener=None, event: str = "decided") -> None:
    """Publish a trace: last_decision(), listeners, the logger, and the JSON Lines file."""
    global _last
    with _lock:
        if event == "decided":
            _last = trace
        listeners = list(_listeners)
    if listener is not None:
        listeners.append(listener)
    for each in listeners:
        try:
            each(trace)
        except Exception:  # a broken listener must not break the program's work
            logger.exception("unirun trace listener %r failed", each)
    logger.info("%s %s: %s -> %s (%s)", event, trace.name or trace.kind, trace.requested_flavor,
                trace.resolved_flavor, trace.reason_code,
                extra={"unirun": {"event": "decision." + event, "name": trace.name, "kind": trace.kind,
                                  "requested": trace.requested_flavor, "resolved": trace.resolved_flavor,
                                  "reason_code": trace.reason_code}})
    _timeline_instant(trace, event)
    if path:
        line = '{"event": "%s", "trace": %s}\n' % (event, trace.to_json())
        with _lock, open(path, "a", encoding="utf-8") as out:
            out.write(line)


def _timeline_instant(trace: DecisionTrace, event: str) -> None:
    """A decision is an instant on the --timeline, when it records."""
    try:
        import _unirun
    except ImportError:
        return
    if not getattr(_unirun, "timeline_on", lambda: False)():
        return
    import json

    _unirun.timeline_instant("decision." + event, json.dumps({
        "name": trace.name, "requested": trace.requested_flavor, "resolved": trace.resolved_flavor,
        "reason_code": trace.reason_code, "workers": trace.worker_count}, default=str))
