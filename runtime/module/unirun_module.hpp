// The `_unirun` built-in module: what Python code asks of the native side.
#pragma once

#include <Python.h>

#include <string>

namespace unirun::module {

struct RuntimeFacts {
    std::string tag;       // registered runtime tag, e.g. "cp313t"
    std::string decision;  // why the launcher picked it
    std::string launcher;  // path of unirun-python
};

// Set once by the runtime entry point, before the interpreter starts.
void set_runtime_facts(RuntimeFacts facts);

PyObject *init();  // the PyInit function for PyImport_AppendInittab

}  // namespace unirun::module
