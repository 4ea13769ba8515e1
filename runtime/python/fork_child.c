// fork() in a process that holds subinterpreters.
//
// Only the forking thread survives in a child. CPython's own after-fork code then clears every
// interpreter but the main one without a thread state of that interpreter (3.13:
// _PyInterpreterState_DeleteExceptMain), which crashes the child (SIGSEGV/SIGABRT) when one of
// unirun's subinterpreter workers existed. Their threads do not exist in the child and nothing
// there can reach them, so before CPython looks, drop them from the runtime's list of
// interpreters: the child leaks their memory instead of dying. The runtime's interpreter-list
// lock is held by the forking thread across fork() (PyOS_BeforeFork), so the list is stable.
//
// C, not C++: it reads the runtime's internal state through CPython's internal headers.
#define Py_BUILD_CORE 1
#include <Python.h>
#include "internal/pycore_interp.h"
#include "internal/pycore_runtime.h"

#include <pthread.h>

static void forget_subinterpreters_in_child(void) {
    PyInterpreterState *main_interpreter = _PyRuntime.interpreters.main;
    if (main_interpreter == NULL) return;
    _PyRuntime.interpreters.head = main_interpreter;
    main_interpreter->next = NULL;
}

static void install(void) { pthread_atfork(NULL, NULL, forget_subinterpreters_in_child); }

void unirun_forget_subinterpreters_after_fork(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install);
}
