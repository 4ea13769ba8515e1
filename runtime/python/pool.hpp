// _unirun.Pool: a scheduler pool whose workers are threads of this interpreter ("threads") or
// threads that each own a subinterpreter with its own GIL ("interpreters").
#pragma once

#include <Python.h>

namespace unirun::python {

PyObject *make_pool_type(PyObject *module);

// _unirun._work(pool): the body of every worker thread.
PyObject *work(PyObject *module, PyObject *pool);

}  // namespace unirun::python
