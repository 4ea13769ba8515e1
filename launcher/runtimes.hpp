// The registered runtimes (build/runtimes.json, written by meson) and the deterministic rule
// that picks one for a request.
#pragma once

#include "options.hpp"

#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace unirun::launcher {

struct Runtime {
    std::string tag;      // e.g. "cp313", "cp313t"
    std::string version;  // e.g. "3.13.5"
    bool free_threaded = false;
    std::string python;   // the runtime's own interpreter
    std::string library;  // unirun's runtime library built against it
};

struct Manifest {
    std::string shims_dir;
    std::vector<Runtime> runtimes;
};

struct ManifestError {
    std::string message;
};

// The runtimes.json of the build directory this launcher was built in, or "" when the build did
// not say: a copy of the launcher with no runtimes.json beside it falls back to this one.
std::string build_manifest_path();

// Where an installed launcher's manifest is, relative to the launcher's directory
// (e.g. "../lib/unirun/runtimes.json"; make install puts it there), or "".
std::string install_manifest_path();

// Parses the manifest text; relative library and shims paths are resolved against base_dir.
std::variant<Manifest, ManifestError> parse_manifest(const std::string &text,
                                                      const std::string &base_dir);

struct Selection {
    const Runtime *runtime;
    std::string reason;  // one line, for the decision trace
    std::string code;    // stable reason code: runtime-tag, venv, thread-mode, python-gil-0,
                         // newest-gil, newest-free-threaded
};

struct SelectionError {
    std::string message;
    std::string hint;
};

// venv_runtime: the tag of the registered runtime the active virtual environment was made from.
std::variant<Selection, SelectionError> select_runtime(const std::vector<Runtime> &runtimes,
                                                       const Request &request,
                                                       const std::optional<std::string> &venv_runtime);

// The launcher started from inside a virtual environment (its bin/unirun-python): that venv's
// runtime, as a venv's python always runs the python it was made from. A command-line
// --runtime or --thread-mode that contradicts it is an error; the same from the environment
// (children inherit UNIRUN_RUNTIME) gives way to the venv. venv_runtime is empty when the
// venv's home is no registered runtime's directory.
std::variant<Selection, SelectionError> select_venv_runtime(const std::vector<Runtime> &runtimes,
                                                            const Request &request,
                                                            const std::optional<std::string> &venv_runtime,
                                                            const std::string &venv_root,
                                                            const std::string &venv_home);

// One JSON object for the trace file: the runtime decision.
std::string selection_json(const Selection &selection, const Request &request);

std::string runtimes_table(const std::vector<Runtime> &runtimes, const Runtime *chosen);
std::string runtimes_json(const std::vector<Runtime> &runtimes);

}  // namespace unirun::launcher
