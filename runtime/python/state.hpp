// Per-interpreter state of the _unirun module (multi-phase init: one copy per interpreter).
#pragma once

#include "python/capi_compat.hpp"

#include <Python.h>

namespace unirun::python {

struct ModuleState {
    PyObject *future_type;          // _unirun.Future
    PyObject *pool_type;            // _unirun.Pool
    PyObject *state_names[5];       // concurrent.futures' PENDING ... FINISHED (Call::futures_state_index)
    PyObject *cancelled_error;      // concurrent.futures.CancelledError
    PyObject *invalid_state_error;  // concurrent.futures.InvalidStateError
    PyObject *work;                 // _unirun._work, the worker threads' target
    PyObject *pickle_dumps;         // pickle.dumps and pickle.loads of this interpreter:
    PyObject *pickle_loads;         //   the hot path of interpreter calls uses them directly
    PyObject *by_code;              // code object -> how its functions cross by code, or None
    PyObject *qualname;             // "__qualname__", interned: the timeline's span names
};

extern PyModuleDef module_definition;

// The state of the _unirun module that defined `type` (or one of its bases).
ModuleState *state_of(PyTypeObject *type);

int init_state(PyObject *module, ModuleState *state);
int traverse_state(ModuleState *state, visitproc visit, void *arg);
void clear_state(ModuleState *state);

}  // namespace unirun::python
