// The few C-API pieces the runtime library uses that older CPythons lack, given for them in
// terms of what they have. The code is written against 3.13; 3.11 and 3.12 compile through
// this header. Own-GIL subinterpreters (PEP 684, 3.12) cannot be given: without them the
// interpreters pool kind is refused (own_gil_interpreters_usable()).
#pragma once

#include <Python.h>

// Whether the headers have the API for own-GIL subinterpreters (3.12+).
#if PY_VERSION_HEX >= 0x030C0000
#define UNIRUN_HAS_OWN_GIL_INTERPRETERS 1
#else
#define UNIRUN_HAS_OWN_GIL_INTERPRETERS 0
#endif

// Whether the CPython running now can have them safely. 3.12 before 3.12.4 allocates the keyword
// tuples of extension modules' argument parsers on the heap of the interpreter that first calls
// them and frees them from another (CPython gh-119213): a keyword call such as
// SimpleQueue.put(x, block=True) inside an own-GIL subinterpreter aborts the process at exit
// ("free(): invalid pointer"), with plain python3.12.1 as much as under unirun.
inline bool own_gil_interpreters_usable() {
#if UNIRUN_HAS_OWN_GIL_INTERPRETERS
    return Py_Version >= 0x030C0400;
#else
    return false;
#endif
}

// Why not, for messages ("" when they are usable).
inline const char *own_gil_interpreters_missing() {
    if (own_gil_interpreters_usable()) return "";
    return UNIRUN_HAS_OWN_GIL_INTERPRETERS
               ? "CPython 3.12 before 3.12.4 corrupts memory with own-GIL subinterpreters (gh-119213)"
               : "Python 3.11 has no subinterpreters with their own GIL (3.12+)";
}

#if PY_VERSION_HEX < 0x030C0000
// 3.12's exception-as-one-object API over 3.11's (type, value, traceback) triple.
inline PyObject *PyErr_GetRaisedException() {
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    if (!type) return nullptr;
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback && value) PyException_SetTraceback(value, traceback);
    Py_DECREF(type);
    Py_XDECREF(traceback);
    return value;
}

inline void PyErr_SetRaisedException(PyObject *exception) {  // steals
    if (!exception) {
        PyErr_Clear();
        return;
    }
    PyObject *type = Py_NewRef(reinterpret_cast<PyObject *>(Py_TYPE(exception)));
    PyErr_Restore(type, exception, PyException_GetTraceback(exception));
}
#endif

#if PY_VERSION_HEX < 0x030D0000
inline int PyDict_GetItemRef(PyObject *dict, PyObject *key, PyObject **result) {
    PyObject *item = PyDict_GetItemWithError(dict, key);  // borrowed
    *result = Py_XNewRef(item);
    if (item) return 1;
    return PyErr_Occurred() ? -1 : 0;
}

inline int PyDict_GetItemStringRef(PyObject *dict, const char *key, PyObject **result) {
    PyObject *name = PyUnicode_FromString(key);
    if (!name) {
        *result = nullptr;
        return -1;
    }
    PyObject *item = PyDict_GetItemWithError(dict, name);  // borrowed
    Py_DECREF(name);
    *result = Py_XNewRef(item);
    if (item) return 1;
    return PyErr_Occurred() ? -1 : 0;
}
#endif

// Critical sections exist from 3.13 on; before, every build has the GIL, which they stand for.
#ifndef Py_BEGIN_CRITICAL_SECTION
#define Py_BEGIN_CRITICAL_SECTION(op) {
#define Py_END_CRITICAL_SECTION() }
#endif

// The __dict__ of an instance whose type keeps it managed (a subclass of a Python class).
inline int unirun_visit_managed_dict(PyObject *self, visitproc visit, void *arg) {
#if PY_VERSION_HEX >= 0x030D0000
    return PyObject_VisitManagedDict(self, visit, arg);
#elif PY_VERSION_HEX >= 0x030C0000
    if (!(Py_TYPE(self)->tp_flags & Py_TPFLAGS_MANAGED_DICT)) return 0;
    return _PyObject_VisitManagedDict(self, visit, arg);
#else
    // 3.11 keeps attributes either in inline values or in a dict. Objects made by this
    // library's tp_new never get inline values (only object.__new__ makes them), so the dict
    // pointer is all there is and asking for it allocates nothing.
    if (!(Py_TYPE(self)->tp_flags & Py_TPFLAGS_MANAGED_DICT)) return 0;
    PyObject **dict = _PyObject_GetDictPtr(self);
    if (dict) Py_VISIT(*dict);
    return 0;
#endif
}

inline void unirun_clear_managed_dict(PyObject *self) {
#if PY_VERSION_HEX >= 0x030D0000
    PyObject_ClearManagedDict(self);
#elif PY_VERSION_HEX >= 0x030C0000
    if (Py_TYPE(self)->tp_flags & Py_TPFLAGS_MANAGED_DICT) _PyObject_ClearManagedDict(self);
#else
    if (!(Py_TYPE(self)->tp_flags & Py_TPFLAGS_MANAGED_DICT)) return;
    PyObject **dict = _PyObject_GetDictPtr(self);
    if (dict) Py_CLEAR(*dict);
    else PyErr_Clear();
#endif
}
