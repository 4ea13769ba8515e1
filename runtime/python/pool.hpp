// _unirun.Pool: a scheduler pool whose workers are threads of this interpreter ("threads"),
// threads that each own a subinterpreter with its own GIL ("interpreters"), or threads that
// each drive one child process ("processes", python/process.hpp).
#pragma once

#include <Python.h>

#include <string>

namespace unirun::python {

PyObject *make_pool_type(PyObject *module);

// _unirun._work(pool): the body of every worker thread.
PyObject *work(PyObject *module, PyObject *pool);

// A worker of `pool` could not start: report it in the pool's interpreter (attached there;
// unirun._native.worker_start_failed runs the handler compat registered) and return the
// message its tasks fail with. The cause as an exception, as a message, or as the exception
// outcome bytes a worker elsewhere encoded.
std::string report_start_error(PyObject *pool, PyObject *error);
std::string report_start_message(PyObject *pool, const std::string &message);
std::string report_start_failure(PyObject *pool, const std::string &failure);

}  // namespace unirun::python
