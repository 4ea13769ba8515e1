// The runtime's entry point: CPython parses its own command line exactly as `python` does
// (Py_PreInitializeFromBytesArgs, PyConfig parse_argv), then Py_RunMain runs the program.
// The only differences: sys.executable is the launcher, and the `unirun` shims are importable.
#include "embed/handoff.h"
#include "module/unirun_module.hpp"

#include <Python.h>

#include <cstdlib>
#include <string_view>

namespace {

// Mirrors Py_BytesMain's handling of a failed or finished initialisation (-h, -V, bad option).
[[noreturn]] void exit_with(PyStatus status) {
    if (PyStatus_IsExit(status)) std::exit(status.exitcode);
    Py_ExitStatusException(status);
}

bool set_sys_string(const char *name, const char *value) {
    PyObject *text = PyUnicode_DecodeFSDefault(value);
    if (!text) return false;
    int rc = PySys_SetObject(name, text);
    Py_DECREF(text);
    return rc == 0;
}

// The shims go after the standard library and site-packages so they never shadow either.
bool append_sys_path(const char *dir) {
    PyObject *path = PySys_GetObject("path");  // borrowed
    if (!path || !PyList_Check(path)) return false;
    PyObject *entry = PyUnicode_DecodeFSDefault(dir);
    if (!entry) return false;
    int rc = PyList_Append(path, entry);
    Py_DECREF(entry);
    return rc == 0;
}

// unirun.compat.install("managed", process_pool): executors substituted before user code.
// module.function(), for the shims' start-up hooks; false with the error set if it raised.
bool call_shim(const char *module_name, const char *function) {
    PyObject *module = PyImport_ImportModule(module_name);
    if (!module) return false;
    PyObject *result = PyObject_CallMethod(module, function, nullptr);
    Py_DECREF(module);
    Py_XDECREF(result);
    return result != nullptr;
}

bool install_compat(const char *process_pool) {
    PyObject *compat = PyImport_ImportModule("unirun.compat");
    if (!compat) return false;
    PyObject *result = PyObject_CallMethod(compat, "install", "ss", "managed", process_pool);
    Py_DECREF(compat);
    Py_XDECREF(result);
    return result != nullptr;
}

// On a free-threaded runtime, unirun._ledger.install(): note the import that enables the GIL.
bool watch_gil_imports() {
#ifdef Py_GIL_DISABLED
    return call_shim("unirun._ledger", "install");
#else
    return true;
#endif
}

// unirun._metrics.start_from_environment(): --metrics and --timeline.
bool start_observability() { return call_shim("unirun._metrics", "start_from_environment"); }

}  // namespace

extern "C" __attribute__((visibility("default"))) int unirun_runtime_main(const unirun_handoff *handoff) {
    if (!handoff || handoff->version != UNIRUN_HANDOFF_VERSION) {
        fprintf(stderr, "unirun-python: error: launcher and runtime library are from different "
                        "builds\n  hint: rebuild with make build\n");
        return 2;
    }
    unirun::module::set_runtime_facts({handoff->runtime_tag, handoff->decision, handoff->launcher,
                                       handoff->base_launcher, handoff->shims_dir,
                                       handoff->shims_by_finder != 0});
    if (PyImport_AppendInittab("_unirun", unirun::module::init) != 0) {
        fprintf(stderr, "unirun-python: error: cannot register the _unirun module\n");
        return 1;
    }

    PyPreConfig preconfig;
    PyPreConfig_InitPythonConfig(&preconfig);
    PyStatus status = Py_PreInitializeFromBytesArgs(&preconfig, handoff->argc, handoff->argv);
    if (PyStatus_Exception(status)) exit_with(status);

    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    status = PyConfig_SetBytesArgv(&config, handoff->argc, handoff->argv);
    if (!PyStatus_Exception(status))
        // getpath starts from the launcher's path (or the active venv's), so a pyvenv.cfg, ._pth
        // or PYTHONHOME count as for python there; the runtime's python as base executable roots
        // the prefix and the standard library in the runtime, and is what venv links to.
        status = PyConfig_SetBytesString(&config, &config.executable, handoff->python_executable);
    if (!PyStatus_Exception(status))
        status = PyConfig_SetBytesString(&config, &config.base_executable, handoff->base_executable);
    if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) exit_with(status);

    // Children started through sys.executable come back through the launcher.
    // Under a ._pth sys.path is exactly the file's: `unirun` is found by a finder after all others.
    bool shims_ready = handoff->shims_by_finder ? unirun::module::install_shims_finder(handoff->shims_dir)
                                                : append_sys_path(handoff->shims_dir);
    if (!set_sys_string("executable", handoff->launcher) || !shims_ready) {
        PyErr_Print();
        fprintf(stderr, "unirun-python: error: cannot prepare sys for the program\n");
        Py_Finalize();
        return 1;
    }
    // unirun._onimport.start(): venvs made by this program carry the launcher (docs/launcher.md).
    if (!call_shim("unirun._onimport", "start")) {
        PyErr_Print();
        fprintf(stderr, "unirun-python: warning: venvs made by this program will have no "
                        "bin/unirun-python\n");
    }
    if (!watch_gil_imports()) {  // only the ledger loses by it: say so, and run the program
        PyErr_Print();
        fprintf(stderr, "unirun-python: warning: cannot watch imports for unirun.ledger(); it will "
                        "infer which import enabled the GIL\n");
    }
    // --metrics, --timeline (the launcher checked them): set up before any executor exists.
    const char *metrics = getenv("UNIRUN_METRICS"), *timeline = getenv("UNIRUN_TIMELINE"),
               *ledger = getenv("UNIRUN_LEDGER");
    if (((metrics && *metrics) || (timeline && *timeline) || (ledger && *ledger)) && !start_observability()) {
        PyErr_Print();
        fprintf(stderr, "unirun-python: error: cannot set up --metrics / --timeline\n");
        Py_Finalize();
        return 1;
    }
    if (std::string_view(handoff->compat) == "managed" && !install_compat(handoff->process_pool)) {
        PyErr_Print();
        fprintf(stderr, "unirun-python: error: cannot install unirun.compat\n"
                        "  hint: run with --compat=off to use the standard library executors\n");
        Py_Finalize();
        return 1;
    }
    return Py_RunMain();
}
