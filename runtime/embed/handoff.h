// The C ABI between the launcher and a runtime library (one per CPython ABI).
// The launcher never links libpython: it picks a runtime, dlopen()s its library and calls
// unirun_runtime_main with this record. Plain C so neither side depends on the other's C++.
#ifndef UNIRUN_HANDOFF_H
#define UNIRUN_HANDOFF_H

#ifdef __cplusplus
extern "C" {
#endif

#define UNIRUN_HANDOFF_VERSION 3

typedef struct unirun_handoff {
    int version;                    // UNIRUN_HANDOFF_VERSION
    int argc;                       // CPython's command line: argv[0] then python's own arguments
    char **argv;
    const char *launcher;           // absolute path of unirun-python: becomes sys.executable
    const char *python_executable;  // the program getpath starts from (the launcher, or a venv's)
    const char *base_executable;    // the runtime's python: sys._base_executable, the prefix's root
    const char *base_launcher;      // the launcher a new venv's bin/unirun-python links to
    int shims_by_finder;            // under a ._pth: `unirun` is found by a finder, not sys.path
    const char *runtime_tag;        // e.g. "cp313t"
    const char *shims_dir;          // stdlib-shims/: holds the `unirun` package
    const char *decision;           // one line: why this runtime was chosen
    const char *compat;             // "managed" or "off": install unirun.compat before the program
    const char *process_pool;       // "processes" or "interpreters" (compat's ProcessPoolExecutor)
} unirun_handoff;

typedef int (*unirun_runtime_main_fn)(const unirun_handoff *);

#define UNIRUN_RUNTIME_MAIN_SYMBOL "unirun_runtime_main"

#ifdef __cplusplus
}
#endif

#endif
