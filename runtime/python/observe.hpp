// _unirun's observability functions (python/observe.cpp): module-level, internal.
#pragma once

#include <Python.h>

namespace unirun::python {

PyObject *metrics_snapshot(PyObject *module, PyObject *);
PyObject *configure_observability(PyObject *module, PyObject *args);
PyObject *timeline_instant(PyObject *module, PyObject *args);
PyObject *timeline_take(PyObject *module, PyObject *);
PyObject *timeline_on(PyObject *module, PyObject *);
PyObject *ledger_note(PyObject *module, PyObject *args);
PyObject *ledger_notes(PyObject *module, PyObject *);
PyObject *module_declarations(PyObject *module, PyObject *target);

}  // namespace unirun::python
