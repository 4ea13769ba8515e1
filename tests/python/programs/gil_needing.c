/* A single-phase extension module that declares nothing: on a free-threaded runtime its import
   enables the GIL, and a subinterpreter with its own GIL refuses to load it. For the import
   ledger's tests (test_observability.py builds it with the runtime's headers). */
#include <Python.h>

static struct PyModuleDef definition = {PyModuleDef_HEAD_INIT, "gil_needing", NULL, -1, NULL};

PyMODINIT_FUNC PyInit_gil_needing(void) { return PyModule_Create(&definition); }
