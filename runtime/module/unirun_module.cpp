#include "module/unirun_module.hpp"

namespace unirun::module {

namespace {

RuntimeFacts g_facts;  // written before Py_Initialize, read-only afterwards

PyObject *runtime_info(PyObject *, PyObject *) {
    return Py_BuildValue("{s:s, s:s, s:s}", "tag", g_facts.tag.c_str(), "decision",
                         g_facts.decision.c_str(), "launcher", g_facts.launcher.c_str());
}

PyMethodDef methods[] = {
    {"runtime_info", runtime_info, METH_NOARGS,
     "runtime_info() -> dict: the runtime tag, why the launcher chose it, the launcher's path."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef_Slot slots[] = {
    // Safe in any interpreter, with its own GIL or with none: the module holds no Python state.
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, nullptr},
};

PyModuleDef definition = {
    PyModuleDef_HEAD_INIT,
    "_unirun",
    "Native side of unirun: runtime facts and the scheduler.",
    0,
    methods,
    slots,
    nullptr,
    nullptr,
    nullptr,
};

}  // namespace

void set_runtime_facts(RuntimeFacts facts) { g_facts = std::move(facts); }

PyObject *init() { return PyModuleDef_Init(&definition); }

}  // namespace unirun::module
