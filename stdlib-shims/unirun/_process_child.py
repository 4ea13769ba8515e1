"""The child a process worker drives: started by the pool's multiprocessing context (spawn or
forkserver: through sys.executable, i.e. unirun-python on the same runtime) with
serve(calls, outcomes, initializer, strict), fed calls over two pipes.

Both sides speak frames (see _read_frame). First the child answers 'R' (ready) or 'F' (its
initializer failed: logged here as the stdlib's workers log it, then its exception outcome;
the child then exits); then, one at a time, 'C' calls (the pickled call of an interpreter
worker, with protocol 5 out-of-band buffers) answered 'M' (a marshalled value), 'P' (a pickled
value and its buffers), 'B' (a large bytes result, raw) or 'E' (an exception outcome). The
parent closing the pipe is the end: the child returns and exits 0. Calls, values and exceptions
are encoded as for interpreter workers (unirun._native), so both kinds share one format.

strict: the stdlib's process pool rules, for compat's ProcessPoolExecutor: a call that cannot
be unpickled ends the child (the pool breaks), a result pickle refuses fails with pickle's own
error, and nothing crosses by code.
"""

import marshal
import os
import struct
import sys

_HEADER = struct.Struct("<cIQ")  # tag, number of out-of-band buffers, payload length
_LENGTH = struct.Struct("<Q")  # a buffer's length, with _WRITABLE set for a writable one
_WRITABLE = 1 << 63
_IOV_MAX = getattr(os, "IOV_MAX", None) or 1024
_RAW_BYTES_AT = 1 << 16  # a bytes result this large goes back raw, without pickle's copy
_MARSHALLED = (type(None), bool, int, float, complex, str, bytes)


class _Reader:
    """Frames from the parent's pipe: small reads through a read-ahead buffer, large buffers
    read straight into the bytes objects that carry them (_unirun._read_bytes)."""

    def __init__(self, fd):
        self.fd = fd
        self.pending = b""

    def exactly(self, size):
        while len(self.pending) < size:
            more = os.read(self.fd, max(1 << 16, size - len(self.pending)))
            if not more:
                if self.pending:
                    raise EOFError("the parent closed the pipe mid-frame")
                return None
            self.pending += more
        data, self.pending = self.pending[:size], self.pending[size:]
        return data

    def large(self, size, writable=False):
        prefix, self.pending = self.pending[:size], self.pending[size:]
        if not writable:
            import _unirun

            return _unirun._read_bytes(self.fd, size, prefix)
        buffer = bytearray(size)
        view = memoryview(buffer)
        view[:len(prefix)] = prefix
        got = len(prefix)
        while got < size:
            n = os.readv(self.fd, [view[got:]])
            if not n:
                raise EOFError("the parent closed the pipe mid-frame")
            got += n
        return buffer


def _read_frame(reader):
    """(tag, payload, buffers), or None when the parent closed the pipe. Buffers come as bytes,
    or bytearrays when writable on the parent's side: unirun._native's reconstructors use one
    as it is for a bytes or bytearray argument."""
    header = reader.exactly(_HEADER.size)
    if header is None:
        return None
    tag, count, size = _HEADER.unpack(header)
    lengths = [_LENGTH.unpack(_must(reader.exactly(8)))[0] for _ in range(count)]
    payload = reader.large(size) if size >= 1 << 16 else _must(reader.exactly(size)) if size else b""
    return tag, payload, [reader.large(n & ~_WRITABLE, bool(n & _WRITABLE)) for n in lengths]


def _must(data):
    if data is None:
        raise EOFError("the parent closed the pipe mid-frame")
    return data


def _write_frame(fd, tag, payload, buffers=()):
    buffers = [memoryview(b) for b in buffers]
    head = [_HEADER.pack(tag, len(buffers), len(payload))]
    head += [_LENGTH.pack(b.nbytes | (0 if b.readonly else _WRITABLE)) for b in buffers]
    parts = [memoryview(b"".join(head)), memoryview(payload), *buffers]
    views = [p.cast("B") for p in parts if p.nbytes]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while views and written >= views[0].nbytes:
            written -= views[0].nbytes
            views.pop(0)
        if written:
            views[0] = views[0][written:]


def _encode(result, native, strict):
    """(tag, payload, buffers) for a task's value."""
    kind = type(result)
    if kind is bytes and len(result) >= _RAW_BYTES_AT:
        return b"B", b"", [result]
    if kind in _MARSHALLED:
        try:
            return b"M", marshal.dumps(result), []
        except ValueError:  # e.g. a str subclass's value marshal refuses: pickle it
            pass
    import pickle

    buffers = []
    try:
        data = pickle.dumps(result, protocol=5, buffer_callback=buffers.append)
        return b"P", data, [b.raw() for b in buffers]
    except BaseException as exc:  # SystemExit from a __reduce__ too: it is the task's outcome
        if strict or not isinstance(exc, Exception):
            exc.add_note(f"unirun: the result {native._short_repr(result)} could not be sent "
                         "back from the worker process")
            return b"E", native.exception_outcome(exc, False, "process"), []
        try:
            return b"P", native.dumps_value(result), []
        except Exception:
            return b"E", native.value_outcome_error(result, exc, "process"), []


def serve(calls, outcomes, initializer, strict):
    """The child's body (multiprocessing's target)."""
    import signal

    rfd, wfd = os.dup(calls.fileno()), os.dup(outcomes.fileno())
    calls.close()
    outcomes.close()
    reader = _Reader(rfd)
    from unirun import _native

    if initializer is not None:
        try:
            initializer()
        except BaseException as exc:  # SystemExit included: report, leave
            from concurrent.futures._base import LOGGER

            LOGGER.critical("Exception in initializer:", exc_info=True)
            _write_frame(wfd, b"F", _native.exception_outcome(exc, False, "process"))
            return
    _write_frame(wfd, b"R", b"")
    del initializer
    try:
        _serve(reader, wfd, _native, strict)
    except KeyboardInterrupt:
        # Ctrl-C reached the whole process group while this child waited: the parent decides
        # what it means; leave quietly, as an idle stdlib worker would not print for it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except EOFError:
        pass  # the parent went away mid-frame


def _serve(reader, wfd, native, strict):
    function_from_code = native._function_from_code
    while (frame := _read_frame(reader)) is not None:
        tag, payload, buffers = frame
        if tag == b"Q":  # asked to leave
            return
        if strict:
            # As the stdlib's workers: a call that cannot be unpickled ends this process.
            call = native.loads(payload, buffers)
            fn, args, kwargs = call
        else:
            try:
                call = native.loads(payload, buffers)
                fn = call[0] if len(call) == 3 else function_from_code(call[3])
                args, kwargs = call[1], call[2]
            except BaseException as exc:
                _write_frame(wfd, b"E", native.exception_outcome(exc, True, "process"))
                continue
        del payload, buffers, call
        try:
            result = fn(*args, **kwargs) if kwargs else fn(*args)
        except BaseException as exc:
            reply = (b"E", native.exception_outcome(exc, False, "process"), [])
        else:
            reply = _encode(result, native, strict)
        del fn, args, kwargs
        result = None
        _write_frame(wfd, *reply)
        reply = None
