#include "module/unirun_module.hpp"

#include "python/future.hpp"
#include "python/observe.hpp"
#include "python/pool.hpp"
#include "python/process.hpp"
#include "python/ref.hpp"
#include "python/state.hpp"

namespace unirun::module {

namespace {

RuntimeFacts g_facts;  // written before Py_Initialize, read-only afterwards

PyObject *runtime_info(PyObject *, PyObject *) {
    return Py_BuildValue("{s:s, s:s, s:s, s:s, s:s}", "tag", g_facts.tag.c_str(), "decision",
                         g_facts.decision.c_str(), "launcher", g_facts.launcher.c_str(),
                         "base_launcher", g_facts.base_launcher.c_str(), "shims",
                         g_facts.shims_dir.c_str());
}

PyMethodDef methods[] = {
    {"runtime_info", runtime_info, METH_NOARGS,
     "runtime_info() -> dict: the runtime tag, why the launcher chose it, the launcher's path."},
    {"_work", python::work, METH_O, "_work(pool): the body of a worker thread (internal)."},
    {"_read_bytes", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(python::read_bytes)),
     METH_FASTCALL, "_read_bytes(fd, size, prefix=b''): a worker process's read (internal)."},
    // Observability (python/observe.cpp; public through unirun.metrics(), ledger(), --timeline).
    {"metrics_snapshot", python::metrics_snapshot, METH_NOARGS, "every pool's metrics (internal)."},
    {"configure_observability", python::configure_observability, METH_VARARGS,
     "configure_observability(metrics, timeline_capacity) (internal)."},
    {"timeline_instant", python::timeline_instant, METH_VARARGS, "timeline_instant(name, args_json) (internal)."},
    {"timeline_take", python::timeline_take, METH_NOARGS, "the timeline's events so far (internal)."},
    {"timeline_on", python::timeline_on, METH_NOARGS, "whether the timeline records (internal)."},
    {"ledger_note", python::ledger_note, METH_VARARGS, "ledger_note(kind, module, detail) (internal)."},
    {"ledger_notes", python::ledger_notes, METH_NOARGS, "the ledger's notes (internal)."},
    {"module_declarations", python::module_declarations, METH_O,
     "module_declarations(module): its Py_mod_gil / Py_mod_multiple_interpreters slots (internal)."},
    {nullptr, nullptr, 0, nullptr},
};

int exec_module(PyObject *module) {
    auto *state = static_cast<python::ModuleState *>(PyModule_GetState(module));
    return python::init_state(module, state);
}

int traverse_module(PyObject *module, visitproc visit, void *arg) {
    auto *state = static_cast<python::ModuleState *>(PyModule_GetState(module));
    return state ? python::traverse_state(state, visit, arg) : 0;
}

int clear_module(PyObject *module) {
    auto *state = static_cast<python::ModuleState *>(PyModule_GetState(module));
    if (state) python::clear_state(state);
    return 0;
}

void free_module(void *module) { clear_module(static_cast<PyObject *>(module)); }

PyModuleDef_Slot slots[] = {
    {Py_mod_exec, reinterpret_cast<void *>(exec_module)},
    // All state is per module object, so each interpreter (with its own GIL, or none) has its own.
#ifdef Py_mod_multiple_interpreters  // 3.12+
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, nullptr},
};

}  // namespace

void set_runtime_facts(RuntimeFacts facts) { g_facts = std::move(facts); }

bool install_shims_finder(const std::string &shims_dir) {
    static const char *code =
        "import sys, importlib.machinery\n"
        "class UnirunShimsFinder:\n"
        "    \"Finds unirun's own package, and nothing else, after every other finder.\"\n"
        "    path = [shims]\n"
        "    @classmethod\n"
        "    def find_spec(cls, name, path=None, target=None):\n"
        "        if name != 'unirun':\n"
        "            return None\n"
        "        return importlib.machinery.PathFinder.find_spec(name, cls.path)\n"
        "sys.meta_path.append(UnirunShimsFinder)\n";
    python::Ref globals = python::Ref::steal(PyDict_New());
    python::Ref shims = python::Ref::steal(PyUnicode_DecodeFSDefault(shims_dir.c_str()));
    python::Ref name = python::Ref::steal(PyUnicode_FromString("unirun._shims_finder"));
    if (!globals || !shims || !name || PyDict_SetItemString(globals.get(), "shims", shims.get()) < 0 ||
        PyDict_SetItemString(globals.get(), "__name__", name.get()) < 0 ||
        PyDict_SetItemString(globals.get(), "__builtins__", PyEval_GetBuiltins()) < 0)
        return false;
    python::Ref result = python::Ref::steal(PyRun_String(code, Py_file_input, globals.get(), globals.get()));
    return static_cast<bool>(result);
}

bool prepare_shims() { return !g_facts.shims_by_finder || install_shims_finder(g_facts.shims_dir); }

PyObject *init() { return PyModuleDef_Init(&python::module_definition); }

}  // namespace unirun::module

namespace unirun::python {

PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT,
    "_unirun",
    "Native side of unirun: runtime facts and the scheduler.",
    sizeof(ModuleState),
    module::methods,
    module::slots,
    module::traverse_module,
    module::clear_module,
    module::free_module,
};

ModuleState *state_of(PyTypeObject *type) {
    PyObject *module = PyType_GetModuleByDef(type, &module_definition);
    return module ? static_cast<ModuleState *>(PyModule_GetState(module)) : nullptr;
}

int init_state(PyObject *module, ModuleState *state) {
    static const char *names[] = {"PENDING", "RUNNING", "CANCELLED", "CANCELLED_AND_NOTIFIED",
                                  "FINISHED"};
    Ref base = Ref::steal(PyImport_ImportModule("concurrent.futures._base"));
    if (!base) return -1;
    for (int i = 0; i < 5; ++i)
        if (!(state->state_names[i] = PyObject_GetAttrString(base.get(), names[i]))) return -1;
    if (!(state->cancelled_error = PyObject_GetAttrString(base.get(), "CancelledError"))) return -1;
    if (!(state->invalid_state_error = PyObject_GetAttrString(base.get(), "InvalidStateError")))
        return -1;
    if (!(state->future_type = make_future_type(module))) return -1;
    if (!(state->pool_type = make_pool_type(module))) return -1;
    if (PyModule_AddObjectRef(module, "Future", state->future_type) < 0) return -1;
    if (PyModule_AddObjectRef(module, "Pool", state->pool_type) < 0) return -1;
    // Whether Pool("interpreters") exists here, and if not why (python/capi_compat.hpp).
    if (PyModule_AddObjectRef(module, "OWN_GIL_INTERPRETERS",
                              own_gil_interpreters_usable() ? Py_True : Py_False) < 0)
        return -1;
    if (PyModule_AddStringConstant(module, "OWN_GIL_INTERPRETERS_MISSING",
                                   own_gil_interpreters_missing()) < 0)
        return -1;
    if (!(state->work = PyObject_GetAttrString(module, "_work"))) return -1;
    Ref pickle = Ref::steal(PyImport_ImportModule("pickle"));
    if (!pickle) return -1;
    if (!(state->pickle_dumps = PyObject_GetAttrString(pickle.get(), "dumps"))) return -1;
    if (!(state->pickle_loads = PyObject_GetAttrString(pickle.get(), "loads"))) return -1;
    if (!(state->by_code = PyDict_New())) return -1;
    if (!(state->qualname = PyUnicode_InternFromString("__qualname__"))) return -1;
    return 0;
}

int traverse_state(ModuleState *state, visitproc visit, void *arg) {
    Py_VISIT(state->future_type);
    Py_VISIT(state->pool_type);
    for (auto *name : state->state_names) Py_VISIT(name);
    Py_VISIT(state->cancelled_error);
    Py_VISIT(state->invalid_state_error);
    Py_VISIT(state->work);
    Py_VISIT(state->pickle_dumps);
    Py_VISIT(state->pickle_loads);
    Py_VISIT(state->by_code);
    Py_VISIT(state->qualname);
    return 0;
}

void clear_state(ModuleState *state) {
    Py_CLEAR(state->future_type);
    Py_CLEAR(state->pool_type);
    for (auto *&name : state->state_names) Py_CLEAR(name);
    Py_CLEAR(state->cancelled_error);
    Py_CLEAR(state->invalid_state_error);
    Py_CLEAR(state->work);
    Py_CLEAR(state->pickle_dumps);
    Py_CLEAR(state->pickle_loads);
    Py_CLEAR(state->by_code);
    Py_CLEAR(state->qualname);
}

}  // namespace unirun::python
