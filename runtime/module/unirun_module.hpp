// The `_unirun` built-in module: what Python code asks of the native side.
#pragma once

#include <Python.h>

#include <string>

namespace unirun::module {

struct RuntimeFacts {
    std::string tag;       // registered runtime tag, e.g. "cp313t"
    std::string decision;  // why the launcher picked it
    std::string launcher;  // path of unirun-python
    std::string base_launcher;  // the launcher new venvs link to (its manifest is the one in use)
    std::string shims_dir;      // holds the `unirun` package
    bool shims_by_finder = false;  // a ._pth fixes sys.path: `unirun` comes from a finder
};

// Set once by the runtime entry point, before the interpreter starts.
void set_runtime_facts(RuntimeFacts facts);

// Makes the `unirun` package in shims_dir importable without a sys.path entry: a finder at the
// end of sys.meta_path, so it never shadows anything. For interpreters under a ._pth file.
bool install_shims_finder(const std::string &shims_dir);

// In a new subinterpreter: the same finder, when its creator found `unirun` by one.
bool prepare_shims();

PyObject *init();  // the PyInit function for PyImport_AppendInittab

}  // namespace unirun::module
