// _unirun.Future: a concurrent.futures.Future subclass completed natively.
//
// It keeps isinstance(), wait(), as_completed() and asyncio.wrap_future working by honouring
// the attributes they use (_condition, _waiters, _state, _done_callbacks) while the common path
// (submit, run, result) touches no Condition, no lock object and no Python-level method.
#pragma once

#include "python/call.hpp"

#include <Python.h>

namespace unirun::python {

struct FutureObject {
    PyObject_HEAD
#if PY_VERSION_HEX < 0x030C0000
    // Before 3.12 the weak references of the Python base class live in the object itself,
    // right after the header: this subclass keeps that layout (make_future_type checks it).
    PyObject *base_weakrefs;
#endif
    CallPtr call;          // placement-constructed in tp_new
    PyObject *condition;   // threading.Condition, made when first asked for
    PyObject *waiters;     // list, made when first asked for
    PyObject *callbacks;   // list, made when first asked for
    PyObject *decoded;     // the decoded remote outcome (value or exception)
    bool decoded_is_exception;
};

// Creates the type for this interpreter (its base is this interpreter's concurrent.futures.Future).
PyObject *make_future_type(PyObject *module);

// A new future of `type` bound to `call`.
PyObject *new_future(PyTypeObject *type, CallPtr call);

}  // namespace unirun::python
